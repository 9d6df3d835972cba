"""The `vqa` suite: exact-match accuracy of a `ZoomLMM` on ShapeScenes VQA under one zoom mode.

Items come from the evaluation seed range (disjoint from training): evaluation seed S with n items uses items
[S * n, (S + 1) * n) of that range, so different seeds at the same n never share an item. An answer counts when
its normalized text (`normalize_answer`) equals the normalized ground truth. `image_tokens` is the mean number of
LM positions the image block took (visual embeddings + one separator per crop): the cost side of each zoom mode.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

from tqdm.auto import tqdm

from vision_long.encoders.base import Encoder
from vision_long.lmm.model import ZOOM_MODES, ZoomLMM
from vision_long.lmm.vqa import VQAConfig, vqa_item, vqa_seeds

_NOT_WORD = re.compile(r"[^\w\s]+")


def normalize_answer(text: str) -> str:
    """Lower-cased words of `text` joined by single spaces, punctuation dropped: " Red." -> "red"."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def evaluate_vqa(
    model: ZoomLMM,
    n: int = 500,
    seed: int = 0,
    zoom: str = "text",
    config: VQAConfig | None = None,
    text_encoder: Encoder | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Answer `n` evaluation items with `model` under `zoom` (greedy decoding) and score them.

    Returns accuracy (exact match after normalization), image_tokens (mean per image), n, zoom, seed, by_kind
    (accuracy per question kind present), zoom_found (v1 / text: the share of questions about an object whose
    selected high crops include the one holding it; None for the other modes) and seconds. `text_encoder` (zoom
    "text") defaults to the one the model's config names.
    """
    if not isinstance(model, ZoomLMM):
        raise TypeError(f"model must be a ZoomLMM (load one with vision_long.lmm.load_lmm), got {type(model).__name__}")
    if zoom not in ZOOM_MODES:
        raise ValueError(f"zoom must be one of {ZOOM_MODES}, got {zoom!r}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    config = config or VQAConfig()
    start = time.perf_counter()
    hits: dict[str, list[bool]] = defaultdict(list)
    found: list[bool] = []
    correct, tokens = 0, 0
    for item_seed in tqdm(vqa_seeds("eval", n, start=seed * n), desc=f"vqa ({zoom})", disable=not progress):
        item = vqa_item(item_seed, config)
        answer = model.ask(item.image(), item.question, zoom=zoom, text_encoder=text_encoder)
        hit = normalize_answer(answer.text) == normalize_answer(item.answer)
        hits[item.kind].append(hit)
        correct += hit
        tokens += answer.image_tokens
        if answer.selection is not None and item.point() is not None:
            found.append(answer.crops.high.index_at(item.point()) in answer.selection.indices)
    return {
        "accuracy": correct / n,
        "image_tokens": tokens / n,
        "n": n,
        "zoom": zoom,
        "seed": seed,
        "by_kind": {kind: sum(h) / len(h) for kind, h in sorted(hits.items())},
        "zoom_found": sum(found) / len(found) if found else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
