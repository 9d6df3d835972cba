"""A small Stable-Diffusion-1.5-layout pipeline for ShapeScenes: the architecture as data, built with diffusers.

The directory `save_pipeline` writes is what `StableDiffusionPipeline.save_pretrained` writes, so
`pipelines.load_pipeline` (and plain diffusers) load it:

    text_encoder/  a CLIP's text tower (default: the embedded Long-CLIP) as a transformers `CLIPTextModel`,
                   exported with `export_hf` (248 positions); SD-1.5 reads its last hidden states after the final
                   layer norm. Frozen: only the VAE and the UNet are trained.
    tokenizer/     its BPE as a transformers `CLIPTokenizer` with `model_max_length` 77, SD-1.5's stock
                   truncation; long prompts go through LongAlign segments, each sentence within 77 positions.
    vae/           `AutoencoderKL`: 64 px RGB in [-1, 1] <-> 16 x 16 x 4 latents (factor 4).
    unet/          `UNet2DConditionModel`; cross-attention width = the text tower's width (128 for the default).
    scheduler/     DDIM with SD-1.5's betas.

Why factor 4 and not SD's 8: a 3 x 3 scene at 64 px has ~21 px cells and small objects ~8 px across; at 8x8
latents a cell would be under 3 latent pixels, too few for a small VAE to keep a shape, while 16 x 16 x 4 (12x
compression of flat-colored scenes) keeps ~5 latent pixels per cell.

`DiffusersComponent` wraps a diffusers model as a vision_long checkpoint family, so the VAE and the UNet train
through `training.trainer.train` (checkpoints and exact resume) like every other model of the package.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from torch import nn

SD15_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}  # SD-1.5's scheduler
TRAIN_TIMESTEPS = 1000  # SD-1.5
SEGMENT_TOKENIZER_LENGTH = 77  # the tokenizer's model_max_length: SD-1.5's stock truncation
MAX_ASSET_BYTES = 40 * 2**20  # the embedded pipeline's budget (issue #9)
DEFAULT_CONFIG = "shapescenes-64"


@dataclass(frozen=True)
class SmallSDConfig:
    """The VAE and UNet architecture of a small SD-1.5-layout pipeline.

    image_size: pixels per side; latents are `image_size // 2 ** (len(vae_channels) - 1)` per side.
    vae_channels / vae_layers: `AutoencoderKL.block_out_channels` / `layers_per_block`.
    latent_channels: channels of the latents (SD: 4).
    unet_channels / unet_layers: `UNet2DConditionModel.block_out_channels` / `layers_per_block`; one resolution
        per entry, halving from the latent size.
    cross_attention: per resolution (highest first), whether its blocks cross-attend to the text (the mid block
        always does, as in SD-1.5).
    head_dim: channels per attention head (heads = channels // head_dim).
    norm_groups: GroupNorm groups of both models (must divide every channel count).
    """

    image_size: int = 64
    vae_channels: tuple[int, ...] = (32, 64, 128)
    vae_layers: int = 1
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 192)
    unet_layers: int = 1
    cross_attention: tuple[bool, ...] = (True, True, False)
    head_dim: int = 32
    norm_groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "vae_channels", tuple(self.vae_channels))
        object.__setattr__(self, "unet_channels", tuple(self.unet_channels))
        object.__setattr__(self, "cross_attention", tuple(bool(c) for c in self.cross_attention))
        if len(self.cross_attention) != len(self.unet_channels):
            raise ValueError(f"cross_attention needs one flag per UNet resolution ({len(self.unet_channels)}), "
                             f"got {len(self.cross_attention)}")
        if not any(self.cross_attention):
            raise ValueError("at least one UNet resolution must cross-attend to the text")
        bad = [c for c in (*self.vae_channels, *self.unet_channels) if c % self.norm_groups or c % self.head_dim]
        if bad:
            raise ValueError(f"channel counts {bad} are not multiples of norm_groups ({self.norm_groups}) "
                             f"and head_dim ({self.head_dim})")
        factor = 2 ** (len(self.vae_channels) - 1)
        if self.image_size % (factor * 2 ** (len(self.unet_channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be divisible by the VAE factor {factor} times the "
                             f"UNet's {2 ** (len(self.unet_channels) - 1)}")

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def vae_config(self) -> dict:
        """`AutoencoderKL` keyword arguments (scaling_factor 1.0 until the trained VAE's latents are measured)."""
        count = len(self.vae_channels)
        return {
            "in_channels": 3, "out_channels": 3, "latent_channels": self.latent_channels,
            "block_out_channels": list(self.vae_channels), "layers_per_block": self.vae_layers,
            "down_block_types": ["DownEncoderBlock2D"] * count, "up_block_types": ["UpDecoderBlock2D"] * count,
            "norm_num_groups": self.norm_groups, "sample_size": self.image_size, "scaling_factor": 1.0,
        }

    def unet_config(self, cross_attention_dim: int) -> dict:
        """`UNet2DConditionModel` keyword arguments for text states `cross_attention_dim` wide."""
        down = ["CrossAttnDownBlock2D" if c else "DownBlock2D" for c in self.cross_attention]
        up = ["CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(self.cross_attention)]
        return {
            "sample_size": self.latent_size, "in_channels": self.latent_channels,
            "out_channels": self.latent_channels, "block_out_channels": list(self.unet_channels),
            "layers_per_block": self.unet_layers, "down_block_types": down, "up_block_types": up,
            "cross_attention_dim": cross_attention_dim, "norm_num_groups": self.norm_groups,
            "attention_head_dim": [c // self.head_dim for c in self.unet_channels],  # diffusers: heads per block
            "use_linear_projection": True,
        }

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SmallSDConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SmallSDConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


CONFIGS = {DEFAULT_CONFIG: SmallSDConfig()}


def small_sd_config(name: str) -> SmallSDConfig:
    """A named configuration (`CONFIGS`) or a JSON file of `SmallSDConfig` fields."""
    if name in CONFIGS:
        return CONFIGS[name]
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"unknown t2i config {name!r}: not one of {sorted(CONFIGS)} and no such JSON file")
    try:
        return SmallSDConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a JSON object of SmallSDConfig fields ({e})") from None


def make_scheduler():
    """DDIM with SD-1.5's betas and step offset; `add_noise` with the same betas is the training forward process."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1, prediction_type="epsilon", **SD15_BETAS)


def text_encoder_from_clip(spec: str = "default"):
    """(transformers `CLIPTextModel` in fp32, eval mode, frozen; its `CLIPTokenizer` with model_max_length 77)
    for the CLIP `spec` names (`load_encoder` spec, e.g. "default" or a native directory), via `export_hf`."""
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    from vision_long.encoders.hf_format import export_hf
    from vision_long.encoders.loading import load_encoder

    clip = load_encoder(spec, stretch=False)
    with tempfile.TemporaryDirectory(prefix="vision-long-t2i-") as tmp:
        export_hf(clip, tmp)
        exported = CLIPModel.from_pretrained(tmp, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=SEGMENT_TOKENIZER_LENGTH)
    text_encoder = CLIPTextModel(exported.config.text_config)
    # transformers 5's CLIPTextModel holds the text transformer's parts itself; version 4 had them in .text_model
    getattr(text_encoder, "text_model", text_encoder).load_state_dict(exported.text_model.state_dict())
    text_encoder.float().eval().requires_grad_(False)
    return text_encoder, tokenizer


def build_pipeline(text_encoder, tokenizer, vae, unet):
    """A `StableDiffusionPipeline` of the given parts with `make_scheduler()`, no safety checker."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def save_pipeline(pipe, out_dir: str | Path, half: bool = False) -> Path:
    """`pipe.save_pretrained(out_dir)` (safetensors); `half` stores the UNet and VAE in fp16.

    diffusers upcasts fp16 weights to the models' fp32 when loading without `torch_dtype`, so a half-stored
    pipeline loads in fp32. The text encoder always stays fp32: transformers would keep fp16 weights in fp16.
    """
    out_dir = Path(out_dir)
    backend = getattr(pipe.tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer keeps its last call's padding, which save_pretrained would record
        backend.no_padding()
    if half:
        pipe = copy.copy(pipe)  # a shallow copy: the caller's pipeline keeps its fp32 UNet and VAE
        pipe.register_modules(unet=copy.deepcopy(pipe.unet).half(), vae=copy.deepcopy(pipe.vae).half())
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def install_pipeline(source: str | Path, target: str | Path) -> Path:
    """Copy the trained pipeline directory `source` to `target` (e.g. the embedded default) with the UNet and
    VAE in fp16; ValueError when the result exceeds `MAX_ASSET_BYTES`."""
    from vision_long.diffusion.pipelines import load_pipeline

    target = Path(target)
    pipe = load_pipeline(source)
    # diffusers records where each part was loaded from; name the installed copy, not the training run
    pipe.register_to_config(_name_or_path=target.name)
    for part in ("unet", "vae"):
        getattr(pipe, part).register_to_config(_name_or_path=f"{target.name}/{part}")
    target = save_pipeline(pipe, target, half=True)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    if size > MAX_ASSET_BYTES:
        raise ValueError(f"{target}: {size / 2**20:.1f} MB, over the {MAX_ASSET_BYTES / 2**20:.0f} MB budget")
    return target


@dataclass
class ComponentConfig:
    """A diffusers model as data: its class (`COMPONENT_CLASSES`) and its `config`."""

    class_name: str
    config: dict

    def to_dict(self) -> dict:
        return {"class_name": self.class_name, "config": dict(self.config)}

    @classmethod
    def from_dict(cls, data: dict) -> ComponentConfig:
        return cls(class_name=data["class_name"], config=dict(data["config"]))


COMPONENT_CLASSES = ("AutoencoderKL", "UNet2DConditionModel")


class DiffusersComponent(nn.Module):
    """A diffusers `AutoencoderKL` or `UNet2DConditionModel` (`.model`) as a vision_long checkpoint family.

    `save_native` / `load_native` round-trip it (config.json holds the diffusers config), which is what
    `trainer.train` needs for checkpoints and resume; `.model` is the plain diffusers model for pipelines.
    """

    family = "diffusers"
    config_class = ComponentConfig

    def __init__(self, config: ComponentConfig):
        import diffusers

        super().__init__()
        if config.class_name not in COMPONENT_CLASSES:
            raise ValueError(f"unsupported diffusers component {config.class_name!r}; expected one of "
                             f"{', '.join(COMPONENT_CLASSES)}")
        self.config = config
        model_class = getattr(diffusers, config.class_name)
        self.model = model_class.from_config({k: v for k, v in config.config.items() if not k.startswith("_")})
