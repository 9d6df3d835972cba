"""The public-benchmark suites: name -> how its data is read and what it measures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vision_long.eval.suites import image_folder, long_caption, short_caption
from vision_long.eval.suites.layout import ClassificationSet, RetrievalSet


@dataclass(frozen=True)
class Suite:
    """One benchmark: a reader for its on-disk layout and the task the runner applies to what it reads.

    task: "retrieval" (R@1/5/10 in both directions) or "zeroshot" (top-1/top-5 with the prompt ensemble).
    splits: the `--split` choices, the first being the default (empty: the suite has one protocol).
    """

    name: str
    task: str
    read: Callable[[Path, str | None], RetrievalSet | ClassificationSet]
    layout: str
    summary: str
    splits: tuple[str, ...] = ()


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("urban1k", "retrieval", long_caption.read_urban1k, long_caption.URBAN1K_LAYOUT,
              "Urban1k, 1k urban images with long captions"),
        Suite("sharegpt4v-1k", "retrieval", long_caption.read_sharegpt4v, long_caption.SHAREGPT4V_LAYOUT,
              "the first 1000 ShareGPT4V share-captioner items (Long-CLIP's held-out set)"),
        Suite("dci", "retrieval", long_caption.read_dci, long_caption.DCI_LAYOUT,
              "Densely Captioned Images, all 7.8k images, short + extra caption"),
        Suite("docci", "retrieval", long_caption.read_docci, long_caption.DOCCI_LAYOUT,
              "DOCCI test split, 5k images with long descriptions"),
        Suite("coco", "retrieval", short_caption.read_coco, short_caption.COCO_LAYOUT,
              "COCO val2017, 5k images x first 5 captions (Long-CLIP's protocol)"),
        Suite("flickr30k", "retrieval", short_caption.read_flickr30k,
              "; ".join(f"{split}: {layout}" for split, layout in short_caption.FLICKR_LAYOUT.items()),
              "Flickr30k, --split karpathy-1k (1k test images) or full (31.8k, Long-CLIP's protocol)",
              splits=short_caption.FLICKR_SPLITS),
        Suite("zeroshot", "zeroshot", image_folder.read_image_folder, image_folder.IMAGE_FOLDER_LAYOUT,
              "zero-shot classification of an ImageNet-style class-folder set, CLIP prompt ensemble"),
    )
}
