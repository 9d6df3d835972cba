"""Kernel tests run on CPU: Triton kernels in the interpreter, so the variable is set before any import."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from vision_long.kernels import cu_seqlens_from_lengths  # noqa: E402

# Length patterns the backends must agree on: a single token, lengths that are not multiples of a
# 16-wide tile, one long sequence among many short ones, empty sequences, and runs of equal lengths.
LENGTH_CASES = {
    "single-token": [1],
    "ones": [1, 1, 1],
    "not-block-multiples": [5, 17, 3, 40],
    "long-and-short": [150, 1, 2, 3, 7, 1, 9, 4],
    "with-empty": [0, 4, 0, 33, 0],
    "equal-runs": [8, 8, 8, 3, 3, 20],
}


def pytest_generate_tests(metafunc):
    """Run every test that takes `lengths` on each of LENGTH_CASES."""
    if "lengths" in metafunc.fixturenames:
        metafunc.parametrize("lengths", list(LENGTH_CASES.values()), ids=list(LENGTH_CASES))


@pytest.fixture
def packed_qkv():
    """Factory: (lengths, heads, head_dim, dtype) -> (q, k, v, cu_seqlens) with q, k, v: Tensor[T, H, D]."""

    def make(lengths, heads=2, head_dim=24, dtype=torch.float32, requires_grad=False):
        total = sum(lengths)
        q, k, v = (torch.randn(total, heads, head_dim).to(dtype).requires_grad_(requires_grad) for _ in range(3))
        return q, k, v, cu_seqlens_from_lengths(lengths)

    return make
