"""Segment-level CLIP scores for long prompts and their text-relevant / text-irrelevant decomposition.

Segment-level score (LongAlign `loss.dense_score`): each sentence of the prompt is embedded on its own
(projected, L2-normalized), the sentence embeddings are averaged per prompt *without* renormalizing, and the
score is the dot product with the normalized image embedding (no logit scale).

Decomposition (LongAlign §4.1): with `v = normalize(mean_i t_i)` the common direction of a batch of text
embeddings and `eta_i = <t_i, v>`, the score splits into a text-relevant part `<t_i - eta_i v, f_i>` and a
text-irrelevant part `eta_i <v, f_i>`. The reward used for preference optimization reweights the latter:
`S_w = relevant + w * irrelevant = <t - (1 - w) eta v, f>` (w = 1: the plain score; w = 0: relevant part only).

Works with any `Encoder` (vision_long.encoders.base); the tensor functions take features with gradients, so a
reward loop can pass differentiable image features.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vision_long.diffusion.segments import split_segments

TEXT_IRRELEVANT_WEIGHT = 0.3  # LongAlign: default of the REWEIGHT factor w


def segment_text_embeddings(encoder, texts: list[str], split_mode: str = "fixed") -> torch.Tensor:
    """Per prompt, the mean of its segments' normalized text embeddings (not renormalized): Tensor[B, D].

    Segments are split with `split_segments`; in "fixed" mode they are sized to the encoder's context (counted by
    its tokenizer when it has `count_tokens`, as vision_long's CLIPTokenizer does). Long "upstream" segments are
    truncated when the encoder's `encode_text` takes `truncate=`, as upstream does at 77 tokens.
    """
    tokenizer = getattr(encoder, "tokenizer", None)
    count = (lambda s: tokenizer.count_tokens(s) - 2) if hasattr(tokenizer, "count_tokens") else None
    limit = encoder.context_length - 2
    per_text = [split_segments(t, split_mode, count, limit) or [t] for t in texts]
    flat = [s for segs in per_text for s in segs]
    accepts_truncate = "truncate" in inspect.signature(encoder.encode_text).parameters
    kwargs = {"truncate": True} if accepts_truncate else {}
    embeds = F.normalize(encoder.encode_text(flat, **kwargs).float(), dim=-1)
    return torch.stack([chunk.mean(0) for chunk in embeds.split([len(s) for s in per_text])])


def segment_clip_score(encoder, images, texts: list[str], split_mode: str = "fixed") -> torch.Tensor:
    """Segment-level CLIP score of B (image, prompt) pairs: Tensor[B], `<mean_j t_ij, f_i>` with f normalized."""
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images for {len(texts)} prompts")
    text = segment_text_embeddings(encoder, texts, split_mode)
    image = F.normalize(encoder.encode_image(images).float(), dim=-1).to(text.device)
    return (text * image).sum(-1)


def common_direction(text: torch.Tensor) -> torch.Tensor:
    """v = normalize(mean of the batch's text embeddings): Tensor[B, D] -> Tensor[D]. Pass the embeddings of
    the whole (gathered) batch in multi-process training, as upstream averages over all GPUs."""
    return F.normalize(text.mean(0), dim=-1)


@dataclass
class ScoreParts:
    """A batch of scores split along the common direction; every field but `direction` is Tensor[B]."""

    score: torch.Tensor  # <t, f>
    relevant: torch.Tensor  # <t - eta v, f>
    irrelevant: torch.Tensor  # eta <v, f>
    eta: torch.Tensor  # <t, v>, the projection scalar
    direction: torch.Tensor  # v, Tensor[D]

    def reweighted(self, w: float = TEXT_IRRELEVANT_WEIGHT) -> torch.Tensor:
        """relevant + w * irrelevant (w = 1 gives `score`)."""
        return self.relevant + w * self.irrelevant


def decompose_scores(text: torch.Tensor, image: torch.Tensor, direction: torch.Tensor | None = None) -> ScoreParts:
    """Split `<t_i, f_i>` into text-relevant and text-irrelevant parts.

    text: Tensor[B, D] (e.g. `segment_text_embeddings`); image: Tensor[B, D], L2-normalized; direction: Tensor[D]
    (default: `common_direction(text)`).
    """
    if text.shape != image.shape:
        raise ValueError(f"text {tuple(text.shape)} and image {tuple(image.shape)} embeddings differ in shape")
    v = common_direction(text) if direction is None else direction
    eta = text @ v
    irrelevant = eta * (image @ v)
    relevant = ((text - eta[:, None] * v) * image).sum(-1)
    return ScoreParts(score=(text * image).sum(-1), relevant=relevant, irrelevant=irrelevant, eta=eta, direction=v)


def reweighted_score(
    text: torch.Tensor, image: torch.Tensor, w: float = TEXT_IRRELEVANT_WEIGHT, direction: torch.Tensor | None = None
) -> torch.Tensor:
    """LongAlign's reward `<t - (1 - w) eta v, f>`: Tensor[B] (w = 1: the undecomposed score)."""
    return decompose_scores(text, image, direction).reweighted(w)
