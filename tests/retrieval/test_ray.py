"""`--engine ray` (a local Ray instance, one actor) writes the same index as the single-process path."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_command, stored

from vision_long.retrieval import Index, RayOptions, build_index, scan

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    """One Ray instance for the module (the code under test reuses a running Ray and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def rows(index: Index) -> tuple[list[str], np.ndarray, list]:
    table = index.table.to_arrow().sort_by("id")
    ids, vectors, metadata = stored(index)
    return ids, vectors, [table.column(c).to_pylist() for c in ("source", "caption")] + [metadata]


def test_ray_folder_index_equals_single_process(ray_session, built_index, tiny_spec, scene_folder, tmp_path):
    db = str(tmp_path / "db")
    run_command(["index", str(scene_folder), "--model", tiny_spec, "--db", db, "--engine", "ray", "--actors", "1",
         "--batch-size", "5", "--commit-every", "7", "--quiet"])
    ids, vectors, columns = rows(Index.open(db))
    want_ids, want_vectors, want_columns = rows(built_index)
    assert ids == want_ids and columns == want_columns
    assert np.abs(vectors - want_vectors).max() < 1e-5


def test_ray_parquet_bytes_and_unreadable_rows(ray_session, encoder, tiny_spec, scene_folder, tmp_path):
    paths = sorted(scene_folder.rglob("*.png"))[:4]
    blobs = [p.read_bytes() for p in paths] + [b"not an image"]
    pq.write_table(pa.table({"image": blobs, "caption": list("abcde")}), tmp_path / "shard.parquet")
    local = Index.open(tmp_path / "local", encoder, tiny_spec, create=True)
    distributed = Index.open(tmp_path / "ray", encoder, tiny_spec, create=True)
    want = build_index(local, scan(tmp_path / "shard.parquet"), progress=False)
    got = build_index(distributed, scan(tmp_path / "shard.parquet"), progress=False, ray=RayOptions(actors=1))
    bad = f"{tmp_path / 'shard.parquet'}#4"
    assert (got.added, [s.id for s in got.skipped]) == (want.added, [s.id for s in want.skipped]) == (4, [bad])
    assert rows(distributed)[0] == rows(local)[0] and rows(distributed)[2] == rows(local)[2]
    assert np.abs(rows(distributed)[1] - rows(local)[1]).max() < 1e-5
