"""Retrieval metrics: recall@k in both directions, with several captions per image, and within hard-negative groups.

Tie rule (everywhere): a query's hit counts only if fewer than k non-target candidates score at least as high as
its best target. A tie with a non-target is therefore a miss (the pessimistic rank), so an encoder that gives
every candidate the same score gets recall 0 rather than 1. Similarities must be finite.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_KS = (1, 5, 10)


def hits_at_k(sim: Tensor, positives: Tensor, k: int) -> Tensor:
    """BoolTensor[Nq]: whether a positive of each query is in its top `k` under the tie rule.

    sim: Tensor[Nq, Nc]; positives: BoolTensor[Nq, Nc] with at least one True per row.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not torch.isfinite(sim).all():
        raise ValueError("similarities must be finite (found NaN or inf)")
    if not positives.any(dim=1).all():
        raise ValueError("every query needs at least one positive candidate")
    best = sim.masked_fill(~positives, float("-inf")).amax(dim=1, keepdim=True)
    rivals = ((sim >= best) & ~positives).sum(dim=1)
    return rivals < k


def _check_embeddings(text_emb: Tensor, image_emb: Tensor) -> None:
    if text_emb.ndim != 2 or image_emb.ndim != 2 or text_emb.shape[1] != image_emb.shape[1]:
        raise ValueError(
            f"expected Tensor[Nt, D] and Tensor[Ni, D], got {tuple(text_emb.shape)} and {tuple(image_emb.shape)}"
        )


def cosine_similarity_matrix(text_emb: Tensor, image_emb: Tensor) -> Tensor:
    """Tensor[Nt, Ni] of cosine similarities (float32) between Tensor[Nt, D] texts and Tensor[Ni, D] images."""
    _check_embeddings(text_emb, image_emb)
    return F.normalize(text_emb.float(), dim=-1) @ F.normalize(image_emb.float(), dim=-1).T


def recall_at_k(sim: Tensor, k: int = 1, targets: Tensor | None = None) -> float:
    """Fraction of queries whose target is among the top `k` candidates (ties with non-targets are misses).

    sim: Tensor[Nq, Nc], rows are queries; targets: LongTensor[Nq] of candidate indices (default: query i -> i,
    which needs Nq <= Nc).
    """
    if sim.ndim != 2:
        raise ValueError(f"sim must be Tensor[Nq, Nc], got shape {tuple(sim.shape)}")
    num_queries, num_candidates = sim.shape
    if targets is None:
        if num_queries > num_candidates:
            raise ValueError(f"the diagonal default needs Nq <= Nc, got {num_queries} > {num_candidates}")
        targets = torch.arange(num_queries, device=sim.device)
    if targets.shape != (num_queries,):
        raise ValueError(f"targets must be LongTensor[{num_queries}], got shape {tuple(targets.shape)}")
    positives = F.one_hot(targets.long(), num_candidates).bool()
    return hits_at_k(sim, positives, k).float().mean().item()


def retrieval_metrics(text_emb: Tensor, image_emb: Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@k for text -> image and image -> text, text i paired with image i, on cosine similarity.

    text_emb: Tensor[N, D]; image_emb: Tensor[N, D]. Returns {"t2i_r1": ..., "i2t_r1": ..., "t2i_r5": ...}.
    """
    if len(text_emb) != len(image_emb):
        raise ValueError(f"expected as many texts as images, got {len(text_emb)} and {len(image_emb)}")
    return retrieval_metrics_multi(text_emb, image_emb, torch.arange(len(text_emb)), ks)


def retrieval_metrics_multi(
    text_emb: Tensor, image_emb: Tensor, text_to_image: Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@k with several captions per image (COCO-style), on cosine similarity.

    text_emb: Tensor[Nt, D]; image_emb: Tensor[Ni, D]; text_to_image: LongTensor[Nt], the image of each caption
    (every image needs at least one). Text -> image: the caption's image is in the top k. Image -> text: any
    of the image's captions is in the top k; its other captions never count against it.
    """
    sim = cosine_similarity_matrix(text_emb, image_emb)
    if text_to_image.shape != (len(text_emb),):
        raise ValueError(f"text_to_image must be LongTensor[{len(text_emb)}], got shape {tuple(text_to_image.shape)}")
    caption_of = F.one_hot(text_to_image.long().to(sim.device), len(image_emb)).bool()  # [Nt, Ni]
    if not caption_of.any(dim=0).all():
        raise ValueError("every image needs at least one caption in text_to_image")
    out = {}
    for k in ks:
        out[f"t2i_r{k}"] = hits_at_k(sim, caption_of, k).float().mean().item()
        out[f"i2t_r{k}"] = hits_at_k(sim.T, caption_of.T, k).float().mean().item()
    return out


def group_t2i_r1(text_emb: Tensor, image_emb: Tensor, groups: Sequence[Sequence[int]]) -> float:
    """Hard-negative text -> image accuracy: how often a text's own image strictly beats the rest of its group.

    text_emb, image_emb: Tensor[N, D], text i describes image i; groups: lists of indices (at least 2 each) whose
    images are each other's negatives. Averaged over all texts of all groups; ties are misses, so a text
    encoder that cannot tell a group's captions apart scores at most 1 / group size.
    """
    if len(text_emb) != len(image_emb):
        raise ValueError(f"expected as many texts as images, got {len(text_emb)} and {len(image_emb)}")
    sim = cosine_similarity_matrix(text_emb, image_emb)
    hits = []
    for group in groups:
        if len(group) < 2 or len(set(group)) != len(group):
            raise ValueError(f"a group needs at least 2 distinct indices, got {list(group)}")
        index = torch.as_tensor(list(group), device=sim.device)
        hits.append(hits_at_k(sim[index][:, index], torch.eye(len(group), dtype=torch.bool, device=sim.device), 1))
    if not hits:
        raise ValueError("groups is empty")
    return torch.cat(hits).float().mean().item()
