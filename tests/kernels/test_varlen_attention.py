"""varlen_attention backends against the dense block-diagonal reference ("math"), gradients, errors."""

import pytest
import torch

from vision_long.kernels import attention, cu_seqlens_from_lengths, varlen_attention

TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2}


def _dense_reference(q, k, v, lengths, causal):
    """Attention sequence by sequence, written independently of the backends."""
    outputs, start = [], 0
    for n in lengths:
        qs, ks, vs = (t[start:start + n].float().transpose(0, 1) for t in (q, k, v))
        scores = qs @ ks.transpose(1, 2) / q.shape[-1] ** 0.5
        if causal:
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        outputs.append((scores.softmax(-1) @ vs).transpose(0, 1))
        start += n
    return torch.cat(outputs)


@pytest.mark.parametrize("causal", [True, False])
def test_math_backend_matches_per_sequence_attention(packed_qkv, lengths, causal):
    q, k, v, cu = packed_qkv(lengths)
    out = varlen_attention(q, k, v, cu, max(lengths), causal=causal, backend="math")
    torch.testing.assert_close(out, _dense_reference(q, k, v, lengths, causal), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("sdpa", [attention._sdpa_in_place, attention._sdpa_padded_buckets])
def test_sdpa_paths_match_math(packed_qkv, lengths, causal, dtype, sdpa):
    q, k, v, cu = packed_qkv(lengths, dtype=dtype)
    expected = varlen_attention(q, k, v, cu, max(lengths), causal=causal, backend="math")
    out = sdpa(q, k, v, lengths, causal, q.shape[-1] ** -0.5)
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), expected.float(), atol=TOLERANCE[dtype], rtol=0)


def test_sdpa_backend_on_strided_qkv_and_custom_scale(packed_qkv):
    lengths = [6, 6, 2, 11]
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    q, k, v = qkv.unbind(1)  # token stride 3 * H * D, as a fused projection gives
    cu = cu_seqlens_from_lengths(lengths)
    out = varlen_attention(q, k, v, cu, 11, scale=0.3, backend="sdpa")
    expected = varlen_attention(q, k, v, cu, 11, scale=0.3, backend="math")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_bucket_plan_pads_within_buckets():
    lengths = [70, 200, 0, 3, 100, 65]
    source, slot, groups, valid = attention._bucket_plan(lengths)
    # 200 alone, 100 alone, and 70, 65, 3 together (lengths under the 64 floor count as 64).
    assert groups == [(1, 200), (1, 100), (3, 70)]
    assert valid.sum() == sum(lengths) and source.shape == valid.shape == (200 + 100 + 3 * 70,)
    assert torch.equal(source[slot], torch.arange(sum(lengths)))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("causal", [True, False])
def test_flex_matches_math_on_cpu_forward(packed_qkv, causal):
    lengths = [5, 17, 3, 40, 1]
    q, k, v, cu = packed_qkv(lengths)
    out = varlen_attention(q, k, v, cu, 40, causal=causal, backend="flex")
    expected = varlen_attention(q, k, v, cu, 40, causal=causal, backend="math")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("doc_lengths", [[5, 17, 3, 40, 1], [300, 0, 20, 128, 256, 1], [128, 128], [129, 383, 77, 500]])
def test_document_block_mask_matches_create_block_mask(doc_lengths, causal):
    from torch.nn.attention.flex_attention import create_block_mask

    total = sum(doc_lengths)
    cu = cu_seqlens_from_lengths(doc_lengths)
    document = torch.repeat_interleave(torch.arange(len(doc_lengths)), torch.tensor(doc_lengths))

    def same_document(batch, head, q_idx, kv_idx):
        allowed = document[q_idx] == document[kv_idx]
        return allowed & (q_idx >= kv_idx) if causal else allowed

    expected = create_block_mask(same_document, None, None, total, total, device="cpu")
    mask = attention._document_block_mask(cu, total, causal)
    assert torch.equal(mask.to_dense(), expected.to_dense())
    for name in ("kv_num_blocks", "full_kv_num_blocks", "q_num_blocks", "full_q_num_blocks"):
        assert torch.equal(getattr(mask, name), getattr(expected, name)), name


def test_flex_with_gradients_on_cpu_raises(packed_qkv):
    q, k, v, cu = packed_qkv([3, 4], requires_grad=True)
    with pytest.raises(ValueError, match="no backward on cpu"):
        varlen_attention(q, k, v, cu, 4, backend="flex")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("path", ["in-place", "padded-buckets"])
def test_sdpa_gradients_match_math(packed_qkv, monkeypatch, causal, path):
    lengths = [5, 1, 12, 12, 0, 30]
    q, k, v, cu = packed_qkv(lengths, requires_grad=True)
    upstream = torch.randn(q.shape)

    def grads(backend):
        for t in (q, k, v):
            t.grad = None
        (varlen_attention(q, k, v, cu, 30, causal=causal, backend=backend) * upstream).sum().backward()
        return [t.grad for t in (q, k, v)]

    expected = grads("math")
    if path == "padded-buckets":  # the path sdpa takes off CPU
        monkeypatch.setattr(attention, "_sdpa_in_place", attention._sdpa_padded_buckets)
    for g, e in zip(grads("sdpa"), expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_empty_batch_returns_empty(packed_qkv):
    q, k, v, _ = packed_qkv([0])
    cu = torch.zeros(1, dtype=torch.int32)
    assert varlen_attention(q, k, v, cu, 0).shape == (0, 2, 24)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, k, v, cu: (q[:, 0], k[:, 0], v[:, 0], cu), r"\[total_tokens, heads, head_dim\]"),
        (lambda q, k, v, cu: (q, k[:-1], v, cu), "one shape"),
        (lambda q, k, v, cu: (q, k.double(), v, cu), "share dtype and device"),
        (lambda q, k, v, cu: (q, k, v, cu.long()), "int32"),
        (lambda q, k, v, cu: (q, k, v, cu[None]), "1-D"),
        (lambda q, k, v, cu: (q, k, v, cu + 1), "must start at 0"),
        (lambda q, k, v, cu: (q, k, v, cu[:-1]), "ends at 5 but q has 9 tokens"),
        (lambda q, k, v, cu: (q, k, v, torch.tensor([0, 6, 5, 9], dtype=torch.int32)), "non-decreasing"),
        (lambda q, k, v, cu: (q, k, v, cu.to("meta")), "cu_seqlens is on meta"),
    ],
)
def test_input_errors(packed_qkv, change, message):
    q, k, v, cu = change(*packed_qkv([2, 3, 4]))
    with pytest.raises(ValueError, match=message):
        varlen_attention(q, k, v, cu, 4)


def test_max_seqlen_too_small_and_unknown_backend(packed_qkv):
    q, k, v, cu = packed_qkv([2, 3, 4])
    with pytest.raises(ValueError, match="less than the longest sequence"):
        varlen_attention(q, k, v, cu, 3)
    with pytest.raises(ValueError, match="valid backends: auto, triton, xformers, sdpa, flex, math"):
        varlen_attention(q, k, v, cu, 4, backend="flash")
