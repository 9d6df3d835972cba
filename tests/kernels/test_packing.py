"""Packing: pack / unpack round trips, restarted position ids, first-fit-decreasing bin packing."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision_long.kernels import (
    bin_pack,
    cu_seqlens_from_lengths,
    pack_padded,
    pack_sequences,
    position_ids,
    unpack,
    unpack_to_padded,
)


def test_cu_seqlens_from_lengths():
    cu = cu_seqlens_from_lengths([3, 0, 6, 2])
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, 3, 3, 9, 11]
    assert cu_seqlens_from_lengths(torch.tensor([], dtype=torch.long)).tolist() == [0]


def test_pack_sequences_round_trip():
    seqs = [torch.randn(n, 2, 3) for n in (4, 1, 0, 7)]
    packed = pack_sequences(seqs)
    assert packed.values.shape == (12, 2, 3)
    assert packed.cu_seqlens.tolist() == [0, 4, 5, 5, 12]
    assert packed.max_seqlen == 7
    assert packed.lengths.tolist() == [4, 1, 0, 7]
    for original, back in zip(seqs, unpack(packed.values, packed.cu_seqlens), strict=True):
        assert torch.equal(original, back)


def test_pack_padded_round_trip():
    lengths = torch.tensor([3, 5, 1])
    x = torch.randn(3, 5, 4)
    packed = pack_padded(x, lengths)
    assert packed.values.shape == (9, 4)
    assert packed.max_seqlen == 5
    assert torch.equal(packed.values[3:8], x[1])
    padded = unpack_to_padded(packed.values, packed.cu_seqlens, pad_value=-1.0)
    mask = torch.arange(5) < lengths[:, None]
    assert torch.equal(padded[mask], x[mask])
    assert bool((padded[~mask] == -1).all())
    assert unpack_to_padded(packed.values, packed.cu_seqlens, max_len=8).shape == (3, 8, 4)


def test_position_ids_restart_per_sequence():
    cu = cu_seqlens_from_lengths([3, 1, 0, 4])
    assert position_ids(cu).tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=20))
def test_pack_unpack_property(lengths):
    seqs = [torch.randn(n, 3) for n in lengths]
    packed = pack_sequences(seqs)
    assert position_ids(packed.cu_seqlens).tolist() == [i for n in lengths for i in range(n)]
    padded = unpack_to_padded(packed.values, packed.cu_seqlens)
    assert padded.shape == (len(lengths), max(lengths), 3)
    again = pack_padded(padded, packed.lengths)
    assert torch.equal(again.values, packed.values)
    assert torch.equal(again.cu_seqlens, packed.cu_seqlens)


def test_bin_pack_first_fit_decreasing():
    # Sorted: 7 (i1), 5 (i3), 4 (i0), 3 (i4), 2 (i2), 1 (i5); capacity 8.
    assert bin_pack([4, 7, 2, 5, 3, 1], 8) == [[1, 5], [3, 4], [0, 2]]
    assert bin_pack([], 8) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(0, cap), max_size=60))))
def test_bin_pack_invariants(case):
    capacity, lengths = case
    rows = bin_pack(lengths, capacity)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in row) for row in rows]
    assert all(load <= capacity for load in loads)
    assert all(row for row in rows)
    # First fit: a row was opened only because its first item fit in no earlier row.
    for later, row in enumerate(rows):
        for earlier in range(later):
            assert loads[earlier] + lengths[row[0]] > capacity


def test_bin_pack_errors():
    with pytest.raises(ValueError, match="sequence 2 has length 9"):
        bin_pack([1, 2, 9], capacity=8)
    with pytest.raises(ValueError, match="capacity must be positive"):
        bin_pack([1], capacity=0)
    with pytest.raises(ValueError, match="sequence 0 has length -1"):
        bin_pack([-1], capacity=4)


def test_packing_errors():
    with pytest.raises(ValueError, match="non-negative"):
        cu_seqlens_from_lengths([2, -1])
    with pytest.raises(ValueError, match="lie in"):
        pack_padded(torch.zeros(2, 3), torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="lengths"):
        pack_padded(torch.zeros(2, 3), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="shorter than the longest"):
        unpack_to_padded(torch.zeros(5, 2), cu_seqlens_from_lengths([2, 3]), max_len=2)
    with pytest.raises(ValueError, match="rows"):
        unpack_to_padded(torch.zeros(4, 2), cu_seqlens_from_lengths([2, 3]))
    with pytest.raises(ValueError, match="at least one"):
        pack_sequences([])
