"""Saving and loading a `ZoomLMM`: the native format (`save_native`) plus the LM's tokenizer beside it.

Layout: `config.json` + `model.safetensors` (vision tower, projector and LM weights, as for every family) and a
`tokenizer/` folder written by the tokenizer's own `save_pretrained`, so no foreign file shares a name with ours.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from vision_long.checkpoints import CheckpointError, load_native, save_native
from vision_long.lmm.model import ZoomLMM

TOKENIZER_DIR = "tokenizer"


def save_lmm(model: ZoomLMM, out_dir: str | Path) -> Path:
    """Save `model` and its tokenizer to `out_dir`; `load_lmm` gives back a model with identical outputs."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer to save; attach one with ZoomLMM.attach_tokenizer")
    out_dir = save_native(model, out_dir)
    model.tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    return out_dir


def load_lmm(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ZoomLMM:
    """The `ZoomLMM` saved by `save_lmm` at `path`, on `device` in `dtype`, in eval mode, tokenizer attached."""
    path = Path(path)
    model = load_native(path, device=device, dtype=dtype)
    if not isinstance(model, ZoomLMM):
        raise CheckpointError(f"{path}: a {model.family!r} checkpoint, not an {ZoomLMM.family!r} one")
    tokenizer_dir = path / TOKENIZER_DIR
    if not tokenizer_dir.is_dir():
        raise CheckpointError(f"{path}: missing the tokenizer folder {TOKENIZER_DIR}/ (written by save_lmm)")
    try:
        model.attach_tokenizer(AutoTokenizer.from_pretrained(tokenizer_dir))
    except ValueError as e:
        raise CheckpointError(f"{tokenizer_dir}: {e}") from None
    return model
