"""Index: round trip, persistence across processes, exact search = brute force, encoder checks, crash safety."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import NUM_SCENES, stored, tiny_checkpoint, write_scene_folder
from PIL import Image

from vision_long import load_encoder
from vision_long.retrieval import EncoderMismatch, EncoderRecord, Index, IndexConfig, Item, build_index, scan
from vision_long.retrieval.index import metadata_filter


def brute_force(index: Index, query: np.ndarray, k: int, keep=lambda metadata: True) -> list[tuple[str, float]]:
    ids, vectors, metadata = stored(index)
    scores = vectors @ (query / np.linalg.norm(query))
    order = [i for i in np.argsort(-scores, kind="stable") if keep(metadata[i])]
    return [(ids[i], float(scores[i])) for i in order[:k]]


def assert_same_ranking(hits, expected) -> None:
    assert [h.id for h in hits] == [i for i, _ in expected]
    assert np.allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)


def test_round_trip(built_index, scene_folder, encoder):
    assert built_index.count() == NUM_SCENES
    ids, vectors, metadata = stored(built_index)
    assert ids == sorted(str(p) for p in scene_folder.rglob("*.png"))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    first = scene_folder / "nested" / "scene_000.png"
    want = encoder.encode_image([Image.open(first).convert("RGB")])[0].numpy()
    assert np.allclose(vectors[ids.index(str(first))], want, atol=1e-6)
    assert metadata[ids.index(str(first))] == {"split": "even", "n": 0}
    hit = built_index.search(encoder.encode_image([Image.open(first).convert("RGB")])[0], k=1)[0]
    assert hit.id == str(first) and hit.source == str(first) and hit.score == pytest.approx(1, abs=1e-5)
    assert hit.caption == first.with_suffix(".txt").read_text(encoding="utf-8")
    captions = {h.id: h.caption for h in built_index.search(want, k=NUM_SCENES)}
    assert captions[str(scene_folder / "scene_007.png")] == ""  # no sidecar .txt


def test_search_equals_brute_force(built_index, encoder, scene_folder):
    text = "In the top-left cell there is a large red circle. " * 8
    query = encoder.encode_text([text])[0].numpy()
    assert_same_ranking(built_index.search(text, k=5), brute_force(built_index, query, 5))
    image = Image.open(scene_folder / "scene_005.png").convert("RGB")
    assert_same_ranking(built_index.search(image, k=4), brute_force(built_index, encoder.encode_image([image])[0].numpy(), 4))
    vector = np.random.default_rng(0).standard_normal(encoder.embed_dim).astype(np.float32)
    assert_same_ranking(built_index.search(vector, k=NUM_SCENES), brute_force(built_index, vector, NUM_SCENES))
    odd = built_index.search(vector, k=3, filter={"split": "odd"})
    assert_same_ranking(odd, brute_force(built_index, vector, 3, lambda m: m["split"] == "odd"))
    assert [h.id for h in built_index.search(vector, k=5, filter={"n": 4, "split": "even"})] == [
        str(scene_folder / "scene_004.png")
    ]
    assert built_index.search(vector, k=5, filter={"n": 4, "split": "odd"}) == []
    assert len(built_index.search(vector, k=20, filter={"absent": None})) == NUM_SCENES


def test_refuses_another_encoder(built_index, other_spec, tmp_path):
    db = built_index.db
    with pytest.raises(EncoderMismatch, match="different encoder"):
        Index.open(db, load_encoder(other_spec), other_spec)
    wider = tiny_checkpoint(tmp_path, seed=13, embed_dim=32)
    with pytest.raises(EncoderMismatch, match="32-dim"):
        Index.open(db, load_encoder(wider), wider)
    with pytest.raises(ValueError, match=r"shape \[64\]"):
        built_index.search(np.ones(32, np.float32))
    with pytest.raises(ValueError, match="non-zero"):
        built_index.search(np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="open it with its encoder"):
        Index.open(db).search("a text query")


def test_same_weights_under_another_path_are_accepted(built_index, tiny_spec, tmp_path):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(open(tiny_spec.removeprefix("longclip:"), "rb").read())
    assert Index.open(built_index.db, load_encoder(f"longclip:{copy}"), f"longclip:{copy}").count() == NUM_SCENES


def test_add_replace_delete(encoder, tiny_spec, scene_folder, tmp_path):
    index = Index.open(tmp_path / "db", encoder, tiny_spec, create=True)
    items = list(scan(scene_folder))[:4]
    assert index.add(items, progress=False) == []
    assert index.count() == 4
    index.add([Item(items[0].id, items[1].source, "replaced", {"v": 2})], progress=False)
    assert index.count() == 4
    hits = {h.id: h for h in index.search(np.array(stored(index)[1][0]), k=2)}  # items 0 and 1: same image now
    assert (hits[items[0].id].caption, hits[items[0].id].metadata) == ("replaced", {"v": 2})
    assert hits[items[0].id].score == pytest.approx(hits[items[1].id].score, abs=1e-6)
    index.delete([items[0].id, "no-such-id", "it's quoted"])
    assert index.count() == 3 and items[0].id not in index.ids()


def test_interrupted_add_leaves_index_unchanged(encoder, tiny_spec, scene_folder, tmp_path):
    index = Index.open(tmp_path / "db", encoder, tiny_spec, create=True)
    items = list(scan(scene_folder))
    index.add(items[:5], progress=False)
    before, version = stored(index), index.table.version

    class Crash(RuntimeError):
        pass

    calls = {"n": 0}
    real = encoder.encode_image

    def failing(images, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("power cut")
        return real(images, **kwargs)

    encoder.encode_image = failing
    try:
        with pytest.raises(Crash):
            index.add(items[5:], batch_size=2, progress=False)
    finally:
        del encoder.encode_image
    after = Index.open(tmp_path / "db", encoder, tiny_spec)
    assert after.table.version == version and after.count() == 5
    assert stored(after)[0] == before[0] and np.array_equal(stored(after)[1], before[1])


def test_persists_across_processes_and_survives_kill(tiny_spec, tmp_path):
    """A child process builds an index and is SIGKILLed while embedding its third commit. This process then opens
    what it wrote (the record, the first two commits, exact search) and a rerun resumes and completes it."""
    folder = write_scene_folder(tmp_path / "scenes", n=9)
    db = tmp_path / "db"
    script = textwrap.dedent(f"""
        import os, signal
        from vision_long import load_encoder
        from vision_long.retrieval import Index, build_index, scan
        encoder = load_encoder({tiny_spec!r})
        index = Index.open({str(db)!r}, encoder, {tiny_spec!r}, create=True)
        real, calls = encoder.encode_image, [0]
        def dying(images, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(images, **kwargs)
        encoder.encode_image = dying
        build_index(index, scan({str(folder)!r}), commit_every=3, batch_size=3, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    encoder = load_encoder(tiny_spec)
    index = Index.open(db, encoder, tiny_spec)
    assert index.count() == 6 and index.record.spec == tiny_spec and index.record.embed_dim == 64
    query = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    assert_same_ranking(index.search(query, k=10), brute_force(index, query, 10))
    ids, vectors, _ = stored(index)
    want = encoder.encode_image([Image.open(i).convert("RGB") for i in ids]).numpy()
    assert np.allclose(vectors, want, atol=1e-6)
    report = build_index(index, scan(folder), progress=False)
    assert report.added == 3 and index.count() == 9 and len(index.ids()) == 9


def test_ann_index_past_threshold(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((8, 32)).astype(np.float32)
    vectors = centers[rng.integers(0, 8, 600)] + 0.3 * rng.standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [Item(f"v{i}", f"mem://{i}") for i in range(600)]
    index = Index.create(tmp_path / "db", EncoderRecord("test:vectors", 32), config=IndexConfig(ann_threshold=500))
    index.add_vectors(items[:400], vectors[:400])
    assert index.table.list_indices() == []
    index.add_vectors(items[400:], vectors[400:])
    assert len(index.table.list_indices()) == 1
    queries = vectors[:20] + 0.1 * rng.standard_normal((20, 32)).astype(np.float32)
    recall = np.mean([
        len({h.id for h in index.search(q, k=10)} & {i for i, _ in brute_force(index, q, 10)}) / 10 for q in queries
    ])
    assert recall >= 0.8
    for hit in index.search(queries[0], k=5):  # re-ranked: exact cosine scores
        assert hit.score == pytest.approx(float(vectors[int(hit.id[1:])] @ queries[0] / np.linalg.norm(queries[0])), abs=1e-5)
    assert_same_ranking(index.search(queries[1], k=10, exact=True), brute_force(index, queries[1], 10))
    index.delete([f"v{i}" for i in range(200)])
    assert_same_ranking(index.search(queries[0], k=10), brute_force(index, queries[0], 10))  # below threshold: exact


def test_metadata_filter_sql_is_quoted():
    assert metadata_filter({"name": "it's"}) == "json_extract(metadata, '$.name') = '\"it''s\"'"
    assert metadata_filter({"n": 3, "ok": True, "x": None}) == (
        "json_extract(metadata, '$.n') = '3' AND json_extract(metadata, '$.ok') = 'true' "
        "AND (json_extract(metadata, '$.x') IS NULL OR json_extract(metadata, '$.x') = 'null')"
    )
    for bad in ({"a.b": 1}, {"a') OR 1=1 --": 1}, {"k": [1, 2]}):
        with pytest.raises(ValueError):
            metadata_filter(bad)


def test_open_missing_and_foreign_tables(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index table"):
        Index.open(tmp_path / "nothing")
    import lancedb

    lancedb.connect(str(tmp_path / "foreign")).create_table("images", data=[{"vector": [1.0, 2.0]}])
    with pytest.raises(ValueError, match="not a vision_long index"):
        Index.open(tmp_path / "foreign")
