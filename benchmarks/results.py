"""Shared by the benchmark scripts: best-of-N timing and writing one section of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script named in it; rerun the command to refresh it.\n"


def machine() -> str:
    """One line describing where the numbers were measured."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}"


def best_of(fn, repeats: int):
    """(fastest wall time in seconds over `repeats` calls of `fn`, the last call's result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section delimited by `<!-- name:start -->` / `<!-- name:end -->`."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"<!-- {name}:start -->\n{body.strip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def image_sheet(columns: list[list], cell: int):
    """A white sheet of equal-length image columns, each image scaled to `cell` px (nearest) with 2 px gaps."""
    from PIL import Image

    sheet = Image.new("RGB", (len(columns) * (cell + 2), len(columns[0]) * (cell + 2)), "white")
    for j, column in enumerate(columns):
        for i, image in enumerate(column):
            sheet.paste(image.resize((cell, cell), Image.NEAREST), (j * (cell + 2), i * (cell + 2)))
    return sheet
