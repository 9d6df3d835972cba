"""Contrastive losses: CLIP's InfoNCE and Long-CLIP's long + short loss with primary-component matching.

Reference notes 1.5 (upstream `CLIP.forward` / `CLIP.PCA` after the May 2024 fix): features are gathered
across ranks *with* gradients, targets are offset by `rank * b`, both terms use label smoothing 0.1 and
weight 1:1, and PCA runs over the local batch before the gather, without re-normalizing its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vision_long.distributed import gather_with_grad, rank

PCA_COMPONENTS = 32  # Long-CLIP: k = 32 ("not sensitive, 32 slightly best")
LABEL_SMOOTHING = 0.1  # Long-CLIP


def pca_reconstruct(x: torch.Tensor, k: int = PCA_COMPONENTS) -> torch.Tensor:
    """Long-CLIP's `CLIP.PCA`: Tensor[b, D] -> Tensor[b, D] keeping the top-k principal components.

    `Xc V_k V_k^T + mu` with the SVD of the centred batch in fp32. The result has rank <= min(k, b - 1)
    around the mean; for b <= k + 1 it is the identity (to rounding). Not re-normalized, as upstream.
    """
    mu = x.mean(0, keepdim=True)
    centred = (x - mu).float()
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    basis = vt[:k].T  # [D, k]
    return (centred @ basis @ basis.T).to(x.dtype) + mu


def _symmetric_ce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Symmetric cross-entropy between local rows of `a` and gathered `b` (and vice versa).

    a, b: Tensor[b, D] local features. Logits are `scale * a @ b_all.T` ([b, b * world]) and
    `scale * b @ a_all.T`; the positive of local row i is global column `rank * b + i`.
    """
    a_all, b_all = gather_with_grad(a), gather_with_grad(b)
    targets = torch.arange(a.shape[0], device=a.device) + rank() * a.shape[0]
    loss_a = F.cross_entropy(scale * a @ b_all.T, targets, label_smoothing=label_smoothing)
    loss_b = F.cross_entropy(scale * b @ a_all.T, targets, label_smoothing=label_smoothing)
    return (loss_a + loss_b) / 2


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE on normalized Tensor[b, D] features, negatives gathered from all ranks."""
    return _symmetric_ce(image, text, scale, label_smoothing=0.0)


@dataclass
class LongCLIPLoss:
    """Long-CLIP's fine-tuning loss `L_long + short_weight * L_short`.

    L_long aligns images with long captions; L_short aligns the images' top-k principal components
    (primary-component matching, PCM) with the short captions. `use_pcm=False` is the paper's ablation
    (short captions matched to the full image features).
    """

    pca_components: int = PCA_COMPONENTS
    label_smoothing: float = LABEL_SMOOTHING
    short_weight: float = 1.0  # 1.0 since upstream commit ed8ccfb (0.1 before)
    use_pcm: bool = True

    def __call__(
        self, image: torch.Tensor, text_long: torch.Tensor, text_short: torch.Tensor, scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """image, text_long, text_short: normalized Tensor[b, D]; scale = logit_scale.exp(). Returns the parts."""
        image_short = pca_reconstruct(image, self.pca_components) if self.use_pcm else image
        long = _symmetric_ce(image, text_long, scale, self.label_smoothing)
        short = _symmetric_ce(image_short, text_short, scale, self.label_smoothing)
        return {"loss": long + self.short_weight * short, "loss_long": long, "loss_short": short}
