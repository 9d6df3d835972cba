"""What gets indexed: images from folders and parquet files as `Item`s, decoded safely and embedded in batches.

Folders are walked recursively (sorted); an image's caption comes from a sidecar `<name>.txt` and its metadata
from a sidecar `<name>.json` (an object) when present. Parquet files hold one image per row, either as bytes (a
binary column, or the `{"bytes", "path"}` struct that Hugging Face `datasets` writes) or as a path (relative paths
are taken from the parquet file's folder); an optional caption and id column; every other scalar column becomes
metadata. Ids are the absolute image path (folders, path columns) or `<parquet file>#<row>` unless the file has an
id column, so rerunning an ingest finds what an index already holds and skips it.

`build_index` is the resumable loop over all of that: it commits every `commit_every` items, so an interrupted
run keeps what it committed and a rerun continues from there.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from vision_long.encoders.base import Encoder
    from vision_long.retrieval.index import Index
    from vision_long.retrieval.ray_embed import RayOptions

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
IMAGE_COLUMNS = ("image", "image_bytes", "jpg", "png", "webp")
PATH_COLUMNS = ("image_path", "path", "filepath", "file_name")
CAPTION_COLUMNS = ("caption", "text", "prompt", "txt")
ID_COLUMNS = ("id", "key")
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's own decompression-bomb limit (~89.5 Mpx) for local files
PARQUET_READ_ROWS = 1024


class ImageError(ValueError):
    """An input that is not a readable image."""


class ImageTooLarge(ImageError):
    """An image with more pixels than allowed (checked from its header, before decoding)."""


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open encoded bytes or a file as an RGB image; the pixel count is checked before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            image = Image.open(BytesIO(data) if isinstance(data, bytes) else data)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image too large to decode ({e})") from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image (unknown format or corrupt header)") from None
    except OSError as e:
        raise ImageError(f"cannot read the image ({e})") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        image.close()
        raise ImageTooLarge(f"image is {image.width}x{image.height} = {pixels:,} pixels; the limit is {max_pixels:,}")
    try:
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise ImageError(f"image data is corrupt ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class Item:
    """One image to index: its id, where it comes from, what is said about it, and its bytes when not at `source`."""

    id: str
    source: str
    caption: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None

    def load_image(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        return decode_image(self.data if self.data is not None else self.source, max_pixels)


@dataclass(frozen=True)
class Skipped:
    """An item left out of the index, and why."""

    id: str
    reason: str


def scan(path: str | Path, **parquet_columns: str | None) -> Iterator[Item]:
    """Items of an image folder (recursively), a parquet file, or a folder of parquet files (`*.parquet`)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        yield from scan_parquet(path, **parquet_columns)
    elif path.is_dir() and not any(_is_image(p) for p in path.rglob("*")) and any(path.rglob("*.parquet")):
        for file in sorted(path.rglob("*.parquet")):
            yield from scan_parquet(file, **parquet_columns)
    elif path.is_dir():
        yield from scan_folder(path)
    elif path.exists():
        raise ValueError(f"{path}: expected an image folder or a .parquet file")
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def scan_folder(root: str | Path) -> Iterator[Item]:
    """Every image file below `root` in sorted order, with sidecar `.txt` captions and `.json` metadata."""
    for path in sorted(p for p in Path(root).resolve().rglob("*") if _is_image(p)):
        caption_file, metadata_file = path.with_suffix(".txt"), path.with_suffix(".json")
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
        metadata = _read_metadata(metadata_file) if metadata_file.is_file() else {}
        yield Item(id=str(path), source=str(path), caption=caption, metadata=metadata)


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: sidecar metadata is not valid JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: sidecar metadata must be a JSON object, got {type(metadata).__name__}")
    return metadata


def _pick(names: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, file: Path) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"{file}: no {what} column {wanted!r} (columns: {names})")
        return wanted
    return next((c for c in candidates if c in names), None)


def scan_parquet(
    file: str | Path, image_column: str | None = None, caption_column: str | None = None, id_column: str | None = None
) -> Iterator[Item]:
    """One item per row of a parquet file, read `PARQUET_READ_ROWS` rows at a time (columns auto-detected)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = Path(file).resolve()
    reader = pq.ParquetFile(file)
    names = reader.schema_arrow.names
    image_col = _pick(names, image_column, IMAGE_COLUMNS + PATH_COLUMNS, "image", file)
    if image_col is None:
        raise ValueError(f"{file}: no image column; expected one of {IMAGE_COLUMNS + PATH_COLUMNS} or --image-column")
    caption_col = _pick(names, caption_column, CAPTION_COLUMNS, "caption", file)
    id_col = _pick(names, id_column, ID_COLUMNS, "id", file)
    image_type = reader.schema_arrow.field(image_col).type
    scalar = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string, pa.types.is_large_string)
    meta_cols = [f.name for f in reader.schema_arrow if f.name not in (image_col, caption_col, id_col)
                 and any(test(f.type) for test in scalar)]
    row = 0
    for batch in reader.iter_batches(batch_size=PARQUET_READ_ROWS):
        columns = batch.to_pydict()
        for i, value in enumerate(columns[image_col]):
            data, path = _image_cell(value, image_type)
            if data is None and path and "://" not in path:
                path = str((file.parent / path).resolve())
            source = path or f"{file}#{row}"
            ident = str(columns[id_col][i]) if id_col else (source if data is None else f"{file}#{row}")
            metadata = {c: v for c in meta_cols if _is_json_scalar(v := columns[c][i])}
            caption = (columns[caption_col][i] if caption_col else None) or ""
            yield Item(id=ident, source=source, caption=caption, metadata=metadata, data=data)
            row += 1


def _image_cell(value: Any, arrow_type: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) of one image cell: binary, a `{"bytes", "path"}` struct, or a path string (None: empty cell)."""
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if value is None or isinstance(value, str):
        return None, value
    if isinstance(value, bytes):
        return value, None
    raise ValueError(f"unsupported image column type {arrow_type}; expected binary, a {{bytes, path}} struct or paths")


def _is_json_scalar(value: Any) -> bool:
    """Kept as metadata: present and finite (NaN and infinities are not JSON)."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of at most `size` items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def embed_items(
    encoder: Encoder, items: list[Item], batch_size: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS, bar: tqdm | None = None
) -> tuple[list[Item], np.ndarray, list[Skipped]]:
    """Decode and embed `items` in batches: (embedded items, float32 [N, D] L2-normalized, unreadable items)."""
    kept: list[Item] = []
    vectors: list[torch.Tensor] = []
    skipped: list[Skipped] = []
    for batch in chunked(items, batch_size):
        images = []
        for item in batch:
            try:
                images.append(item.load_image(max_pixels))
                kept.append(item)
            except ImageError as e:
                skipped.append(Skipped(item.id, str(e)))
        if images:
            vectors.append(encoder.encode_image(images, batch_size=batch_size).float().cpu())
        if bar is not None:
            bar.update(len(batch))
    dim = encoder.embed_dim
    return kept, (torch.cat(vectors).numpy() if vectors else np.zeros((0, dim), np.float32)), skipped


@dataclass
class BuildReport:
    """What one `build_index` run did."""

    added: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    commits: int = 0


def build_index(
    index: Index,
    items: Iterable[Item],
    *,
    commit_every: int = 4096,
    batch_size: int = 64,
    progress: bool = True,
    ray: RayOptions | None = None,
) -> BuildReport:
    """Embed and add every item `index` does not hold yet, committing every `commit_every` items.

    With `ray` the embedding runs on a Ray Data actor pool (`ray_embed`); the rows written are the same.
    """
    if commit_every < 1:
        raise ValueError(f"commit_every must be >= 1, got {commit_every}")
    pending = index.missing(items)
    report = BuildReport()
    with tqdm(desc="index images", unit="img", disable=not progress) as bar:
        if ray is not None:
            from vision_long.retrieval.ray_embed import embed_with_ray

            spec = index.spec or index.record.spec
            results = embed_with_ray(pending, spec, ray, batch_size, commit_every, bar)
        else:
            encoder = index.require_encoder()
            results = (embed_items(encoder, chunk, batch_size, bar=bar) for chunk in chunked(pending, commit_every))
        for kept, vectors, skipped in results:
            report.skipped.extend(skipped)
            if kept:
                index.add_vectors(kept, vectors)
                report.added += len(kept)
                report.commits += 1
    if report.commits > 1:
        index.optimize()
    return report
