"""The published numbers stored with the package (vision_long/eval/published.json) and how a run picks the
rows that compare with it: same suite, same split or recognised dataset, same ViT backbone when known."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PUBLISHED_FILE = Path(__file__).resolve().parents[1] / "published.json"
# (vision width, patch size, layers) -> backbone name, as the published tables label them
BACKBONES = {(768, 32, 12): "B/32", (768, 16, 12): "B/16", (1024, 14, 24): "L/14"}
CLIP_IMAGE_SIZE = 224


@dataclass(frozen=True)
class PublishedRow:
    """One model's published numbers on one suite: values[metric] = (percent, verification level)."""

    model: str
    backbone: str
    source: str
    values: dict[str, tuple[float, str]]
    note: str | None = None


@cache
def load_published(path: Path = PUBLISHED_FILE) -> dict:
    """The whole table: {"verified_levels", "sources", "results": {suite: [row, ...]}}."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def published_rows(
    suite: str, split: str | None = None, dataset: str | None = None, backbone: str | None = None
) -> list[PublishedRow]:
    """Rows for `suite` whose split / dataset (when a row names one) match; with `backbone`, only that
    backbone's rows, or every row when none was published for it."""
    rows = [
        r for r in load_published()["results"].get(suite, [])
        if r.get("split", split) == split and r.get("dataset", dataset) == dataset
    ]
    if backbone and any(r["backbone"] == backbone for r in rows):
        rows = [r for r in rows if r["backbone"] == backbone]
    return [
        PublishedRow(r["model"], r["backbone"], r["source"],
                     {k: (v["value"], v["verified"]) for k, v in r["values"].items()}, r.get("note"))
        for r in rows
    ]


def backbone_of(model: object) -> str | None:
    """"B/16", "L/14", ... from a model's vision config (width, patch, layers); None when unknown.

    A non-standard input resolution is appended ("L/14@336") so that it does not match 224-pixel rows.
    """
    vision = getattr(getattr(model, "config", None), "vision", None)
    if vision is None:
        return None
    name = BACKBONES.get((vision.width, vision.patch_size, vision.layers))
    if name and vision.image_size != CLIP_IMAGE_SIZE:
        name = f"{name}@{vision.image_size}"
    return name
