"""Zero-shot classification with CLIP's prompt ensemble (Radford et al. 2021; Long-CLIP's imagenet.py).

Every class name is put into every template; the normalized text embeddings of one class are averaged and the
mean is normalized again; logits are 100 x cosine similarity with the normalized image embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vision_long.encoders.base import Encoder
from vision_long.eval.retrieval_metrics import recall_at_k
from vision_long.eval.suites.encoding import encode_captions, encode_image_files
from vision_long.eval.suites.layout import ClassificationSet
from vision_long.eval.zeroshot_templates import IMAGENET_TEMPLATES

ZEROSHOT_LOGIT_SCALE = 100.0  # CLIP's notebook and Long-CLIP's imagenet.py: logits = 100 * image @ classifier
TOP_KS = (1, 5)


def zeroshot_weights(
    model: Encoder,
    classnames: Sequence[str],
    templates: Sequence[str] = IMAGENET_TEMPLATES,
    batch_size: int = 128,
    truncate: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """The classifier Tensor[C, D] (one normalized mean prompt embedding per class) and how many of the
    C x T prompts were longer than the model's context."""
    prompts = [template.format(name) for name in classnames for template in templates]
    emb, n_truncated = encode_captions(model, prompts, batch_size, truncate, progress)
    per_class = emb.float().view(len(classnames), len(templates), -1)  # rows are already unit vectors
    return F.normalize(per_class.mean(dim=1), dim=-1), n_truncated


def zeroshot_logits(image_emb: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Tensor[N, C] = 100 * normalize(image_emb) @ weights.T for Tensor[N, D] images and a Tensor[C, D] classifier."""
    return ZEROSHOT_LOGIT_SCALE * F.normalize(image_emb.float(), dim=-1) @ weights.to(image_emb.device).T


def evaluate_zeroshot(
    model: Encoder,
    data: ClassificationSet,
    batch_size: int = 128,
    truncate: bool = True,
    workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, int]]:
    """Top-1 / top-5 accuracy (fractions; a tie with another class is a miss) and the counts
    {"n_images", "n_classes", "n_texts" (prompts), "n_truncated"}."""
    weights, n_truncated = zeroshot_weights(model, data.classnames, IMAGENET_TEMPLATES, batch_size, truncate,
                                            progress)
    logits = zeroshot_logits(encode_image_files(model, data.image_paths, batch_size, workers, progress), weights)
    labels = torch.tensor(data.labels, device=logits.device)
    metrics = {f"top{k}": recall_at_k(logits, k, labels) for k in TOP_KS if k <= len(data.classnames)}
    counts = {"n_images": len(data.image_paths), "n_classes": len(data.classnames),
              "n_texts": len(data.classnames) * len(IMAGENET_TEMPLATES), "n_truncated": n_truncated}
    return metrics, counts
