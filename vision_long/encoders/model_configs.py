"""Architectures are data: one JSON file per model in `vision_long/model_configs/` (open_clip style)."""

from __future__ import annotations

import json
from pathlib import Path

from vision_long.encoders.longclip import CLIPConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"


def list_model_configs() -> list[str]:
    """Names of the shipped architectures."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def model_config(name_or_path: str) -> CLIPConfig:
    """A `CLIPConfig` from a shipped name (e.g. "shapescenes-small") or a path to a JSON file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"unknown model config {name_or_path!r}; shipped: {list_model_configs()}")
    data = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    return CLIPConfig.from_dict(data)
