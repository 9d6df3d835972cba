"""Retrieval suites: recall@k in both directions over a whole benchmark, in memory that scales with one block.

Flickr30k's full set is 158,915 captions x 31,783 images; its similarity matrix alone would be 20 GB, so the
recall is counted block by block with the same tie rule as `retrieval_metrics_multi` (ties are misses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vision_long.encoders.base import Encoder
from vision_long.eval.retrieval_metrics import DEFAULT_KS, hits_at_k
from vision_long.eval.suites.encoding import encode_captions, encode_image_files
from vision_long.eval.suites.layout import RetrievalSet

QUERY_BLOCK = 2048  # queries per similarity block: 2048 x 159k float32 = 1.3 GB at most


def blockwise_retrieval_metrics(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    caption_image: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    block: int = QUERY_BLOCK,
) -> dict[str, float]:
    """`retrieval_metrics_multi`'s numbers without the full [Nt, Ni] matrix: {"t2i_r1": ..., "i2t_r1": ...}.

    text_emb: Tensor[Nt, D]; image_emb: Tensor[Ni, D]; caption_image: LongTensor[Nt], each caption's image
    (every image needs at least one). Similarities are cosine, computed `block` queries at a time.
    """
    if caption_image.shape != (len(text_emb),):
        raise ValueError(f"caption_image must be LongTensor[{len(text_emb)}], got shape {tuple(caption_image.shape)}")
    text = F.normalize(text_emb.float(), dim=-1)
    image = F.normalize(image_emb.float(), dim=-1)
    owner = caption_image.to(text.device).long()
    image_ids = torch.arange(len(image), device=text.device)
    hits = {f"{d}_r{k}": 0 for k in ks for d in ("i2t", "t2i")}  # the papers list I2T first
    for start in range(0, len(text), block):
        sim = text[start : start + block] @ image.T  # [b, Ni]
        positives = owner[start : start + block, None] == image_ids[None]
        for k in ks:
            hits[f"t2i_r{k}"] += int(hits_at_k(sim, positives, k).sum())
    for start in range(0, len(image), block):
        sim = image[start : start + block] @ text.T  # [b, Nt]
        positives = image_ids[start : start + block, None] == owner[None]
        for k in ks:
            hits[f"i2t_r{k}"] += int(hits_at_k(sim, positives, k).sum())
    return {key: count / (len(text) if key.startswith("t2i") else len(image)) for key, count in hits.items()}


def evaluate_retrieval(
    model: Encoder,
    data: RetrievalSet,
    batch_size: int = 128,
    truncate: bool = True,
    workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, int]]:
    """Recall@1/5/10 (fractions) of `model` on `data`, and the counts {"n_images", "n_texts", "n_truncated"}.

    Captions go first, so that a truncation error comes before the (long) image pass.
    """
    text_emb, n_truncated = encode_captions(model, data.captions, batch_size, truncate, progress)
    image_emb = encode_image_files(model, data.image_paths, batch_size, workers, progress)
    metrics = blockwise_retrieval_metrics(text_emb, image_emb, torch.tensor(data.caption_image))
    return metrics, {"n_images": len(data.image_paths), "n_texts": len(data.captions), "n_truncated": n_truncated}
