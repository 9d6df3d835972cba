"""FlashAttention-2 style forward kernel over packed variable-length sequences, in Triton.

One program computes one block of queries of one head of one sequence. It streams that sequence's
keys and values in blocks and keeps a running (max, sum, output) triple in fp32: the online softmax
of FlashAttention-2 (Dao, 2023), written in base 2 so that the exponentials are `exp2`. Key blocks
that lie wholly before the query block (causal) or wholly inside the sequence (non-causal) take a
loop without masks; only the remaining boundary blocks pay for masking.

Tested on CPU with `TRITON_INTERPRET=1` (fp32 and fp16 only: the interpreter gets bf16 wrong); runs
compiled on CUDA. Forward only: `attention.varlen_attention` never routes a pass that needs gradients
here.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2_E = 1.4426950408889634  # exp(x) == exp2(x * LOG2_E)
MIN_BLOCK = 16  # smallest tile edge `tl.dot` accepts


@triton.jit
def _attend_blocks(
    acc, row_sum, row_max, q, k_base, v_base, stride_kt, stride_vt,
    offs_m, offs_n, offs_d, seqlen, lo, hi, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
):
    """Fold key/value blocks starting at lo, lo + BLOCK_N, ... < hi into the running softmax."""
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            col_ok = cols < seqlen
            k_mask = col_ok[None, :] & d_ok[:, None]
            v_mask = col_ok[:, None] & d_ok[None, :]
        else:
            k_mask = d_ok[:, None]
            v_mask = d_ok[None, :]
        k = tl.load(k_base + cols[None, :] * stride_kt + offs_d[:, None], mask=k_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=v_mask, other=0.0)
        scores = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        if MASKED:
            allowed = col_ok[None, :]
            if CAUSAL:
                allowed = allowed & (offs_m[:, None] >= cols[None, :])
            scores = tl.where(allowed, scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        rescale = tl.exp2(row_max - new_max)
        p = tl.exp2(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(p, 1)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        row_max = new_max
    return acc, row_sum, row_max


@triton.jit
def _varlen_fwd_kernel(
    Q, K, V, Out, cu_seqlens,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    # Heaviest query blocks (the last ones, under causal masking) are scheduled first.
    block_m = tl.num_programs(2) - 1 - tl.program_id(2)
    start = tl.load(cu_seqlens + seq).to(tl.int64)
    seqlen = tl.load(cu_seqlens + seq + 1).to(tl.int64) - start
    start_m = block_m * BLOCK_M
    if start_m >= seqlen:
        return

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seqlen
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q + (start + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + start * stride_kt + head * stride_kh
    v_base = V + start * stride_vt + head * stride_vh

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    if CAUSAL:
        unmasked_end = (start_m // BLOCK_N) * BLOCK_N
        masked_end = tl.minimum(start_m + BLOCK_M, seqlen)
    else:
        unmasked_end = (seqlen // BLOCK_N) * BLOCK_N
        masked_end = seqlen
    acc, row_sum, row_max = _attend_blocks(
        acc, row_sum, row_max, q, k_base, v_base, stride_kt, stride_vt,
        offs_m, offs_n, offs_d, seqlen, 0, unmasked_end, qk_scale,
        HEAD_DIM, BLOCK_N, False, CAUSAL, PRECISION)
    acc, row_sum, row_max = _attend_blocks(
        acc, row_sum, row_max, q, k_base, v_base, stride_kt, stride_vt,
        offs_m, offs_n, offs_d, seqlen, unmasked_end, masked_end, qk_scale,
        HEAD_DIM, BLOCK_N, True, CAUSAL, PRECISION)

    out = acc / row_sum[:, None]
    tl.store(Out + (start + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def _launch_config(block_d: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for a padded head dim and input dtype.

    Chosen so that sm_80 / sm_90 builds keep within registers (checked with `ptxas -v`): fp32 dots
    without tensor cores need the small tiles.
    """
    if dtype == torch.float32:
        return 32, 32, 4 if block_d <= 64 else 8, 2
    if block_d <= 64:
        return 64, 64, 4, 3
    if block_d <= 128:
        return 64, 32, 8, 2
    return 32, 32, 8, 1


def triton_varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool,
    scale: float,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Packed attention forward with the Triton kernel.

    Args:
        q, k, v: `Tensor[T, H, D]` on the same device (CUDA, or CPU under `TRITON_INTERPRET=1`),
            fp16 / bf16 / fp32; inputs are assumed validated by `varlen_attention`.
        cu_seqlens: `Tensor[N+1]` int32 cumulative sequence starts, `cu_seqlens[-1] == T`.
        max_seqlen: an upper bound on the longest sequence (sizes the launch grid).
        causal: causal masking inside each sequence.
        scale: softmax scale applied to `q @ k^T`.
        block_m, block_n: tile sizes (powers of two >= 16); chosen from head dim and dtype when None.

    fp32 inputs use TF32 dots only when `torch.backends.cuda.matmul.allow_tf32` is set, as torch does.

    Returns:
        `Tensor[T, H, D]`, contiguous, in the dtype of `q`.
    """
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    total, heads, head_dim = q.shape
    out = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device)
    num_seqs = cu_seqlens.numel() - 1
    if total == 0 or num_seqs == 0 or max_seqlen == 0:
        return out
    block_d = max(MIN_BLOCK, triton.next_power_of_2(head_dim))
    default_m, default_n, num_warps, num_stages = _launch_config(block_d, q.dtype)
    block_m, block_n = block_m or default_m, block_n or default_n
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size < MIN_BLOCK or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= {MIN_BLOCK}, got {size}")
    grid = (num_seqs, heads, math.ceil(max_seqlen / block_m))
    _varlen_fwd_kernel[grid](
        q, k, v, out, cu_seqlens,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        scale * LOG2_E,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
        PRECISION="tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
