"""Correctness and speed of the `varlen_attention` backends on one CUDA GPU.

1. Correctness: every backend available here (triton, xformers, sdpa, flex) against the fp32 `math`
   reference on small packed batches, forward in fp32 / fp16 / bf16, plus input gradients for the
   backends that have a backward.
2. Speed: the forward pass through `varlen_attention` (validation and dispatch included) on packed
   batches shaped like real callers, next to SDPA on the same batch already padded to its longest
   sequence (the attention call alone).
   Milliseconds are medians of CUDA-event timings; TFLOP/s count only the FLOPs the masks keep
   (4·H·D per attended query-key pair; L(L+1)/2 pairs per causal sequence) and are compared with this
   GPU's dense bf16 matmul throughput, measured here.

Backends that cannot run (xformers not installed, say) are skipped with a note. Timings stop when
`--budget-s` is spent (flex compiles once per configuration), so the run stays under 3 minutes.

    python -m benchmarks.gpu_attention [--out gpu_attention.md] [--budget-s 120]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.results import machine
from vision_long.kernels import (
    available_backends,
    choose_backend,
    cu_seqlens_from_lengths,
    pack_padded,
    varlen_attention,
)

BACKENDS = ("triton", "xformers", "sdpa", "flex")
# Max |error| allowed against the fp32 reference; fp32 is loose enough for TF32 matmuls.
TOLERANCE = {torch.float32: 2e-3, torch.float16: 5e-3, torch.bfloat16: 3e-2}
CHECK_LENGTHS = [1, 7, 64, 130, 300, 5, 1000, 128]
FLEX_CHECK_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Config:
    """One timed batch: sequence lengths, heads, head dim, dtype and masking."""

    name: str
    lengths: list[int]
    heads: int
    head_dim: int
    dtype: torch.dtype
    causal: bool


def timed_configs() -> list[Config]:
    """Batches shaped like the callers: text encoders, Dragonfly-style ViT crops, long documents."""
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(5, 249, (256,), generator=gen).tolist()
    documents = torch.randint(256, 4097, (16,), generator=gen).tolist()
    crops = [577] * 41  # Dragonfly v2: 41 crops of CLIP ViT-L/14-336, 577 tokens each
    return [
        Config("text 256 x [5, 248], causal", text, 12, 64, torch.float16, True),
        Config("text 256 x [5, 248], causal", text, 12, 64, torch.bfloat16, True),
        Config("ViT crops 41 x 577, bidirectional", crops, 16, 64, torch.bfloat16, False),
        Config("documents 16 x [256, 4096], causal", documents, 16, 128, torch.bfloat16, True),
    ]


def attention_flops(lengths: list[int], heads: int, head_dim: int, causal: bool) -> int:
    """FLOPs of the attended pairs only: QK^T and PV each cost 2·D per pair and head."""
    pairs = sum(n * (n + 1) // 2 if causal else n * n for n in lengths)
    return 4 * heads * head_dim * pairs


def time_ms(fn: Callable[[], object], device: str, warmup: int = 3, reps: int = 20) -> float:
    """Median time of `fn()` in milliseconds (CUDA events on CUDA), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    return sorted(times)[len(times) // 2]


def matmul_tflops(device: str, size: int = 8192) -> float:
    """Dense bf16 matmul throughput in TFLOP/s."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * size**3 / time_ms(lambda: a @ b, device, warmup=5) / 1e9


def packed_batch(lengths: list[int], heads: int, head_dim: int, dtype: torch.dtype, device: str):
    """(q, k, v, cu_seqlens) with q, k, v: Tensor[T, H, D] drawn from N(0, 1)."""
    q, k, v = (torch.randn(sum(lengths), heads, head_dim, device=device, dtype=dtype) for _ in range(3))
    return q, k, v, cu_seqlens_from_lengths(lengths).to(device)


def has_backward(backend: str, device: str, dtype: torch.dtype) -> bool:
    """Whether varlen_attention runs `backend` itself when gradients are needed (no fallback)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return choose_backend(backend, device, dtype, needs_grad=True) == backend
    except ValueError:
        return False


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def check_correctness(
    device: str, dtypes: tuple[torch.dtype, ...] = tuple(TOLERANCE), lengths: list[int] = CHECK_LENGTHS
) -> tuple[list[list[object]], list[str], bool]:
    """Each backend vs the math reference on the same inputs in fp32: (table rows, notes, all passed).

    Backends with a backward are run with gradients and checked on both outputs and input gradients.
    flex is checked in bf16 only: each dtype and mask compiles anew.
    """
    rows, notes, passed = [], [], True
    for dtype in dtypes:
        present = available_backends(device, dtype)
        notes += [f"{name} unavailable for {dtype}" for name in BACKENDS if name not in present]
        for causal in (True, False):
            *qkv, cu = packed_batch(lengths, 4, 64, dtype, device)
            upstream = torch.randn_like(qkv[0])
            reference = [t.detach().float().requires_grad_() for t in qkv]
            ref_out = varlen_attention(*reference, cu, max(lengths), causal, backend="math")
            ref_grads = torch.autograd.grad(ref_out, reference, upstream.float())
            for name in (b for b in BACKENDS if b in present and (b != "flex" or dtype == FLEX_CHECK_DTYPE)):
                with_grad = has_backward(name, device, dtype)
                inputs = [t.detach().requires_grad_(with_grad) for t in qkv]
                with torch.set_grad_enabled(with_grad):
                    out = varlen_attention(*inputs, cu, max(lengths), causal, backend=name)
                errors = [(out.float() - ref_out).abs().max().item()]
                if with_grad:
                    grads = torch.autograd.grad(out, inputs, upstream)
                    errors.append(max((g.float() - r).abs().max().item()
                                      for g, r in zip(grads, ref_grads, strict=True)))
                ok = errors[0] <= TOLERANCE[dtype] and all(e <= 4 * TOLERANCE[dtype] for e in errors[1:])
                passed &= ok
                rows.append([name, str(dtype).removeprefix("torch."), causal, f"{errors[0]:.1e}",
                             f"{errors[1]:.1e}" if with_grad else "n/a (no backward)", "ok" if ok else "FAIL"])
    return rows, sorted(set(notes)), passed


def padded_copy(packed: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """`Tensor[T, H, D]` -> `Tensor[N, max(lengths), H, D]`, zero-padded on the right."""
    out = packed.new_zeros(len(lengths), max(lengths), *packed.shape[1:])
    positions = torch.arange(max(lengths), device=packed.device)
    out[positions < torch.tensor(lengths, device=packed.device)[:, None]] = packed
    return out


@torch.no_grad()
def time_config(config: Config, peak: float, deadline: float, device: str) -> tuple[list[list[object]], list[str]]:
    """Time every available backend, and SDPA on the padded batch, on one config."""
    rows, notes = [], []
    q, k, v, cu = packed_batch(config.lengths, config.heads, config.head_dim, config.dtype, device)
    lengths = torch.tensor(config.lengths, device=device)
    max_len = max(config.lengths)
    padded = [padded_copy(t, config.lengths).transpose(1, 2) for t in (q, k, v)]
    key_mask = None if config.causal else (torch.arange(max_len, device=device) < lengths[:, None])[:, None, None]

    baseline = "sdpa, padded to longest"
    runs = {baseline: functools.partial(F.scaled_dot_product_attention, *padded, attn_mask=key_mask,
                                        is_causal=config.causal)}
    present = available_backends(device, config.dtype)
    for name in (b for b in BACKENDS if b in present):
        runs[name] = functools.partial(varlen_attention, q, k, v, cu, max_len, config.causal, backend=name)
    reference = varlen_attention(q, k, v, cu, max_len, config.causal, backend="sdpa")
    flops = attention_flops(config.lengths, config.heads, config.head_dim, config.causal)
    dtype = str(config.dtype).removeprefix("torch.")
    for label, run in runs.items():
        if time.monotonic() > deadline:
            notes.append(f"{config.name} ({dtype}) / {label}: skipped, time budget spent")
            continue
        started = time.monotonic()
        out = run()  # the first flex call compiles
        if label == baseline:
            out = pack_padded(out.transpose(1, 2), lengths).values
        diff = (out.float() - reference.float()).abs().max().item()
        if label == "flex":
            notes.append(f"{config.name} ({dtype}) / flex: first call incl. compile {time.monotonic() - started:.1f} s")
        ms = time_ms(run, device)
        tflops = flops / ms / 1e9
        rows.append([config.name, dtype, sum(config.lengths), label, f"{ms:.3f}", f"{tflops:.1f}",
                     f"{100 * tflops / peak:.0f}%", f"{diff:.1e}"])
    return rows, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the tables as markdown to this path")
    parser.add_argument("--budget-s", type=float, default=120.0, help="stop timing after this many seconds")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_attention: no CUDA device is visible; this benchmark needs a GPU.")
    if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off", "no"):
        sys.exit("gpu_attention: unset TRITON_INTERPRET; the benchmark times compiled Triton kernels.")
    started = time.monotonic()
    torch.manual_seed(0)

    check_rows, check_notes, passed = check_correctness("cuda")
    peak = matmul_tflops("cuda")
    time_rows, time_notes = [], []
    for config in timed_configs():
        rows, notes = time_config(config, peak, started + args.budget_s, "cuda")
        time_rows += rows
        time_notes += notes
        torch.cuda.empty_cache()

    report = "\n\n".join([
        f"## varlen attention on {machine()}",
        f"Dense bf16 matmul (8192^3): **{peak:.0f} TFLOP/s** measured.",
        "### Correctness vs fp32 math reference (max |error|)",
        markdown_table(["backend", "dtype", "causal", "forward", "input grads", "result"], check_rows),
        "### Forward time (TFLOP/s count attended pairs only; % of dense bf16 matmul)",
        markdown_table(["batch", "dtype", "tokens", "backend", "ms", "TFLOP/s", "% matmul", "max |Δ| vs sdpa"],
                       time_rows),
        "\n".join(f"- {note}" for note in check_notes + time_notes) or "- no notes",
        f"Total wall time {time.monotonic() - started:.0f} s.",
    ])
    print(report)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(report + "\n")
    if not passed:
        sys.exit("gpu_attention: a correctness check failed (see the table)")


if __name__ == "__main__":
    main()
