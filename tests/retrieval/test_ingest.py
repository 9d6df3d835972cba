"""Ingestion: folders with sidecars, parquet with bytes / paths / HF structs, safe decoding, resumable builds."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import NUM_SCENES, png_bytes, png_header_only, write_scene_folder
from PIL import Image

from vision_long.retrieval import ImageError, Index, build_index, decode_image, scan
from vision_long.retrieval.ingest import ImageTooLarge, embed_items


def test_scan_folder_reads_sidecars_recursively(scene_folder):
    items = list(scan(scene_folder))
    assert len(items) == NUM_SCENES and [i.id for i in items] == sorted(i.id for i in items)
    by_name = {i.id.rsplit("/", 1)[1]: i for i in items}
    assert by_name["scene_000.png"].source == str(scene_folder / "nested" / "scene_000.png")
    assert by_name["scene_001.png"].caption.startswith("In the") and by_name["scene_003.png"].caption == ""
    assert by_name["scene_001.png"].metadata == {"split": "odd", "n": 1} and by_name["scene_001.png"].data is None


def test_scan_parquet_with_bytes_paths_and_structs(scene_folder, tmp_path):
    paths = sorted(scene_folder.rglob("*.png"))[:3]
    raw = [p.read_bytes() for p in paths]
    pq.write_table(pa.table({"image": raw, "caption": ["a", None, "c"], "year": [2020, 2021, None],
                             "score": [0.5, float("nan"), 1.0], "tags": [[1], [2], [3]]}), tmp_path / "bytes.parquet")
    items = list(scan(tmp_path / "bytes.parquet"))
    assert [i.id for i in items] == [f"{tmp_path / 'bytes.parquet'}#{r}" for r in range(3)]
    assert [i.caption for i in items] == ["a", "", "c"] and [i.data for i in items] == raw
    assert [i.metadata for i in items] == [{"year": 2020, "score": 0.5}, {"year": 2021}, {"score": 1.0}]

    relative = [str(p.relative_to(scene_folder)) for p in paths]
    pq.write_table(pa.table({"image_path": relative, "id": ["x", "y", "z"]}), scene_folder / "paths.parquet")
    try:
        items = list(scan(scene_folder / "paths.parquet"))
    finally:
        (scene_folder / "paths.parquet").unlink()
    assert [i.id for i in items] == ["x", "y", "z"] and [i.source for i in items] == [str(p) for p in paths]
    assert np.array_equal(np.asarray(items[0].load_image()), np.asarray(Image.open(paths[0]).convert("RGB")))

    struct = pa.array([{"bytes": raw[0], "path": "a.png"}], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    (tmp_path / "hf").mkdir()
    pq.write_table(pa.table({"image": struct, "text": ["t"]}), tmp_path / "hf" / "part-0.parquet")
    (item,) = list(scan(tmp_path / "hf"))  # a folder of parquet files
    assert (item.data, item.source, item.caption) == (raw[0], "a.png", "t")


def test_scan_parquet_errors(tmp_path):
    pq.write_table(pa.table({"caption": ["a"]}), tmp_path / "none.parquet")
    with pytest.raises(ValueError, match="no image column"):
        list(scan(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="no caption column 'nope'"):
        list(scan(tmp_path / "none.parquet", image_column="caption", caption_column="nope"))
    with pytest.raises(FileNotFoundError):
        list(scan(tmp_path / "missing"))


def test_decode_image_limits():
    image = Image.new("RGB", (30, 20), (1, 2, 3))
    assert decode_image(png_bytes(image)).size == (30, 20)
    assert decode_image(png_bytes(image.convert("L"))).mode == "RGB"
    with pytest.raises(ImageTooLarge, match="10000x10000"):
        decode_image(png_header_only(10_000, 10_000), max_pixels=10**7)
    with pytest.raises(ImageTooLarge):  # past PIL's own bomb limit: refused when the header is read
        decode_image(png_header_only(50_000, 50_000), max_pixels=10**10)
    with pytest.raises(ImageTooLarge):
        decode_image(png_bytes(image), max_pixels=599)
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"GIF89a but not really")
    with pytest.raises(ImageError, match="corrupt"):
        decode_image(png_bytes(image)[:60])


def test_build_is_resumable_and_skips_unreadable(encoder, tiny_spec, tmp_path):
    folder = write_scene_folder(tmp_path / "scenes", n=4)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    index = Index.open(tmp_path / "db", encoder, tiny_spec, create=True)
    first = build_index(index, scan(folder), commit_every=3, progress=False)
    assert (first.added, first.commits, [s.id for s in first.skipped]) == (4, 2, [str(folder / "broken.jpg")])
    write_scene_folder(folder, n=1, offset=4)
    second = build_index(index, scan(folder), progress=False)
    assert (second.added, second.commits, len(second.skipped)) == (1, 1, 1)
    assert index.count() == 5


def test_embed_items_matches_encoder(encoder, scene_folder):
    items = list(scan(scene_folder))[:5]
    kept, vectors, skipped = embed_items(encoder, items, batch_size=2)
    want = encoder.encode_image([Image.open(i.source).convert("RGB") for i in items]).numpy()
    assert kept == items and skipped == [] and vectors.dtype == np.float32
    assert np.allclose(vectors, want, atol=1e-6)
