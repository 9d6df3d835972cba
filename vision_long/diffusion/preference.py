"""Decomposed preference optimization (LongAlign §4.2), scaled down: reward fine-tuning of a UNet LoRA.

One optimizer step, as `preference_step` reads:

1. Prompts: ShapeScenes training captions, encoded for the UNet with `encode_long_prompt` (segments by default);
   the negative prompt is "" through the same path. No images are used: the stage is data-free apart from prompts.
2. `x_T ~ N(0, I)`; DDIM (eta 0) over LongAlign's trailing schedule (50 steps: 999, 979, ..., 19) with
   classifier-free guidance in one doubled batch.
3. Gradients at `grad_steps` of the steps, one drawn per block (`r + j * steps // grad_steps`, upstream
   `time_all[r::10]`); the other steps run under no_grad. The UNet's input is detached at every step while the
   DDIM update uses the non-detached `x_t`, so the image's gradient reaches every grad-enabled noise prediction
   through the linear DDIM chain but never through the UNet's Jacobian with respect to its input.
4. The image is the VAE decoding of the predicted x0 at the last timestep (no final step to t = 0).
5. Reward (`segment_reward`): the segment-level score of scoring.py with the reward model's image features taken
   differentiably (random crop of 504/512 of the side, resize to the model's input, its normalization), split
   into text-relevant and text-irrelevant parts along the batch's common direction and reweighted:
   `S_w = relevant + w * irrelevant` (w = 1: no reweighting).
6. Loss `0.5 * (1 - mean S_w)` (upstream's, without its constant `-0.09 (1 - w)`; a positive multiple of
   -reward plus a constant). Both parts are logged to log.jsonl separately.

The LoRA (`UNetLoRA`, peft layers on the attention projections) trains through `trainer.train` and is saved in
the native format; its state-dict keys are peft's (`...attn1.to_q.lora_A.weight`). `load_lora(pipe, dir)` adds
it to any SD-1.x pipeline's UNet.

Deviations from upstream, for a CPU-sized run: 10 sampling steps with 2 gradient steps (upstream 50 / 5), LoRA
rank 8 on the attention projections only (upstream rank 32, "extended" LoRA that also adapts ResNet convs and
GEGLU), lr 1e-4 with the trainer's warm-up + cosine schedule (upstream 3e-5 constant after 2000 warm-up steps,
for 3,750 steps), batch 4 (upstream 8 per GPU x 6), the pipeline's dtype (upstream bf16), and the reward model
is a vision_long encoder (default: the embedded Long-CLIP) instead of Denscore (CLIP-H). Unchanged: guidance 7.5,
w = 0.3, AdamW betas (0.9, 0.999), eps 1e-8, weight decay 1e-2, gradient clipping 0.3, detached UNet inputs,
gradient checkpointing of the grad-enabled UNet calls, the crop, the common direction over the (global) batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vision_long.checkpoints import CheckpointError, load_native
from vision_long.diffusion.pipelines import (
    SD15,
    PipelineError,
    load_pipeline,
    pipeline_kind,
)
from vision_long.diffusion.prompts import encode_long_prompt
from vision_long.diffusion.scoring import (
    TEXT_IRRELEVANT_WEIGHT,
    ScoreParts,
    common_direction,
    decompose_scores,
    segment_text_embeddings,
)
from vision_long.distributed import gather_with_grad, init_from_env, rank, world_size
from vision_long.training.shapescenes import SceneData
from vision_long.training.trainer import OptimConfig, train

ADAPTER_NAME = "preference"  # the peft adapter's name inside the UNet
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections, as diffusers' SD LoRA scripts
CROP_FRACTION = 504 / 512  # LongAlign: RandomCrop(504) of the 512-pixel image before the reward model
UPSTREAM_SAMPLE_STEPS, UPSTREAM_GRAD_STEPS = 50, 5  # LongAlign unet_reward.py
GUIDANCE = 7.5  # LongAlign's classifier-free guidance during reward fine-tuning


# ---- the LoRA as a native-format model ------------------------------------------------------------------------------
@dataclass
class LoRASettings:
    """rank, alpha (peft scale alpha / rank), peft `target_modules`, and the adapted layers:
    `layers[path] = [in_features, out_features]` for each Linear of the UNet that the targets select."""

    rank: int = 8
    alpha: float = 8.0
    targets: tuple[str, ...] = LORA_TARGETS
    layers: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LoRASettings:
        return cls(**{**data, "targets": tuple(data["targets"])})

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=list(self.targets), lora_dropout=0.0)


class UNetLoRA(nn.Module):
    """The LoRA factors of a UNet: for each adapted layer path, `lora_A` Linear(in, r) and `lora_B` Linear(r, out).

    Submodules mirror the UNet's paths, so the state dict's keys are peft's. Built from its settings alone (so
    `load_native` needs no UNet); `attach(unet)` adds a peft adapter to the UNet and makes its factors *these*
    modules, so training them trains the UNet's LoRA. B starts at zero (the adapted UNet equals the base one), A
    with nn.Linear's default (kaiming-uniform), as peft initializes.
    """

    family = "unet-lora"
    config_class = LoRASettings

    def __init__(self, config: LoRASettings):
        super().__init__()
        if config.rank < 1:
            raise ValueError(f"the LoRA rank must be >= 1, got {config.rank}")
        self.config = config
        for path, (fan_in, fan_out) in config.layers.items():
            *parents, leaf = path.split(".")
            parent = self
            for name in parents:
                if name not in parent._modules:
                    parent.add_module(name, nn.Module())
                parent = parent._modules[name]
            pair = nn.Module()
            pair.lora_A = nn.Linear(fan_in, config.rank, bias=False)
            pair.lora_B = nn.Linear(config.rank, fan_out, bias=False)
            nn.init.zeros_(pair.lora_B.weight)
            parent.add_module(leaf, pair)

    @classmethod
    def create(
        cls, unet, rank: int = 8, alpha: float | None = None, targets: tuple[str, ...] = LORA_TARGETS
    ) -> UNetLoRA:
        """A new LoRA (B = 0) attached to `unet`: its layers are whatever the peft `targets` select."""
        settings = LoRASettings(rank=rank, alpha=float(rank if alpha is None else alpha), targets=tuple(targets))
        _add_adapter(unet, settings)
        settings.layers = {path: [layer.in_features, layer.out_features] for path, layer in _lora_layers(unet).items()}
        lora = cls(settings)
        lora._bind(unet)
        return lora

    def attach(self, unet) -> None:
        """Add this LoRA to `unet` (a diffusers UNet2DConditionModel) as the active peft adapter "preference"."""
        _add_adapter(unet, self.config)
        self._bind(unet)

    def _bind(self, unet) -> None:
        layers = _lora_layers(unet)
        if set(layers) != set(self.config.layers):
            ours, theirs = set(self.config.layers), set(layers)
            extra, missing = sorted(theirs - ours), sorted(ours - theirs)
            raise CheckpointError(
                f"this LoRA does not fit the UNet: the UNet has {len(theirs)} target layers, the LoRA {len(ours)} "
                f"(only in the UNet: {extra[:2]}, only in the LoRA: {missing[:2]}); it was trained on another UNet"
            )
        self.to(unet.device)
        for path, layer in layers.items():
            if [layer.in_features, layer.out_features] != self.config.layers[path]:
                raise CheckpointError(f"LoRA layer {path}: shape {self.config.layers[path]} vs the UNet's "
                                      f"{[layer.in_features, layer.out_features]}; it was trained on another UNet")
            pair = self.get_submodule(path)
            layer.lora_A[ADAPTER_NAME], layer.lora_B[ADAPTER_NAME] = pair.lora_A, pair.lora_B


def _add_adapter(unet, settings: LoRASettings) -> None:
    if ADAPTER_NAME in (getattr(unet, "peft_config", None) or {}):
        raise ValueError(f"the UNet already has a {ADAPTER_NAME!r} LoRA; load the pipeline again to use another")
    unet.add_adapter(settings.peft_config(), adapter_name=ADAPTER_NAME)


def _lora_layers(unet) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {path: m for path, m in unet.named_modules() if isinstance(m, LoraLayer) and ADAPTER_NAME in m.lora_A}


def load_lora(pipe, path: str | Path) -> UNetLoRA:
    """Add the LoRA saved at `path` (OUT/model of `vision-long train preference`) to `pipe.unet`; returns it."""
    lora = load_native(path)
    if not isinstance(lora, UNetLoRA):
        raise CheckpointError(f"{path}: a {lora.family} checkpoint, not a UNet LoRA")
    lora.attach(pipe.unet)
    return lora


# ---- sampling with gradients ----------------------------------------------------------------------------------------
def trailing_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """DDIM timesteps ending one stride above 0: [T - 1, T - 1 - s, ..., s - 1] with s = T // steps (999 ... 19)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"sampling steps must be in [1, {num_train_timesteps}], got {steps}")
    stride = num_train_timesteps // steps
    return [num_train_timesteps - 1 - i * stride for i in range(steps)]


def gradient_steps(steps: int, grad_steps: int, generator: torch.Generator) -> list[int]:
    """Indices of the steps that get gradients: `r + j * (steps // grad_steps)`, r drawn once per call."""
    if not 1 <= grad_steps <= steps or steps % grad_steps:
        raise ValueError(f"grad_steps must divide the sampling steps ({steps}) and be >= 1, got {grad_steps}")
    block = steps // grad_steps
    r = int(torch.randint(block, (1,), generator=generator))
    return [r + j * block for j in range(grad_steps)]


def _noise_prediction(unet, x: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
    return unet(x, t, encoder_hidden_states=context).sample


def denoise_with_grad(
    unet, alphas_cumprod: torch.Tensor, latents: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
    timesteps: list[int], grad_indices: list[int], guidance: float = GUIDANCE, prediction_type: str = "epsilon",
    checkpointing: bool = True,
) -> torch.Tensor:
    """DDIM (eta 0) from x_T = `latents` Tensor[B, C, h, w]; returns the predicted x0 at the last timestep.

    cond / uncond: Tensor[B, N, D]. The UNet sees `x_t.detach()` (doubled for guidance); only the steps in
    `grad_indices` run with gradients (checkpointed). alphas_cumprod: Tensor[T] of the pipeline's scheduler.
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise PipelineError(f"the scheduler predicts {prediction_type!r}; preference optimization needs "
                            "epsilon or v_prediction")
    context = torch.cat([uncond, cond])
    alphas = alphas_cumprod.to(latents.device, torch.float32)
    x = latents
    for i, t in enumerate(timesteps):
        grad = i in grad_indices
        with torch.set_grad_enabled(grad):
            inputs = torch.cat([x.detach()] * 2).to(unet.dtype)
            if grad and checkpointing:
                out = checkpoint(_noise_prediction, unet, inputs, t, context, use_reentrant=False)
            else:
                out = _noise_prediction(unet, inputs, t, context)
        out_uncond, out_cond = out.float().chunk(2)
        out = out_uncond + guidance * (out_cond - out_uncond)
        a = alphas[t]
        if prediction_type == "epsilon":
            eps, x0 = out, (x - (1 - a).sqrt() * out) / a.sqrt()
        else:
            eps, x0 = (1 - a).sqrt() * x + a.sqrt() * out, a.sqrt() * x - (1 - a).sqrt() * out
        if i == len(timesteps) - 1:
            return x0
        a_prev = alphas[timesteps[i + 1]]
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    raise ValueError("no timesteps to sample")


# ---- the reward -----------------------------------------------------------------------------------------------------
def _normalization(encoder) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.transforms import Normalize

    for transform in getattr(encoder.preprocess, "transforms", []):
        if isinstance(transform, Normalize):
            return torch.tensor(transform.mean), torch.tensor(transform.std)
    raise ValueError(f"the reward model's preprocess has no Normalize step: {encoder.preprocess}")


def reward_pixels(images: torch.Tensor, encoder, generator: torch.Generator) -> torch.Tensor:
    """Decoded images Tensor[B, 3, H, W] in [-1, 1] -> the reward model's input Tensor[B, 3, S, S], differentiably:
    one random crop of `CROP_FRACTION` of each side for the batch, antialiased bilinear resize, normalization."""
    x = (images.float() * 0.5 + 0.5).clamp(0, 1)
    height, width = x.shape[-2:]
    ch, cw = max(1, round(height * CROP_FRACTION)), max(1, round(width * CROP_FRACTION))
    top = int(torch.randint(height - ch + 1, (1,), generator=generator))
    left = int(torch.randint(width - cw + 1, (1,), generator=generator))
    x = x[..., top : top + ch, left : left + cw]
    x = F.interpolate(x, size=(encoder.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
    mean, std = (t.to(x.device)[:, None, None] for t in _normalization(encoder))
    return (x - mean) / std


def segment_reward(encoder, images: torch.Tensor, captions: list[str], generator: torch.Generator) -> ScoreParts:
    """The decomposed segment-level score of B decoded images Tensor[B, 3, H, W] (gradients flow to the images).

    Text: per caption, the mean of its sentences' normalized embeddings (no gradient). The common direction is
    taken over the global batch (all ranks), as upstream.
    """
    if not hasattr(encoder, "encode_pixels"):
        raise ValueError(f"the reward model ({type(encoder).__name__}) has no differentiable encode_pixels")
    text = segment_text_embeddings(encoder, captions).clone()  # out of inference mode: used in autograd
    image = F.normalize(encoder.encode_pixels(reward_pixels(images, encoder, generator)).float(), dim=-1)
    return decompose_scores(text, image, common_direction(gather_with_grad(text)))


# ---- one step and the recipe ----------------------------------------------------------------------------------------
@dataclass
class SamplingConfig:
    """Sampling during reward fine-tuning (upstream: 50 steps, 5 with gradients, guidance 7.5)."""

    steps: int = 10
    grad_steps: int = 2
    guidance: float = GUIDANCE
    method: str = "segments"  # prompt encoding for the UNet (encode_long_prompt)
    checkpointing: bool = True  # recompute grad-enabled UNet calls in backward (memory for time)


def preference_step(
    pipe, encoder, captions: list[str], w: float, sampling: SamplingConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """One step's loss (with gradients to the UNet's LoRA) and its logged parts, all scalars: loss, reward (S_w),
    score (S_1), relevant, irrelevant (unweighted), eta. `generator` draws x_T, the gradient steps and the crop."""
    embeds = encode_long_prompt(pipe, captions, "", sampling.method)
    unet, scheduler = pipe.unet, pipe.scheduler
    size = unet.config.sample_size
    latents = torch.randn(len(captions), unet.config.in_channels, size, size, generator=generator)
    timesteps = trailing_timesteps(scheduler.config.num_train_timesteps, sampling.steps)
    x0 = denoise_with_grad(
        unet, scheduler.alphas_cumprod, latents.to(unet.device), embeds["prompt_embeds"],
        embeds["negative_prompt_embeds"], timesteps, gradient_steps(sampling.steps, sampling.grad_steps, generator),
        sampling.guidance, scheduler.config.prediction_type, sampling.checkpointing,
    )
    images = pipe.vae.decode((x0 / pipe.vae.config.scaling_factor).to(pipe.vae.dtype)).sample
    parts = segment_reward(encoder, images, captions, generator)
    reward = parts.reweighted(w)
    logged = {"reward": reward, "score": parts.score, "relevant": parts.relevant, "irrelevant": parts.irrelevant,
              "eta": parts.eta}
    return {"loss": 0.5 * (1 - reward.mean()), **{k: v.detach().mean() for k, v in logged.items()}}


@dataclass
class PreferenceRecipe:
    """`vision-long train preference`: reward fine-tuning of a UNet LoRA (see the module docstring)."""

    out_dir: str
    pipeline: str | None = None  # a local SD-1.x diffusers directory; None: the embedded default
    reward: str = "default"  # the reward model, a load_encoder spec
    w: float = TEXT_IRRELEVANT_WEIGHT
    rank: int = 8
    alpha: float | None = None  # None: the rank (LoRA scale 1)
    targets: tuple[str, ...] = LORA_TARGETS
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    data: SceneData = field(default_factory=lambda: SceneData(batch_size=4))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        steps=200, lr=1e-4, warmup=20, weight_decay=1e-2, beta2=0.999, eps=1e-8, grad_clip=0.3,
        checkpoint_every=50, log_every=1))
    device: str | None = None
    resume: bool = True


def train_preference(recipe: PreferenceRecipe) -> UNetLoRA:
    """Train a LoRA on the pipeline's UNet to maximize the reweighted segment-level reward; saves OUT/model."""
    if not 0 <= recipe.w <= 1:
        raise ValueError(f"w must be in [0, 1], got {recipe.w}")
    gradient_steps(recipe.sampling.steps, recipe.sampling.grad_steps, torch.Generator())  # fail before loading
    device = init_from_env(recipe.device)
    torch.manual_seed(recipe.data.seed)
    pipe = load_pipeline(recipe.pipeline, device=str(device))
    if pipeline_kind(pipe) != SD15:
        raise PipelineError("preference optimization supports Stable Diffusion 1.x layouts only (not SDXL)")
    from vision_long.encoders.loading import load_encoder

    encoder = load_encoder(recipe.reward, device=device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, encoder):
        module.requires_grad_(False)
    lora = UNetLoRA.create(pipe.unet, recipe.rank, recipe.alpha, recipe.targets)
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        _, captions, _ = recipe.data.batch(step, resolution)  # only the captions: the stage needs no images
        generator = torch.Generator().manual_seed((recipe.data.seed * 1_000_003 + step) * world_size() + rank())
        return preference_step(pipe, encoder, captions, recipe.w, recipe.sampling, generator)

    return train(lora, list(lora.parameters()), step_fn, recipe.optim, recipe.out_dir, resume=recipe.resume,
                 run_info={"recipe": "preference", **asdict(recipe)})
