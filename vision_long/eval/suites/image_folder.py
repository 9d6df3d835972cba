"""Reader for zero-shot classification sets in the ImageNet-style folder layout: DIR/<class>/<image>.

Class order is the sorted folder names (torchvision's ImageFolder). The names the prompts use come from
DIR/classnames.json when present ({"<folder>": "<name>"}), else from CLIP's curated ImageNet names when the
folders are exactly the 1,000 ImageNet WordNet ids, else from the folder names with '_' read as a space.
"""

from __future__ import annotations

import re
from pathlib import Path

from vision_long.eval.suites.layout import ClassificationSet, Layout

IMAGE_FOLDER_LAYOUT = "<class>/<image>.jpg|.jpeg|.png|... (one folder per class; optional classnames.json)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
CLASSNAMES_FILE = "classnames.json"
IMAGENET_CLASSES = 1000
WORDNET_ID = re.compile(r"n\d{8}")


def read_image_folder(root: str | Path, split: str | None = None) -> ClassificationSet:
    """Every image under DIR/<class>/ (searched recursively, sorted), labelled by its class folder."""
    layout = Layout("zeroshot", root, IMAGE_FOLDER_LAYOUT)
    folders = sorted(p for p in layout.directory().iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise layout.error(f"no class folders in {layout.root}")
    images, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise layout.error(f"class folder {folder} holds no images")
        images += files
        labels += [label] * len(files)
    is_imagenet = len(folders) == IMAGENET_CLASSES and all(WORDNET_ID.fullmatch(f.name) for f in folders)
    classnames, source = _classnames(layout, [f.name for f in folders], is_imagenet)
    protocol = (f"image folder: {len(images)} images in {len(folders)} classes, class names from {source}, "
                "CLIP's 80-template prompt ensemble (Long-CLIP eval/classification/imagenet)")
    return ClassificationSet(images, labels, classnames, protocol, "imagenet-1k" if is_imagenet else None)


def _classnames(layout: Layout, folders: list[str], is_imagenet: bool) -> tuple[list[str], str]:
    """The prompt name of each class folder and where the names came from."""
    if (layout.root / CLASSNAMES_FILE).is_file():
        mapping = layout.json(CLASSNAMES_FILE)
        missing = [f for f in folders if not isinstance(mapping, dict) or f not in mapping]
        if missing:
            raise layout.error(f"{CLASSNAMES_FILE} has no name for class folder {missing[0]!r}")
        return [str(mapping[f]) for f in folders], CLASSNAMES_FILE
    if is_imagenet:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # CLIP's names, in sorted-WordNet-id order

        return list(IMAGENET_CLASSNAMES), "CLIP's ImageNet class names (folders are the 1,000 WordNet ids)"
    return [f.replace("_", " ") for f in folders], "the folder names"
