"""Local diffusers pipelines: recognise SD-1.x and SDXL layouts, load them offline with one-line errors.

Only directories on disk are loaded (`local_files_only=True`): nothing is downloaded. A directory is an SDXL
layout when its `model_index.json` names `text_encoder`, `tokenizer`, `text_encoder_2`, `tokenizer_2`, `unet`,
`vae` and `scheduler`, and an SD-1.x layout (SD-2.x shares it) when it names all but the two `_2` components.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SD15, SDXL = "sd15", "sdxl"
KIND_NAMES = {SD15: "Stable Diffusion 1.x", SDXL: "Stable Diffusion XL"}
_SD15_COMPONENTS = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")
_SDXL_COMPONENTS = (*_SD15_COMPONENTS, "text_encoder_2", "tokenizer_2")
# The embedded default text-to-image pipeline (diffusion/small_sd.py; scripts/build_default_t2i.sh installs it).
DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "assets" / "t2i-shapescenes"


class PipelineError(ValueError):
    """A pipeline directory or component that cannot be used; the message is one line."""


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def detect_layout(directory: str | Path) -> str:
    """SD15 or SDXL from a pipeline directory's `model_index.json`; PipelineError for anything else."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"{directory}: no such pipeline directory")
    index = directory / "model_index.json"
    if not index.is_file():
        raise PipelineError(f"{directory}: not a diffusers pipeline directory (no model_index.json)")
    try:
        config = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{index}: not valid JSON ({_one_line(e)})") from None
    present = {
        name
        for name, value in config.items()
        if not name.startswith("_") and isinstance(value, list) and value[:1] != [None] and (directory / name).is_dir()
    }
    for kind, needed in ((SDXL, _SDXL_COMPONENTS), (SD15, _SD15_COMPONENTS)):
        if set(needed) <= present:
            return kind
    missing = sorted(set(_SD15_COMPONENTS) - present)
    raise PipelineError(
        f"{directory}: a {config.get('_class_name', 'diffusers')} directory, not a Stable Diffusion 1.x or SDXL "
        f"layout (missing {', '.join(missing) or 'text_encoder_2, tokenizer_2'})"
    )


def pipeline_kind(pipe) -> str:
    """SD15 or SDXL for a loaded pipeline object (by its components, so subclasses work too)."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict):
        raise PipelineError(f"expected a diffusers pipeline, got {type(pipe).__name__}")
    have = {name for name, module in components.items() if module is not None}
    if set(_SDXL_COMPONENTS) <= have:
        return SDXL
    if set(_SD15_COMPONENTS) <= have and "text_encoder_2" not in components:
        return SD15
    raise PipelineError(
        f"a {type(pipe).__name__} is not a Stable Diffusion 1.x or SDXL pipeline with its text encoders "
        f"(components: {', '.join(sorted(have))})"
    )


def resolve_pipeline_dir(directory: str | Path | None) -> Path:
    """`directory`, or the embedded default pipeline when None (PipelineError while it is not installed)."""
    if directory is not None:
        return Path(directory)
    if not (DEFAULT_PIPELINE / "model_index.json").is_file():
        raise PipelineError(
            "no pipeline given and the embedded default text-to-image pipeline "
            "(vision_long/assets/t2i-shapescenes) is not installed yet; build it with "
            "'bash scripts/build_default_t2i.sh' (ShapeScenes, about 90 minutes on 2 CPU cores) or pass "
            "--pipeline DIR with a local diffusers SD-1.5 or SDXL directory"
        )
    return DEFAULT_PIPELINE


def load_pipeline(directory: str | Path | None = None, device: str | None = None, dtype: torch.dtype | None = None):
    """Load a local SD-1.x or SDXL diffusers directory (or the embedded default when None).

    The safety checker is not loaded. Errors from diffusers/transformers while loading (missing weight files,
    broken configs) become a one-line PipelineError.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    directory = resolve_pipeline_dir(directory)
    kind = detect_layout(directory)
    kwargs = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        if kind == SDXL:
            pipe = StableDiffusionXLPipeline.from_pretrained(str(directory), add_watermarker=False, **kwargs)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                str(directory), safety_checker=None, feature_extractor=None, requires_safety_checker=False, **kwargs
            )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise PipelineError(f"{directory}: could not load the {KIND_NAMES[kind]} pipeline: {_one_line(e)}") from None
    return pipe.to(device) if device else pipe


def load_text_encoder(source, tokenizer=None, device=None, dtype: torch.dtype | None = None):
    """A transformers CLIP text encoder and its tokenizer: from a directory (e.g. `export_hf` output, 248
    positions; moved to `device` / `dtype`) or an already loaded `CLIPTextModel`, left where it is (its tokenizer
    from `tokenizer` or its own directory)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not (path / "config.json").is_file():
            raise PipelineError(f"{path}: not a transformers CLIP directory (no config.json)")
        try:
            model = CLIPTextModel.from_pretrained(str(path), local_files_only=True).eval()
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise PipelineError(f"{path}: could not load a CLIPTextModel: {_one_line(e)}") from None
        model.to(device=device, dtype=dtype)
    else:
        model, path = source, Path(getattr(source, "name_or_path", "") or ".")
    if tokenizer is None:
        if not (path / "vocab.json").is_file():
            raise PipelineError(f"no tokenizer for the text encoder: {path} has no vocab.json; pass its tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(str(path), model_max_length=model.config.max_position_embeddings)
    return model, tokenizer
