"""Tiny random Long-CLIPs (embed dim 64, context 248) and a small ShapeScenes image folder, built offline."""

import argparse
import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_clip import random_openai_state_dict

from vision_long import load_encoder
from vision_long.commands import retrieval
from vision_long.data.scenes import EVAL_SEED_OFFSET, random_scene
from vision_long.retrieval import Index, build_index, scan

NUM_SCENES = 12


def tiny_checkpoint(directory: Path, seed: int, **sizes) -> str:
    path = directory / f"tiny-{seed}.pt"
    torch.save(random_openai_state_dict(long_clip=True, seed=seed, **sizes), path)
    return f"longclip:{path}"


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory) -> str:
    return tiny_checkpoint(tmp_path_factory.mktemp("retrieval_models"), seed=11)


@pytest.fixture(scope="session")
def other_spec(tmp_path_factory) -> str:
    """Same architecture and dimension as `tiny_spec`, different weights."""
    return tiny_checkpoint(tmp_path_factory.mktemp("retrieval_models_other"), seed=12)


@pytest.fixture(scope="session")
def encoder(tiny_spec):
    return load_encoder(tiny_spec)


def write_scene_folder(root: Path, n: int = NUM_SCENES, offset: int = 0) -> Path:
    """`n` rendered scenes, every third in a subfolder; captions for 3 of 4, JSON metadata for all."""
    for i in range(offset, offset + n):
        scene = random_scene(EVAL_SEED_OFFSET + i, grid=3)
        folder = root / "nested" if i % 3 == 0 else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"scene_{i:03d}.png"
        scene.render(48).save(path)
        if i % 4 != 3:
            path.with_suffix(".txt").write_text(scene.caption(), encoding="utf-8")
        path.with_suffix(".json").write_text(json.dumps({"split": "odd" if i % 2 else "even", "n": i}))
    (root / "README.md").write_text("not an image; ignored")
    return root


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory) -> Path:
    return write_scene_folder(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, encoder, tiny_spec, scene_folder) -> Index:
    """A read-only index over `scene_folder` (tests that write build their own)."""
    index = Index.open(tmp_path_factory.mktemp("db") / "db", encoder, tiny_spec, create=True)
    build_index(index, scan(scene_folder), progress=False)
    return index


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb to a naive decoder)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def stored(index: Index) -> tuple[list[str], np.ndarray, list[dict]]:
    """Every row's id, vector float32[N, D] and metadata, sorted by id."""
    table = index.table.to_arrow().sort_by("id")
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    return table.column("id").to_pylist(), vectors, [json.loads(m) for m in table.column("metadata").to_pylist()]


def run_command(argv: list[str]) -> None:
    """Parse and run a retrieval subcommand as `vision-long` does (without cli.py's error handling)."""
    parser = argparse.ArgumentParser(prog="vision-long")
    retrieval.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)
