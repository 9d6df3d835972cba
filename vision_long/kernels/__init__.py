"""Packed variable-length attention and sequence packing: model-agnostic, no I/O.

Models pack their sequences (`pack_sequences`, `pack_padded`), call `varlen_attention` on
`Tensor[T, H, D]` with `cu_seqlens`, and unpack; they never branch on the backend themselves.
"""

from vision_long.kernels.attention import BACKENDS, available_backends, choose_backend, varlen_attention
from vision_long.kernels.packing import (
    PackedBatch,
    bin_pack,
    cu_seqlens_from_lengths,
    pack_padded,
    pack_sequences,
    position_ids,
    unpack,
    unpack_to_padded,
)

__all__ = [
    "BACKENDS",
    "PackedBatch",
    "available_backends",
    "bin_pack",
    "choose_backend",
    "cu_seqlens_from_lengths",
    "pack_padded",
    "pack_sequences",
    "position_ids",
    "unpack",
    "unpack_to_padded",
    "varlen_attention",
]
