"""The project's own checkpoint format: a directory of `model.safetensors` plus `config.json`.

Every model vision_long trains or converts saves here and loads back with identical outputs. Foreign formats
(Long-CLIP / OpenAI `.pt`, open_clip, transformers) are converted at the edge in `encoders/loading.py`.
`config.json` records the format version, the model family (which class to build) and that class's config.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_NAME = "vision_long"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# family -> "module:Class"; each class has `config.to_dict()`, `Config.from_dict`, and `__init__(config)`.
FAMILIES = {
    "longclip": "vision_long.encoders.longclip:LongCLIP",
    "proclip": "vision_long.encoders.proclip:ProCLIPEncoder",
    "lmm": "vision_long.lmm.model:ZoomLMM",
    "cell-parser": "vision_long.eval.alignment:CellParser",
    "unet-lora": "vision_long.diffusion.preference:UNetLoRA",
    "diffusers": "vision_long.diffusion.small_sd:DiffusersComponent",
}


class CheckpointError(ValueError):
    """A checkpoint file or directory is missing, malformed, or does not fit the model built for it."""


def _family_class(family: str) -> type[nn.Module]:
    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def is_native_dir(path: str | Path) -> bool:
    """True when `path` is a directory holding a vision_long `config.json`."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT_NAME
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def save_native(model: nn.Module, out_dir: str | Path) -> Path:
    """Save `model` (any registered family) to `out_dir` as safetensors + JSON config; returns the directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "config": model.config.to_dict(),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": FORMAT_NAME, "family": model.family})
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def load_native(path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a model saved by `save_native`; errors name the file and what is wrong with it."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a vision_long checkpoint directory (no {CONFIG_FILE})")
    try:
        meta = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{config_file}: not a vision_long config (missing \"format\": \"{FORMAT_NAME}\")")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_file}: format version {meta['format_version']} is newer than this vision_long "
            f"understands ({FORMAT_VERSION}); upgrade vision-long"
        )
    cls = _family_class(meta.get("family", ""))
    try:
        config = cls.config_class.from_dict(meta["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{config_file}: malformed {meta['family']} config ({e!r})") from None
    model = cls(config)
    if not weights_file.is_file():
        raise CheckpointError(f"{path}: missing weights file {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_file}: unreadable safetensors file ({e})") from None
    load_state_dict_checked(model, state, source=str(weights_file))
    return model.to(device=device, dtype=dtype).eval()


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(state)` with an error that lists missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_preview(shapes)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit a {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state)


def _preview(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"
