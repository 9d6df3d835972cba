"""Packing variable-length sequences into one token stream, and back.

The packed layout is the flash-attention varlen convention: the tokens of all sequences concatenated
into `values: Tensor[T, *F]`, and `cu_seqlens: IntTensor[N+1]` with `cu_seqlens[i]` the offset of
sequence `i` (so `cu_seqlens[0] == 0` and `cu_seqlens[-1] == T`). `bin_pack` groups sequences into
fixed-capacity rows, as Prepacking (Zhao et al., 2024, arXiv 2404.09529) does for prefill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class PackedBatch:
    """Sequences packed into one stream: `values: Tensor[T, *F]`, `cu_seqlens: IntTensor[N+1]`."""

    values: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    @property
    def lengths(self) -> torch.Tensor:
        """LongTensor[N]: the length of each sequence."""
        return self.cu_seqlens.diff().long()


def cu_seqlens_from_lengths(lengths: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """IntTensor[N+1] cumulative offsets `[0, l0, l0+l1, ...]` from lengths `Tensor[N]` or a list.

    A tensor keeps its device; a list gives a CPU tensor.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    if lengths.numel() and bool((lengths < 0).any()):
        raise ValueError(f"lengths must be non-negative, got {lengths.tolist()}")
    return F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


def pack_sequences(seqs: Sequence[torch.Tensor]) -> PackedBatch:
    """Concatenate `[Tensor[L_i, *F]]` (same trailing shape, dtype, device) into a `PackedBatch`."""
    if not seqs:
        raise ValueError("pack_sequences needs at least one sequence")
    lengths = [s.shape[0] for s in seqs]
    values = torch.cat(list(seqs))
    cu_seqlens = cu_seqlens_from_lengths(lengths).to(values.device)
    return PackedBatch(values, cu_seqlens, max(lengths))


def _valid_positions(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """BoolTensor[N, max_len]: True at the first `lengths[i]` positions of row i."""
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def pack_padded(x: torch.Tensor, lengths: torch.Tensor | Sequence[int]) -> PackedBatch:
    """Drop right padding: `x: Tensor[N, L, *F]` with `lengths: Tensor[N]` -> `PackedBatch` of `Tensor[T, *F]`."""
    lengths = torch.as_tensor(lengths, device=x.device).long()
    if x.ndim < 2 or lengths.shape != x.shape[:1]:
        raise ValueError(f"expected x: [N, L, ...] and lengths: [N], got {tuple(x.shape)} and {tuple(lengths.shape)}")
    if lengths.numel() and not bool(((lengths >= 0) & (lengths <= x.shape[1])).all()):
        raise ValueError(f"lengths must lie in [0, {x.shape[1]}], got {lengths.tolist()}")
    values = x[_valid_positions(lengths, x.shape[1])]
    max_seqlen = int(lengths.max()) if lengths.numel() else 0
    return PackedBatch(values, cu_seqlens_from_lengths(lengths), max_seqlen)


def unpack_to_padded(
    values: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int | None = None, pad_value: float = 0
) -> torch.Tensor:
    """Right-pad a packed stream: `values: Tensor[T, *F]` -> `Tensor[N, max_len, *F]`.

    `max_len` defaults to the longest sequence and may not be shorter than it.
    """
    lengths = cu_seqlens.diff().long()
    longest = int(lengths.max()) if lengths.numel() else 0
    max_len = longest if max_len is None else max_len
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest sequence ({longest})")
    if values.shape[0] != int(cu_seqlens[-1]):
        raise ValueError(f"values has {values.shape[0]} rows but cu_seqlens ends at {int(cu_seqlens[-1])}")
    out = values.new_full((lengths.numel(), max_len, *values.shape[1:]), pad_value)
    out[_valid_positions(lengths, max_len)] = values
    return out


def unpack(values: torch.Tensor, cu_seqlens: torch.Tensor) -> list[torch.Tensor]:
    """Split `values: Tensor[T, *F]` into its sequences `[Tensor[L_i, *F]]` (views, no copy)."""
    return list(values.split(cu_seqlens.diff().tolist()))


def position_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """LongTensor[T]: each token's position inside its own sequence, restarting at 0 per sequence."""
    starts = cu_seqlens[:-1].long()
    lengths = cu_seqlens.diff().long()
    total = int(cu_seqlens[-1])
    tokens = torch.arange(total, device=cu_seqlens.device)
    return tokens - torch.repeat_interleave(starts, lengths, output_size=total)


class _FirstFitTree:
    """Max segment tree over bin free space: finds the leftmost bin with room in O(log n)."""

    def __init__(self, num_bins: int, capacity: int):
        self.size = 1
        while self.size < num_bins:
            self.size *= 2
        self.free = [capacity] * (2 * self.size)

    def leftmost_fitting(self, need: int) -> int:
        node = 1
        while node < self.size:
            node = 2 * node if self.free[2 * node] >= need else 2 * node + 1
        return node - self.size

    def take(self, leaf: int, amount: int) -> None:
        node = leaf + self.size
        self.free[node] -= amount
        while node > 1:
            node //= 2
            self.free[node] = max(self.free[2 * node], self.free[2 * node + 1])


def bin_pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Greedy first-fit-decreasing packing of sequence indices into rows of at most `capacity` tokens.

    Longest sequences go first (ties keep input order); each goes into the first row with room. Rows
    come out in the order they were opened, each listing indices in placement order. First-fit
    decreasing uses at most 11/9 OPT + 6/9 rows (Dosa, 2007).

    Raises ValueError if a length is negative or longer than `capacity`.
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    lengths = [int(n) for n in lengths]
    for index, n in enumerate(lengths):
        if n < 0 or n > capacity:
            raise ValueError(f"sequence {index} has length {n}, outside [0, capacity={capacity}]")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    tree = _FirstFitTree(len(lengths), capacity)
    rows: list[list[int]] = []
    for index in order:
        row = tree.leftmost_fitting(lengths[index])
        if row == len(rows):
            rows.append([])
        rows[row].append(index)
        tree.take(row, lengths[index])
    return rows
