"""`vision-long index | search | serve` through `commands.retrieval.register` (as cli.py composes it)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import NUM_SCENES, run_command
from fastapi.testclient import TestClient

from vision_long.commands.common import CLIError
from vision_long.retrieval import EncoderMismatch, Index


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory, tiny_spec, scene_folder):
    db = str(tmp_path_factory.mktemp("cli") / "db")
    run_command(["index", str(scene_folder), "--model", tiny_spec, "--db", db, "--device", "cpu", "--quiet"])
    return db


def test_index_is_resumable(cli_db, scene_folder, capsys):
    run_command(["index", str(scene_folder), "--db", cli_db, "--device", "cpu", "--quiet"])  # model: the index's own
    assert f"added 0 images to {cli_db} (table 'images', now {NUM_SCENES} images)" in capsys.readouterr().out


def test_search_table_json_and_image(cli_db, scene_folder, capsys):
    capsys.readouterr()
    run_command(["search", "a large red circle in the top-left cell " * 3, "--db", cli_db, "-k", "3", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "image", "caption"] and len(lines) == 4
    run_command(["search", "a blue square", "--db", cli_db, "-k", "20", "--json", "--filter", "split=odd", "--device", "cpu"])
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == NUM_SCENES // 2 and set(hits[0]) == {"id", "score", "source", "caption", "metadata"}
    assert all(h["metadata"]["split"] == "odd" for h in hits)
    query = scene_folder / "scene_002.png"
    run_command(["search", "--image", str(query), "--db", cli_db, "-k", "1", "--json", "--device", "cpu"])
    (top,) = json.loads(capsys.readouterr().out)
    assert top["source"] == str(query) and top["score"] == pytest.approx(1, abs=1e-5)


def test_search_errors(cli_db, other_spec, tmp_path):
    with pytest.raises(CLIError, match="one of them"):
        run_command(["search", "--db", cli_db])
    with pytest.raises(EncoderMismatch):
        run_command(["search", "a cat", "--db", cli_db, "--model", other_spec, "--device", "cpu"])
    with pytest.raises(FileNotFoundError, match="no index table"):
        run_command(["search", "a cat", "--db", str(tmp_path / "none")])
    with pytest.raises(CLIError, match="KEY=VALUE"):
        run_command(["search", "a cat", "--db", cli_db, "--filter", "novalue", "--device", "cpu"])
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(CLIError, match="not a readable image"):
        run_command(["search", "--image", str(tmp_path / "bad.png"), "--db", cli_db, "--device", "cpu"])


def test_index_parquet_with_bytes(tiny_spec, scene_folder, tmp_path, capsys):
    paths = sorted(scene_folder.rglob("*.png"))[:3]
    table = pa.table({"key": ["a", "b", "c"], "jpg": [p.read_bytes() for p in paths], "txt": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "shard.parquet")
    db = str(tmp_path / "db")
    run_command(["index", str(tmp_path / "shard.parquet"), "--model", tiny_spec, "--db", db, "--device", "cpu", "--quiet"])
    assert "added 3 images" in capsys.readouterr().out
    assert Index.open(db).ids() == {"a", "b", "c"}


def test_serve_builds_the_app_with_the_index_encoder(cli_db, tiny_spec, monkeypatch):
    import uvicorn

    captured = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs))
    monkeypatch.setenv("VISION_LONG_API_KEY", "k3y")
    run_command(["serve", "--db", cli_db, "--device", "cpu", "--max-batch", "8"])
    assert (captured["host"], captured["port"]) == ("127.0.0.1", 8000)
    with TestClient(captured["app"]) as client:
        assert client.get("/v1/models").status_code == 401
        card = client.get("/v1/models", headers={"Authorization": "Bearer k3y"}).json()["data"][0]
        assert card["id"] == tiny_spec and card["indexed_images"] == NUM_SCENES
