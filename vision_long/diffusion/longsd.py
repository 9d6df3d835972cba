"""LongAlign's released LongSD weights in a diffusers SD-1.5 pipeline (`vision-long generate --longsd DIR`).

The release (HF `luping-liu/LongSD`, used by upstream `sample.py`) is a directory of three parts:

    s28750_adapter/       the T5 TextAdapter fine-tuned in stage 1 (LaVi-Bridge layout: `conditioning.TextAdapter`)
    s28750_lora_vis.pt    the stage-1 UNet LoRA (step 28,750)
    sd15-reward-3750.pt   the reward (decomposed preference optimization) UNet LoRA (step 3,750)

A LoRA file is upstream `modules/lora.py`'s `save_lora_weight` output: `torch.save` of a flat list
`[up_0, down_0, up_1, down_1, ...]` of fp16 tensors, one pair per `nn.Linear` / `nn.Conv2d` found under a module whose
class is one of `LONGALIGN_LORA_PARENTS` ("extended" LoRA: ResnetBlock2D, CrossAttention, Attention, GEGLU). No
names are stored: the order is the naming, and it is upstream's `_find_modules_v2` order: the parent modules in
`unet.modules()` order, then each parent's `named_modules()` order. Linear: up Tensor[out, r], down Tensor[r, in];
Conv2d: up Tensor[out, r, 1, 1], down Tensor[r, in, kh, kw]. LongSD uses r = 32 and SD-1.5's UNet has
`SD15_LORA_LAYERS` such layers (the same list, in the same order, under diffusers 0.28 (upstream's pin) and 0.42).

Merging is upstream's `collapse_lora` (scale 1): W <- W + scale * up @ down (convs: up and down flattened to
matrices, the product reshaped to W's shape), the stage-1 LoRA first, then the reward LoRA. Differences, on
purpose: the product is formed in fp32 and added to W in fp32 before W is cast back (upstream merges in the UNet's
bf16), and every pair is checked against its layer before anything is merged.

The conditioning is `[240 segment-merged CLIP rows | TextAdapter(T5-large states of 240 tokens)]` (upstream
`caption2embed`: T5 tokens padded to 240 and read without attention mask), sampled with UniPC as `sample.py` does.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from vision_long.checkpoints import CheckpointError
from vision_long.diffusion.conditioning import (
    LLMBranch,
    LLMBranchConfig,
    attach_llm_branch,
    load_text_adapter,
)
from vision_long.diffusion.pipelines import (
    SD15,
    PipelineError,
    load_pipeline,
    pipeline_kind,
)
from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder

LONGALIGN_LORA_PARENTS = frozenset({"ResnetBlock2D", "CrossAttention", "Attention", "GEGLU"})  # VIS_REPLACE_MODULES
ADAPTER_DIR = "s28750_adapter"
STAGE1_LORA = "s28750_lora_vis.pt"
REWARD_LORA = "sd15-reward-3750.pt"
RELEASE_FILES = (ADAPTER_DIR, STAGE1_LORA, REWARD_LORA)
LONGSD_T5_TOKENS = 240  # LongAlign `token_length`: T5 tokens per prompt
SD15_LORA_LAYERS = 224  # LoRA pairs of SD-1.5's UNet: 128 attention projections, 16 GEGLU, 80 ResNet layers


def longalign_lora_layers(unet: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """(path, layer) of every layer a LongAlign LoRA file adapts, in the file's order (see the module docstring)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in unet.modules()):
        raise PipelineError("the UNet already carries peft LoRA layers; merge LongAlign LoRAs into a freshly "
                            "loaded pipeline")
    return [
        (path, layer)
        for parent_path, parent in unet.named_modules()
        if type(parent).__name__ in LONGALIGN_LORA_PARENTS
        for path, layer in parent.named_modules(prefix=parent_path)
        if isinstance(layer, (nn.Linear, nn.Conv2d))
    ]


def read_longalign_lora(path: str | Path) -> list[torch.Tensor]:
    """The tensors of a LongAlign LoRA file (a pickled list, read with `weights_only=True`: nothing but tensors
    and containers is unpickled). CheckpointError for a missing or unreadable file or any other content."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such LoRA file")
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a LongAlign LoRA file ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise CheckpointError(f"{path}: not a LongAlign LoRA file (expected a list of tensors [up, down, ...], got "
                              f"{type(tensors).__name__})")
    return list(tensors)


def _check_pair(layer: nn.Linear | nn.Conv2d, up: torch.Tensor, down: torch.Tensor) -> str | None:
    """What is wrong with (up, down) for `layer`, or None when they fit."""
    weight = layer.weight
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            return f"grouped convolutions (groups={layer.groups}) are not supported"
        expected_ndim, up_tail = 4, (1, 1)
    else:
        expected_ndim, up_tail = 2, ()
    if up.ndim != expected_ndim or down.ndim != expected_ndim:
        return f"a {type(layer).__name__} needs {expected_ndim}-d up and down"
    rank = up.shape[1]
    if (up.shape[0], *up.shape[2:]) != (weight.shape[0], *up_tail) or down.shape[0] != rank:
        return f"up must be [{weight.shape[0]}, r{', 1, 1' if up_tail else ''}] and down [r, ...] with the same r"
    if down.shape[1:] != weight.shape[1:]:
        return f"down must be [r, {', '.join(map(str, weight.shape[1:]))}]"
    return None


def merge_longalign_lora(unet: nn.Module, tensors: list[torch.Tensor], scale: float = 1.0, source: str = "LoRA") -> int:
    """Merge a LongAlign LoRA (`read_longalign_lora`) into `unet` in place: W <- W + scale * up @ down per layer.

    Every pair is checked against its layer first (count, ranks, shapes); CheckpointError names the first pair
    that does not fit and nothing is merged. Returns the number of layers merged.
    """
    layers = longalign_lora_layers(unet)
    if len(tensors) != 2 * len(layers):
        raise CheckpointError(
            f"{source}: holds {len(tensors)} tensors; a LongAlign LoRA for this UNet holds {2 * len(layers)} (an up "
            f"and a down matrix for each of its {len(layers)} Linear/Conv2d layers under "
            f"{', '.join(sorted(LONGALIGN_LORA_PARENTS))} modules)"
        )
    pairs = list(zip(tensors[0::2], tensors[1::2], strict=True))
    for i, ((path, layer), (up, down)) in enumerate(zip(layers, pairs, strict=True)):
        problem = _check_pair(layer, up, down)
        if problem:
            raise CheckpointError(f"{source}: pair {i} (tensors {2 * i}, {2 * i + 1}) up {tuple(up.shape)} / down "
                                  f"{tuple(down.shape)} does not fit {path} {tuple(layer.weight.shape)}: {problem}")
    with torch.no_grad():
        for (_, layer), (up, down) in zip(layers, pairs, strict=True):
            weight = layer.weight
            delta = up.to(weight.device, torch.float32).flatten(1) @ down.to(weight.device, torch.float32).flatten(1)
            weight.copy_((weight.float() + scale * delta.reshape(weight.shape)).to(weight.dtype))
    return len(layers)


def check_release(directory: str | Path) -> Path:
    """`directory` when it holds LongSD's three parts; CheckpointError naming what is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such LongSD directory")
    missing = [name for name in RELEASE_FILES if not (directory / name).exists()]
    if missing:
        raise CheckpointError(f"{directory}: not a LongSD release directory: missing {', '.join(missing)} (expected "
                              f"{ADAPTER_DIR}/, {STAGE1_LORA} and {REWARD_LORA} from HF luping-liu/LongSD)")
    return directory


def load_longsd(
    release: str | Path,
    pipeline: str | Path,
    t5: str | Path,
    device: str | None = None,
    dtype: torch.dtype | None = None,
):
    """SD-1.5 (`pipeline`, a local diffusers directory) with LongSD's two LoRAs merged into its UNet, UniPC
    sampling, and LongSD's T5 branch attached (`t5`: a local T5-large transformers directory, read by its encoder;
    `release`: LongSD's directory), so `encode_long_prompt(pipe, prompt, method="segments+llm")` gives LongSD's
    `[B, 480, 768]` conditioning. T5 stays in fp32 when `dtype` is fp16 (its activations overflow in fp16).

    Everything is checked (files, LoRA shapes, adapter widths) before the pipeline is returned; errors are
    CheckpointError / PipelineError with one-line messages.
    """
    from diffusers import UniPCMultistepScheduler

    release = check_release(release)
    t5 = Path(t5)
    if not (t5 / "config.json").is_file():
        raise CheckpointError(f"{t5}: not a transformers T5 directory (no config.json); pass a local T5-large (--t5)")
    adapter = load_text_adapter(release / ADAPTER_DIR)
    loras = [(read_longalign_lora(release / name), str(release / name)) for name in (STAGE1_LORA, REWARD_LORA)]
    pipe = load_pipeline(pipeline, device=device, dtype=dtype)
    if pipeline_kind(pipe) != SD15:
        raise PipelineError(f"{pipeline}: LongSD is a Stable Diffusion 1.5 model; this is an SDXL pipeline")
    width = pipe.unet.config.cross_attention_dim
    if adapter.config.out_dim != width:
        raise CheckpointError(f"{release / ADAPTER_DIR}: the adapter gives {adapter.config.out_dim}-wide rows but the "
                              f"UNet's cross-attention expects {width}")
    embedder = LLMEmbedder(LLMConfig(name=str(t5)))
    branch = LLMBranch(embedder, adapter.requires_grad_(False),
                       LLMBranchConfig(llm=embedder.config, tokens=LONGSD_T5_TOKENS, pad_mode="unmasked"))
    for tensors, source in loras:  # upstream sample.py: stage 1 merged first, then the reward LoRA
        merge_longalign_lora(pipe.unet, tensors, source=source)
    llm_dtype = torch.float32 if pipe.unet.dtype == torch.float16 else pipe.unet.dtype
    embedder.to(dtype=llm_dtype)
    branch.to(pipe._execution_device, pipe.unet.dtype)
    attach_llm_branch(pipe, branch)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    return pipe
