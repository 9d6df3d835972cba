"""`varlen_attention`: attention over packed variable-length sequences, dispatched to a backend.

Inputs follow flash-attention's varlen convention: `q, k, v: Tensor[T, H, D]` hold the tokens of N
sequences back to back, `cu_seqlens: IntTensor[N+1]` holds where each starts, and every token attends
only to tokens of its own sequence (causally when `causal=True`). Backends:

- `"triton"`: our FlashAttention-2 style kernel (`triton_varlen.py`); forward only.
- `"xformers"`: `xformers.ops.memory_efficient_attention` with a block-diagonal bias; CUDA only.
- `"sdpa"`: `torch.nn.functional.scaled_dot_product_attention` without padding waste; any device.
- `"flex"`: FlexAttention with a document mask; compiled on CUDA, eager (unfused) and forward-only
  on CPU.
- `"math"`: a dense block-diagonal reference in (at least) fp32; O(T^2) memory, for tests.

`"auto"` picks xformers on CUDA for fp16/bf16 when installed, else triton on CUDA when no gradient
is needed, else sdpa. A pass needs gradients when grad mode is on and any input requires grad; it is
never sent to a backend without a backward (see `choose_backend`).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

BACKENDS = ("auto", "triton", "xformers", "sdpa", "flex", "math")
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Off-CPU sdpa pads sequences within length buckets [2^(j/2), 2^((j+1)/2)): the longest in a bucket
# is < sqrt(2) x the shortest, so padding at most doubles a bucket's attention FLOPs ...
_BUCKETS_PER_OCTAVE = 2
# ... and lengths under this count as this long: GPU kernels work in tiles of 64-128 rows anyway.
_BUCKET_FLOOR = 64
_FLEX_BLOCK = 128  # FlexAttention's default sparse block size


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _triton_interpreter_on() -> bool:
    """True when Triton kernels run in the CPU interpreter (`TRITON_INTERPRET`, set before import)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def available_backends(device: torch.device | str, dtype: torch.dtype) -> list[str]:
    """Backends that can run a forward pass on `device` in `dtype` here, in `BACKENDS` order.

    triton needs CUDA, or the Triton interpreter on CPU (fp16/fp32 only, as bf16 is wrong there);
    xformers needs CUDA and the package; flex needs `torch.nn.attention.flex_attention`.
    """
    device = torch.device(device)
    names = []
    triton_device = device.type == "cuda" or (
        device.type == "cpu" and _triton_interpreter_on() and dtype != torch.bfloat16
    )
    if triton_device and dtype in _FLOAT_DTYPES and _module_available("triton"):
        names.append("triton")
    if device.type == "cuda" and dtype in _FLOAT_DTYPES and _module_available("xformers"):
        names.append("xformers")
    names.append("sdpa")
    if device.type in ("cpu", "cuda") and _module_available("torch.nn.attention.flex_attention"):
        names.append("flex")
    names.append("math")
    return names


def _differentiable(backend: str, device: torch.device) -> bool:
    return backend in ("xformers", "sdpa", "math") or (backend == "flex" and device.type == "cuda")


def choose_backend(
    backend: str, device: torch.device | str, dtype: torch.dtype, needs_grad: bool
) -> str:
    """The backend `varlen_attention` runs for a request; raises if it cannot honour it.

    `"auto"`: xformers (CUDA, fp16/bf16, installed), else triton (CUDA, no gradient needed), else
    sdpa. An explicit `"triton"` when gradients are needed falls back to sdpa with a warning, since
    the kernel has no backward. An explicit `"flex"` on CPU with gradients raises, since PyTorch has
    no FlexAttention backward on CPU. Unavailable or unknown names raise ValueError.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    device = torch.device(device)
    available = available_backends(device, dtype)
    if backend == "auto":
        if device.type == "cuda" and dtype in _HALF_DTYPES and "xformers" in available:
            return "xformers"
        if device.type == "cuda" and "triton" in available and not needs_grad:
            return "triton"
        return "sdpa"
    if backend not in available:
        raise ValueError(
            f"attention backend {backend!r} cannot run on device={device.type}, dtype={dtype}; "
            f"available here: {', '.join(available)}"
        )
    if needs_grad and not _differentiable(backend, device):
        if backend == "triton":
            warnings.warn("the triton varlen kernel has no backward; running sdpa instead", stacklevel=3)
            return "sdpa"
        raise ValueError(f"backend {backend!r} has no backward on {device.type}; use 'sdpa' or 'math'")
    return backend


def _check_inputs(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int
) -> list[int]:
    """Validate the packed inputs and return the sequence lengths (read back to the host once)."""
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"q, k, v must all be [total_tokens, heads, head_dim] of one shape; "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must share dtype and device; got {[(t.dtype, str(t.device)) for t in (q, k, v)]}"
        )
    if cu_seqlens.ndim != 1 or cu_seqlens.dtype != torch.int32 or cu_seqlens.numel() < 1:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32 tensor [num_seqs + 1]; got dtype {cu_seqlens.dtype}, "
            f"shape {tuple(cu_seqlens.shape)}"
        )
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but q is on {q.device}")
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {offsets[0]}")
    if offsets[-1] != q.shape[0]:
        raise ValueError(f"cu_seqlens ends at {offsets[-1]} but q has {q.shape[0]} tokens")
    lengths = [b - a for a, b in itertools.pairwise(offsets)]
    if any(n < 0 for n in lengths):
        raise ValueError("cu_seqlens must be non-decreasing")
    if lengths and max(lengths) > max_seqlen:
        raise ValueError(f"max_seqlen={max_seqlen} is less than the longest sequence ({max(lengths)})")
    return lengths


def varlen_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int,
    causal: bool = True,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """Attention inside each packed sequence: `Tensor[T, H, D]` x3 -> `Tensor[T, H, D]`.

    Args:
        q, k, v: `Tensor[T, H, D]`, the N sequences' tokens back to back (same shape, dtype, device).
        cu_seqlens: `IntTensor[N+1]` (int32, on q's device), `[0, L_0, L_0+L_1, ..., T]`.
        max_seqlen: the longest sequence length (an upper bound is fine).
        causal: mask future tokens inside each sequence.
        scale: softmax scale; `D ** -0.5` when None.
        backend: one of `BACKENDS`; see `choose_backend` for how "auto" and fallbacks resolve.

    Returns:
        `Tensor[T, H, D]` in q's dtype.

    Validation reads `cu_seqlens` back to the host, one device sync per call.
    """
    lengths = _check_inputs(q, k, v, cu_seqlens, int(max_seqlen))
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    name = choose_backend(backend, q.device, q.dtype, needs_grad)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if q.shape[0] == 0:
        return torch.empty_like(q)
    return _RUNNERS[name](q, k, v, cu_seqlens, lengths, causal, scale)


def _run_triton(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    from vision_long.kernels.triton_varlen import triton_varlen_attention

    return triton_varlen_attention(q, k, v, cu_seqlens, max(lengths), causal, scale)


def _run_xformers(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    from xformers.ops import fmha

    seqlens = [n for n in lengths if n > 0]
    bias = fmha.attn_bias.BlockDiagonalMask.from_seqlens(seqlens, device=q.device)
    if causal:
        bias = bias.make_causal()
    out = fmha.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, scale=scale)
    return out[0]


def _sdpa_grouped(
    q: Tensor, k: Tensor, v: Tensor, groups: list[tuple[int, int]], causal: bool, scale: float,
    valid: Tensor | None = None,
) -> Tensor:
    """SDPA over `Tensor[S, H, D]` laid out as consecutive groups of `rows` sequences of `length` slots.

    `groups` lists `(rows, length)`; each group is viewed as `[rows, length, H, D]` and attended in one
    batched call. `valid: BoolTensor[S]`, if given, masks keys at padding slots.
    """
    outputs, offset = [], 0
    for rows, length in groups:
        size = rows * length
        q_g, k_g, v_g = (t[offset:offset + size].unflatten(0, (rows, length)).transpose(1, 2) for t in (q, k, v))
        mask = None if valid is None else valid[offset:offset + size].view(rows, 1, 1, length)
        out = F.scaled_dot_product_attention(q_g, k_g, v_g, attn_mask=mask, is_causal=causal, scale=scale)
        outputs.append(out.transpose(1, 2).flatten(0, 1))
        offset += size
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _bucket_plan(lengths: list[int]) -> tuple[Tensor, Tensor, list[tuple[int, int]], Tensor]:
    """Bucket-major padded layout for off-CPU sdpa: `(source[S], slot[T], groups, valid[S])`.

    Sequences are grouped by `floor(BUCKETS_PER_OCTAVE * log2(max(length, FLOOR)))`, longest buckets
    first, and each is right-padded to its bucket's longest. Padded slot s reads token `source[s]` (padding repeats
    the sequence's last token), `valid[s]` marks real tokens, token t's output sits at `slot[t]`, and
    `groups` lists `(rows, padded_length)` per bucket.
    """
    lens = torch.tensor(lengths)
    starts = lens.cumsum(0) - lens
    seqs = lens.nonzero().squeeze(1)
    key = (lens[seqs].clamp(min=_BUCKET_FLOOR).double().log2() * _BUCKETS_PER_OCTAVE).floor()
    order = torch.argsort(key, descending=True, stable=True)
    seqs = seqs[order]
    _, rows = torch.unique_consecutive(key[order], return_counts=True)
    bucket = torch.repeat_interleave(rows)
    seq_len = lens[seqs]
    padded = torch.zeros(len(rows), dtype=torch.long).scatter_reduce(0, bucket, seq_len, "amax")
    slot_len = padded[bucket]
    slot_seq = torch.repeat_interleave(slot_len)
    position = torch.arange(int(slot_len.sum())) - (slot_len.cumsum(0) - slot_len)[slot_seq]
    source = starts[seqs][slot_seq] + torch.minimum(position, seq_len[slot_seq] - 1)
    valid = position < seq_len[slot_seq]
    real_slots = valid.nonzero().squeeze(1)
    slot = torch.empty(sum(lengths), dtype=torch.long)
    slot[source[real_slots]] = real_slots
    return source, slot, list(zip(rows.tolist(), padded.tolist(), strict=True)), valid


def _sdpa_in_place(
    q: Tensor, k: Tensor, v: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    """CPU sdpa: one call per run of consecutive equal-length sequences, on views of the packed tensors.

    On CPU, copying tokens costs more than an extra call, so nothing is gathered or padded; only
    the outputs are concatenated.
    """
    groups = [(len(list(run)), length) for length, run in itertools.groupby(lengths) if length]
    return _sdpa_grouped(q, k, v, groups, causal, scale)


def _sdpa_padded_buckets(
    q: Tensor, k: Tensor, v: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    """Accelerator sdpa: gather into padded length buckets (see `_bucket_plan`), one call per bucket."""
    source, slot, groups, valid = _bucket_plan(lengths)
    source, slot, valid = (t.to(q.device) for t in (source, slot, valid))
    padded = [t.index_select(0, source) for t in (q, k, v)]
    out = _sdpa_grouped(*padded, groups, causal, scale, valid=None if causal else valid)
    return out.index_select(0, slot)


def _run_sdpa(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    sdpa = _sdpa_in_place if q.device.type == "cpu" else _sdpa_padded_buckets
    return sdpa(q, k, v, lengths, causal, scale)


def _document_ids(cu_seqlens: Tensor, total: int) -> Tensor:
    """LongTensor[T]: the index of the sequence each token belongs to."""
    num_seqs = cu_seqlens.numel() - 1
    return torch.repeat_interleave(
        torch.arange(num_seqs, device=cu_seqlens.device), cu_seqlens.diff(), output_size=total
    )


def _document_block_mask(cu_seqlens: Tensor, total: int, causal: bool) -> BlockMask:
    """FlexAttention `BlockMask` for packed documents, built at block level from `cu_seqlens`.

    Equal to `create_block_mask(same_document, None, None, T, T)` but without materializing a
    `[T, T]` mask: the q block of tokens [iS, (i+1)S) needs the key blocks overlapping
    [start of its first document, end of its last document) (or up to its own last token, causal);
    a block pair is full when both blocks lie inside one document (and j < i, causal).
    """
    from torch.nn.attention.flex_attention import BlockMask

    size = _FLEX_BLOCK
    starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    document = _document_ids(cu_seqlens, total)
    blocks = torch.arange(-(-total // size), device=cu_seqlens.device)
    first = document[blocks * size]
    last_token = (blocks * size + size).clamp(max=total) - 1
    key_end = last_token + 1 if causal else ends[document[last_token]]
    row, col = blocks[:, None], blocks[None, :]
    touched = (col >= (starts[first] // size)[:, None]) & (col * size < key_end[:, None])
    doc_start, doc_end = starts[first][:, None], ends[first][:, None]
    full = ((row + 1) * size <= doc_end) & (col * size >= doc_start) & ((col + 1) * size <= doc_end)
    if causal:
        full &= col < row

    def same_document(batch, head, q_idx, kv_idx):
        allowed = document[q_idx] == document[kv_idx]
        return allowed & (q_idx >= kv_idx) if causal else allowed

    def ordered(blocks_mask):  # -> (num_blocks[1, 1, Qb], indices[1, 1, Qb, Kb]), chosen blocks first
        indices = torch.argsort(~blocks_mask, dim=1, stable=True)
        return blocks_mask.sum(1)[None, None].int(), indices[None, None].int()

    return BlockMask.from_kv_blocks(
        *ordered(touched & ~full), *ordered(full), BLOCK_SIZE=size, mask_mod=same_document,
        seq_lengths=(total, total),
    )


@functools.cache
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _run_flex(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _document_block_mask(cu_seqlens, q.shape[0], causal)
    attend = _compiled_flex_attention() if q.device.type == "cuda" else flex_attention
    out = attend(*(t.transpose(0, 1)[None] for t in (q, k, v)), block_mask=block_mask, scale=scale)
    return out[0].transpose(0, 1)


def _run_math(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, lengths: list[int], causal: bool, scale: float
) -> Tensor:
    document = _document_ids(cu_seqlens, q.shape[0])
    allowed = document[:, None] == document[None, :]
    if causal:
        allowed = allowed.tril()
    work = torch.promote_types(q.dtype, torch.float32)
    scores = torch.einsum("qhd,khd->hqk", q.to(work), k.to(work)) * scale
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", probs, v.to(work)).to(q.dtype)


_RUNNERS: dict[str, Callable[..., Tensor]] = {
    "triton": _run_triton,
    "xformers": _run_xformers,
    "sdpa": _run_sdpa,
    "flex": _run_flex,
    "math": _run_math,
}
