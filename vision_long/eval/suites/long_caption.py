"""Readers for the long-caption retrieval sets: Urban1k, ShareGPT4V-1k, DCI and DOCCI (one caption per image).

Each takes the dataset root (`--data`) and returns a `RetrievalSet` in a fixed order; the metrics do not
depend on the order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vision_long.eval.suites.layout import Layout, RetrievalSet

URBAN1K_LAYOUT = "image/<name>.jpg and caption/<name>.txt (same name; the caption is the file's first line)"
SHAREGPT4V_JSON = "share-captioner_coco_lcs_sam_1246k_1107.json"
SHAREGPT4V_LAYOUT = f"{SHAREGPT4V_JSON} and the images its 'image' fields name, relative to the same folder"
SHAREGPT4V_ITEMS = 1000  # Long-CLIP train/sharegpt4v.py: share4v_val_dataset is json[:1000]
DCI_LAYOUT = "annotations/<name>.json, photos/<image> and splits.json (dci.tar.gz + SA-1B sa_000138.tar)"
DOCCI_JSONL = "docci_descriptions.jsonlines"
DOCCI_LAYOUT = f"{DOCCI_JSONL} and images/<image_file> (docci_images.tar.gz)"
DOCCI_SPLIT = "test"  # 5,000 images
_NEXT_TOKEN = re.compile(r"\s*(\S)")


def read_urban1k(root: str | Path, split: str | None = None) -> RetrievalSet:
    """Urban1k: caption/<name>.txt pairs with image/<name>.jpg, as Long-CLIP's eval/retrieval/Urban1k.py."""
    layout = Layout("urban1k", root, URBAN1K_LAYOUT)
    image_dir, caption_dir = layout.directory("image"), layout.directory("caption")
    caption_files = sorted(caption_dir.glob("*.txt"))
    if not caption_files:
        raise layout.error(f"no .txt captions in {caption_dir}")
    captions = []
    for path in caption_files:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0].strip():
            raise layout.error(f"{path} is empty")
        captions.append(lines[0].strip())
    images = [image_dir / f"{path.stem}.jpg" for path in caption_files]
    layout.images_exist(images)
    protocol = (f"Urban1k: {len(images)} image/caption pairs, caption = first line of caption/<name>.txt "
                "(Long-CLIP eval/retrieval/Urban1k.py)")
    return RetrievalSet(images, captions, list(range(len(images))), protocol)


def first_json_items(path: Path, n: int, chunk_chars: int = 1 << 20) -> list:
    """The first `n` elements of the JSON array in `path`, parsed without reading the rest of the file.

    ShareGPT4V's caption file is a single array of 1.2M items (over a gigabyte); the suite needs 1000.
    Raises `json.JSONDecodeError` when the file is not a JSON array of values.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buffer, pos, items = "", 0, []

        def next_char() -> str:
            """The next non-separator character (reading more as needed); '' at the end of the file."""
            nonlocal buffer, pos
            while True:
                while pos < len(buffer) and (buffer[pos].isspace() or (items and buffer[pos] == ",")):
                    pos += 1
                if pos < len(buffer):
                    return buffer[pos]
                buffer, pos = f.read(chunk_chars), 0
                if not buffer:
                    return ""

        if next_char() != "[":
            raise json.JSONDecodeError("expected a JSON array", buffer, pos)
        pos += 1
        while len(items) < n and next_char() not in ("]", ""):
            while True:  # a value is complete once a ',' or ']' follows it
                try:
                    item, end = decoder.raw_decode(buffer, pos)
                    after = _NEXT_TOKEN.match(buffer, end)
                    if after and after.group(1) in ",]":
                        break
                    error = json.JSONDecodeError("expected ',' or ']' after an array element", buffer, end)
                except json.JSONDecodeError as e:
                    error = e
                more = f.read(chunk_chars)
                if not more:
                    raise error
                buffer, pos = buffer[pos:] + more, 0
            items.append(item)
            pos = end
    return items


def read_sharegpt4v(root: str | Path, split: str | None = None) -> RetrievalSet:
    """ShareGPT4V-1k: the first 1000 items of the share-captioner JSON, caption = `conversations[1].value` with
    newlines replaced by spaces, image = root / `image` (Long-CLIP train/sharegpt4v.py)."""
    layout = Layout("sharegpt4v-1k", root, SHAREGPT4V_LAYOUT)
    path = layout.file(SHAREGPT4V_JSON)
    try:
        items = first_json_items(path, SHAREGPT4V_ITEMS)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise layout.error(f"{path} is not a JSON array ({e})") from e
    if len(items) < SHAREGPT4V_ITEMS:
        raise layout.error(f"{path} has {len(items)} items, the suite needs the first {SHAREGPT4V_ITEMS}")
    images, captions = [], []
    for i, item in enumerate(items):
        where = f"{path.name} item {i}"
        turns = layout.field(item, "conversations", where)
        if not isinstance(turns, list) or len(turns) < 2:
            raise layout.error(f"{where} has fewer than 2 conversation turns")
        captions.append(str(layout.field(turns[1], "value", f"{where} conversations[1]")).replace("\n", " "))
        images.append(layout.root / layout.field(item, "image", where))
    layout.images_exist(images)
    protocol = (f"ShareGPT4V-1k: the first {SHAREGPT4V_ITEMS} items of {SHAREGPT4V_JSON} "
                "(Long-CLIP train/sharegpt4v.py; the training set is the rest)")
    return RetrievalSet(images, captions, list(range(len(images))), protocol)


def dci_long_caption(short_caption: str, extra_caption: str) -> str:
    """DCI's extended description (`short_caption` + newline + `extra_caption`, DCI's get_extended_caption)
    cut into sentences at newlines, '</s>' and periods and re-joined with '. ', as LoTLIP's DCI retrieval."""
    parts = re.split(r"\n|</s>|\.", f"{short_caption}\n{extra_caption}")
    return ". ".join(part.strip() for part in parts if part.strip())


def read_dci(root: str | Path, split: str | None = None) -> RetrievalSet:
    """DCI: every image listed in splits.json (all splits), with its long caption `dci_long_caption`."""
    layout = Layout("dci", root, DCI_LAYOUT)
    annotations, photos = layout.directory("annotations"), layout.directory("photos")
    splits = layout.json("splits.json")
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise layout.error("splits.json is not a mapping of split name to annotation file names")
    images, captions = [], []
    for name in (name for names in splits.values() for name in names):
        path = annotations / name
        if not path.is_file():
            raise layout.error(f"splits.json lists {name} but {path} does not exist")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise layout.error(f"{path} is not valid JSON ({e})") from e
        where = f"annotations/{name}"
        captions.append(dci_long_caption(layout.field(record, "short_caption", where),
                                         layout.field(record, "extra_caption", where)))
        images.append(photos / layout.field(record, "image", where))
    if not images:
        raise layout.error("splits.json lists no annotation files")
    layout.images_exist(images)
    protocol = (f"DCI: {len(images)} images of all splits in splits.json, caption = short_caption + extra_caption "
                "re-joined by sentence (LoTLIP dataloaders/dci_retrieval.py; ProCLIP's DCI column matches it)")
    return RetrievalSet(images, captions, list(range(len(images))), protocol)


def read_docci(root: str | Path, split: str | None = None) -> RetrievalSet:
    """DOCCI: the `test` split of docci_descriptions.jsonlines, caption = `description`."""
    layout = Layout("docci", root, DOCCI_LAYOUT)
    path, image_dir = layout.file(DOCCI_JSONL), layout.directory("images")
    images, captions = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise layout.error(f"{path.name} line {number} is not valid JSON ({e})") from e
            where = f"{path.name} line {number}"
            if layout.field(record, "split", where) == DOCCI_SPLIT:
                captions.append(layout.field(record, "description", where))
                images.append(image_dir / layout.field(record, "image_file", where))
    if not images:
        raise layout.error(f"{path} has no records with split {DOCCI_SPLIT!r}")
    layout.images_exist(images)
    protocol = f"DOCCI: the {len(images)} images of the {DOCCI_SPLIT!r} split, caption = description"
    return RetrievalSet(images, captions, list(range(len(images))), protocol)
