"""What every subcommand shares: the user-facing error type, model loading, help text."""

from __future__ import annotations

import argparse

FORMATTER = argparse.RawDescriptionHelpFormatter
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
MODEL_HELP = (
    "model spec: 'default' (the embedded model), a vision_long directory, 'longclip:FILE.pt', "
    "'openai:FILE.pt', 'open_clip:ARCH@WEIGHTS' or 'hf:DIR' (default: %(default)s)"
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def resolve_device(device: str | None) -> str | None:
    """'auto' -> 'cuda' when available, else 'cpu'; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(spec: str, device: str | None = None, dtype: str | None = None, stretch: bool = True):
    """`load_encoder` with the command line's device and dtype names."""
    import torch

    from vision_long.encoders.loading import load_encoder

    torch_dtype = getattr(torch, DTYPES[dtype]) if dtype else None
    return load_encoder(spec, device=resolve_device(device), dtype=torch_dtype, stretch=stretch)
