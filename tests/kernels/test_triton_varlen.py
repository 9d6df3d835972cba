"""The Triton varlen kernel, run by the interpreter on CPU, against the dense reference."""

import pytest
import torch

from vision_long.kernels import attention, varlen_attention

pytestmark = pytest.mark.skipif(
    "triton" not in attention.available_backends("cpu", torch.float32),
    reason="needs triton and TRITON_INTERPRET=1 set before the kernel module is imported",
)

TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
def test_triton_matches_math(packed_qkv, lengths, causal, dtype):
    from vision_long.kernels.triton_varlen import triton_varlen_attention

    q, k, v, cu = packed_qkv(lengths, dtype=dtype)
    expected = varlen_attention(q, k, v, cu, max(lengths), causal=causal, backend="math")
    scale = q.shape[-1] ** -0.5
    # 16-wide tiles put several query and key blocks in one sequence; the defaults are 64-wide.
    for block_m, block_n in [(16, 16), (32, 16), (16, 32), (None, None)]:
        out = triton_varlen_attention(q, k, v, cu, max(lengths), causal, scale, block_m, block_n)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected.float(), atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("head_dim", [16, 40])
def test_triton_backend_through_dispatcher(packed_qkv, head_dim):
    lengths = [9, 1, 30]
    qkv = torch.randn(sum(lengths), 3, 2, head_dim)
    q, k, v = qkv.unbind(1)  # strided views, as a fused projection gives
    _, _, _, cu = packed_qkv(lengths)
    out = varlen_attention(q, k, v, cu, 64, scale=0.2, backend="triton")  # max_seqlen is an upper bound
    expected = varlen_attention(q, k, v, cu, 30, scale=0.2, backend="math")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_triton_with_gradients_falls_back_to_sdpa(packed_qkv):
    q, k, v, cu = packed_qkv([4, 7], requires_grad=True)
    with pytest.warns(UserWarning, match="no backward; running sdpa"):
        out = varlen_attention(q, k, v, cu, 7, backend="triton")
    out.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_bad_block_size_raises(packed_qkv):
    from vision_long.kernels.triton_varlen import triton_varlen_attention

    q, k, v, cu = packed_qkv([4])
    with pytest.raises(ValueError, match="block_m must be a power of two >= 16"):
        triton_varlen_attention(q, k, v, cu, 4, True, 1.0, block_m=24)
