import math

import torch
import torch.nn.functional as F

from vision_long.encoders.longclip_loss import LongCLIPLoss, clip_loss, pca_reconstruct


def test_pca_is_identity_for_small_batches():
    x = F.normalize(torch.randn(5, 16), dim=-1)
    assert torch.allclose(pca_reconstruct(x, k=4), x, atol=1e-6)  # centred rank <= b - 1 = 4 = k
    assert torch.allclose(pca_reconstruct(x, k=32), x, atol=1e-6)


def test_pca_rank_and_no_renormalization():
    x = F.normalize(torch.randn(64, 48), dim=-1)
    out = pca_reconstruct(x, k=8)
    assert torch.linalg.matrix_rank(out - x.mean(0)) <= 8
    assert out.norm(dim=-1).mean() < 0.9  # shrunken, not re-normalized (upstream behaviour)
    assert torch.allclose(out.mean(0), x.mean(0), atol=1e-6)


def test_pca_equals_eigendecomposition_form():
    """The April 2024 upstream form (eigenvectors of Xc^T Xc) gives the same reconstruction."""
    x = torch.randn(40, 12, dtype=torch.float64)
    xc = x - x.mean(0)
    _, vecs = torch.linalg.eigh(xc.T @ xc)
    top = vecs[:, -5:]
    # pca_reconstruct runs its SVD in fp32 like upstream, hence the tolerance
    assert torch.allclose(pca_reconstruct(x, k=5), xc @ top @ top.T + x.mean(0), atol=1e-5)


def _smoothed_ce(logits, eps):
    """Hand-written cross-entropy with label smoothing, targets on the diagonal."""
    logp = logits - logits.logsumexp(-1, keepdim=True)
    n = logits.shape[1]
    return (-(1 - eps) * logp.diagonal() - eps / n * logp.sum(-1)).mean()


def test_longclip_loss_by_hand():
    torch.manual_seed(1)
    image, long, short = (F.normalize(torch.randn(6, 8), dim=-1) for _ in range(3))
    scale = torch.tensor(math.log(100.0)).exp()
    parts = LongCLIPLoss(pca_components=2)(image, long, short, scale)
    pcs = pca_reconstruct(image, 2)
    want_long = (_smoothed_ce(scale * image @ long.T, 0.1) + _smoothed_ce(scale * long @ image.T, 0.1)) / 2
    want_short = (_smoothed_ce(scale * pcs @ short.T, 0.1) + _smoothed_ce(scale * short @ pcs.T, 0.1)) / 2
    assert torch.allclose(parts["loss_long"], want_long, atol=1e-5)
    assert torch.allclose(parts["loss_short"], want_short, atol=1e-5)
    assert torch.allclose(parts["loss"], want_long + want_short, atol=1e-5)
    no_pcm = LongCLIPLoss(use_pcm=False)(image, long, short, scale)
    want_no_pcm = (_smoothed_ce(scale * image @ short.T, 0.1) + _smoothed_ce(scale * short @ image.T, 0.1)) / 2
    assert torch.allclose(no_pcm["loss_short"], want_no_pcm, atol=1e-5)


def test_clip_loss_by_hand_and_gradients():
    image = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(4, 8), dim=-1)
    loss = clip_loss(image, text, torch.tensor(10.0))
    want = (_smoothed_ce(10 * image @ text.T, 0.0) + _smoothed_ce(10 * text @ image.T, 0.0)) / 2
    assert torch.allclose(loss, want, atol=1e-6)
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
