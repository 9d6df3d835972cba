"""Readers for the short-caption retrieval sets with several captions per image: COCO and Flickr30k."""

from __future__ import annotations

from pathlib import Path

from vision_long.eval.suites.layout import Layout, RetrievalSet

COCO_LAYOUT = "val2017/<file_name>.jpg and annotations/captions_val2017.json (COCO 2017 val images + annotations)"
COCO_CAPTIONS_PER_IMAGE = 5  # Long-CLIP eval/retrieval/coco.py: captions[0:5]
FLICKR_SPLITS = ("karpathy-1k", "full")  # the first is the default
FLICKR_TOKEN = "results_20130124.token"
FLICKR_KARPATHY = "dataset_flickr30k.json"
FLICKR_LAYOUT = {
    "full": f"flickr30k-images/<name>.jpg and {FLICKR_TOKEN} (lines '<name>.jpg#<k><TAB><caption>')",
    "karpathy-1k": f"flickr30k-images/<name>.jpg and {FLICKR_KARPATHY} (Karpathy splits; images with split 'test')",
}


def read_coco(root: str | Path, split: str | None = None) -> RetrievalSet:
    """COCO val2017: all 5,000 images in id order, each with the first 5 of its captions in file order
    (torchvision's CocoCaptions, as Long-CLIP's eval/retrieval/coco.py)."""
    layout = Layout("coco", root, COCO_LAYOUT)
    image_dir = layout.directory("val2017")
    where = "annotations/captions_val2017.json"
    doc = layout.json(where)
    captions_of: dict[int, list[str]] = {}
    for i, ann in enumerate(layout.field(doc, "annotations", where)):
        captions_of.setdefault(layout.field(ann, "image_id", f"{where} annotation {i}"), []).append(
            layout.field(ann, "caption", f"{where} annotation {i}"))
    records = sorted(layout.field(doc, "images", where), key=lambda r: layout.field(r, "id", f"{where} image"))
    images, captions, caption_image = [], [], []
    for record in records:
        own = captions_of.get(record["id"], [])[:COCO_CAPTIONS_PER_IMAGE]
        if not own:
            raise layout.error(f"image {record['id']} has no captions in {where}")
        images.append(image_dir / layout.field(record, "file_name", f"{where} image {record['id']}"))
        captions += own
        caption_image += [len(images) - 1] * len(own)
    if not images:
        raise layout.error(f"{where} lists no images")
    layout.images_exist(images)
    protocol = (f"COCO val2017: {len(images)} images, the first {COCO_CAPTIONS_PER_IMAGE} captions each "
                "(Long-CLIP eval/retrieval/coco.py; papers using the Karpathy 5k test split differ slightly)")
    return RetrievalSet(images, captions, caption_image, protocol)


def read_flickr30k(root: str | Path, split: str | None = None) -> RetrievalSet:
    """Flickr30k: `karpathy-1k` (default), the 1,000 Karpathy test images with 5 captions each, or `full`,
    all 31,783 images and 158,915 captions of results_20130124.token (Long-CLIP's protocol)."""
    split = split or FLICKR_SPLITS[0]
    if split not in FLICKR_SPLITS:
        raise ValueError(f"flickr30k: unknown split {split!r}; expected one of {', '.join(FLICKR_SPLITS)}")
    layout = Layout(f"flickr30k --split {split}", root, FLICKR_LAYOUT[split])
    image_dir = layout.directory("flickr30k-images")
    grouped = _karpathy_test(layout) if split == "karpathy-1k" else _token_file(layout)
    images, captions, caption_image = [], [], []
    for name, own in grouped.items():
        images.append(image_dir / name)
        captions += own
        caption_image += [len(images) - 1] * len(own)
    if not images:
        raise layout.error("no images found in the annotations")
    layout.images_exist(images)
    if split == "full":
        protocol = (f"Flickr30k full: {len(images)} images, {len(captions)} captions ({FLICKR_TOKEN}), Long-CLIP's "
                    "protocol (eval/retrieval/flickr30k.py); most other papers report --split karpathy-1k")
    else:
        protocol = (f"Flickr30k Karpathy test: {len(images)} images, {len(captions)} captions; note that "
                    "Long-CLIP's own Flickr30k numbers use the full set (--split full)")
    return RetrievalSet(images, captions, caption_image, protocol)


def _token_file(layout: Layout) -> dict[str, list[str]]:
    """Captions grouped by image name, in file order, from results_20130124.token."""
    path = layout.file(FLICKR_TOKEN)
    grouped: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, tab, caption = line.rstrip("\n").partition("\t")
            name, hash_, _ = key.partition("#")
            if not tab or not hash_ or not caption.strip():
                raise layout.error(f"{FLICKR_TOKEN} line {number} is not '<name>.jpg#<k><TAB><caption>'")
            grouped.setdefault(name, []).append(caption.strip())
    return grouped


def _karpathy_test(layout: Layout) -> dict[str, list[str]]:
    """Raw captions of the Karpathy test images, by file name, from dataset_flickr30k.json."""
    doc = layout.json(FLICKR_KARPATHY)
    grouped: dict[str, list[str]] = {}
    for i, record in enumerate(layout.field(doc, "images", FLICKR_KARPATHY)):
        where = f"{FLICKR_KARPATHY} image {i}"
        if layout.field(record, "split", where) == "test":
            sentences = layout.field(record, "sentences", where)
            grouped[layout.field(record, "filename", where)] = [layout.field(s, "raw", where) for s in sentences]
    return grouped
