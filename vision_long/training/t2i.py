"""`vision-long train t2i`: the small ShapeScenes text-to-image pipeline (`diffusion.small_sd`) in two stages.

stage "vae":  an `AutoencoderKL` learns to reconstruct rendered scenes: L1 + `kl_weight` x KL, LDM's autoencoder
              objective without its perceptual and adversarial terms (flat-colored scenes need neither). Then the
              latents' scaling factor is set to 1 / their std over `SCALING_BATCHES` batches, as LDM does, so the
              UNet sees unit-variance latents. Writes OUT/vae (diffusers layout).
stage "unet": a `UNet2DConditionModel` learns noise prediction (epsilon MSE, Min-SNR weighted) on the frozen
              VAE's latents of rendered scenes, conditioned on their long captions through the frozen text encoder by LongAlign
              segment encoding: `encode_long_prompt(pipe, captions, "", "segments")`, exactly what generation
              runs, so long prompts mean at inference what they meant in training. A `condition_dropout` share of
              each batch gets the empty prompt's conditioning instead (classifier-free guidance). Writes
              OUT/pipeline (`StableDiffusionPipeline.save_pretrained` layout).

stage "unet" with conditioning "segments+llm" (LongAlign's LongSD branch on our own pipeline): starting from a
              finished pipeline (`pipeline`), a text adapter (`conditioning.TextAdapter`) over a frozen LLM's
              per-token states (default: the offline MiniLM) and a UNet LoRA learn the same loss on conditioning
              `encode_long_prompt(pipe, captions, "", "segments+llm", llm=branch)` = [240 segment rows | `tokens`
              adapted LLM rows], on scenes of grids up to 6 x 6 (captions up to ~750 tokens, where the LLM sees
              what 240 CLIP rows cannot). Writes OUT/adapter (`conditioning.save_llm_conditioning`: adapter, llm.json,
              lora/), which `vision-long generate --adapter` loads. LongAlign's stage 1 trains the same two parts
              (its LoRA at rank 32 also adapts ResNet convolutions; ours adapts the Linear layers of attention and
              GEGLU, what `UNetLoRA` holds) starting from LaVi-Bridge's adapter; ours starts from scratch with the
              adapter's last projection at zero, so the new rows carry no value at step 0, and without the
              adapter's dropout (upstream 0.1) so that resuming stays exact.

All stages run through `trainer.train` (checkpoints, exact resume). Batches come from `SceneData` (a pure
function of seed and step) and the noise, timesteps and dropout of step s from a generator seeded by (seed, s),
so an interrupted run resumes exactly. The captions are encoded on the fly, so every step sees new scenes: a
batch's segments go through the small text tower in one packed call, 0.2-0.3 s of a 1.5 s UNet step on 2 CPU
cores (measured).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from vision_long.data.scenes import DEFAULT_GRID
from vision_long.diffusion.pipelines import (
    SD15,
    PipelineError,
    detect_layout,
    load_pipeline,
)
from vision_long.diffusion.preference import LORA_TARGETS, UNetLoRA
from vision_long.diffusion.prompts import LLM_METHOD, encode_long_prompt
from vision_long.diffusion.small_sd import (
    DEFAULT_CONFIG,
    ComponentConfig,
    DiffusersComponent,
    build_pipeline,
    save_pipeline,
    small_sd_config,
    text_encoder_from_clip,
)
from vision_long.distributed import init_from_env, is_main
from vision_long.encoders.llm_embedder import MINILM, LLMConfig, LLMEmbedder
from vision_long.training.shapescenes import SceneData
from vision_long.training.trainer import OptimConfig, train

if TYPE_CHECKING:
    from vision_long.diffusion.conditioning import LLMBranch

STAGES = ("vae", "unet")
CONDITIONINGS = ("segments", LLM_METHOD)
KL_WEIGHT = 1e-6  # LDM / SD's AutoencoderKL: 1e-6 x KL against a reconstruction loss summed over pixels
CONDITION_DROPOUT = 0.1  # LongAlign / SD fine-tuning: caption dropout 0.1 for classifier-free guidance
MIN_SNR_GAMMA = 5.0  # Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy" (ICCV 2023)
SCALING_BATCHES = 8  # batches whose latents measure the VAE's scaling factor
VAE_DIR = "vae"
PIPELINE_DIR = "pipeline"
ADAPTER_DIR = "adapter"
LLM_TOKENS = 768  # rows of the LLM branch: a full 6 x 6 caption is 700-750 MiniLM tokens (measured)
LLM_GRIDS = (3, 4, 5, 6)  # scenes of the segments+llm stage: captions from ~150 to ~750 tokens
ADAPTER_WIDTH = 256  # TextAdapter int_dim for the ShapeScenes pipeline (LaVi-Bridge's T5 adapter: 896)
LLM_LORA_TARGETS = (*LORA_TARGETS, "ff.net.0.proj")  # attention projections and GEGLU (LongAlign's "extended" set)
_STEP_SEED = 1_000_003  # step generators are seeded with seed * _STEP_SEED + step
WEIGHT_DECAY = 0.01  # SD-1.5's AdamW weight decay
# Scene density: occupancy drawn from [0.1, 1], so an object sentence is sometimes one of few (the plainest evidence
# of which words draw which cell) and both sparse and full grids are seen.
SCENE_FILL = (0.1, 1.0)


@dataclass(frozen=True)
class StageDefaults:
    """A stage's default schedule, sized for the 90-minute 2-core budget (see scripts/build_default_t2i.sh)."""

    steps: int
    batch_size: int
    lr: float
    warmup: int


STAGE_DEFAULTS = {
    "vae": StageDefaults(steps=2400, batch_size=16, lr=1e-3, warmup=50),  # 1500 still loses half the colors
    "unet": StageDefaults(steps=2400, batch_size=32, lr=1e-3, warmup=100),
    LLM_METHOD: StageDefaults(steps=1200, batch_size=16, lr=5e-4, warmup=50),  # stage unet, conditioning segments+llm
}


@dataclass
class LLMSettings:
    """What conditioning "segments+llm" trains: a TextAdapter (LLM width -> `adapter_width` -> the UNet's
    cross-attention width) over `llm`'s per-token states in `tokens` rows, and a UNet LoRA of `rank`."""

    llm: str = MINILM
    tokens: int = LLM_TOKENS
    adapter_width: int = ADAPTER_WIDTH
    rank: int = 8


@dataclass
class T2IRecipe:
    """One stage of `vision-long train t2i`.

    config: a `small_sd.CONFIGS` name or a JSON file of `SmallSDConfig` fields.
    vae: stage "unet": the stage-"vae" run directory (its OUT/vae is used, frozen).
    text_encoder: stage "unet": the CLIP whose text tower conditions the UNet (a `load_encoder` spec).
    text_lr_scale: stage "unet", conditioning "segments": 0 keeps the text tower frozen (LongAlign, SD); > 0 tunes
        it with the UNet at this multiple of the learning rate, and the pipeline keeps the tuned tower.
    conditioning: stage "unet": "segments" (train the UNet) or "segments+llm" (train an LLM adapter and a UNet
        LoRA on the finished `pipeline`, frozen otherwise; `llm` says how).
    """

    out_dir: str
    stage: str
    config: str = DEFAULT_CONFIG
    vae: str | None = None
    text_encoder: str = "default"
    conditioning: str = "segments"
    pipeline: str | None = None
    llm: LLMSettings = field(default_factory=LLMSettings)
    data: SceneData = field(default_factory=lambda: SceneData(grids=(DEFAULT_GRID,), batch_size=32, fill=SCENE_FILL))
    optim: OptimConfig = field(default_factory=OptimConfig)
    kl_weight: float = KL_WEIGHT
    condition_dropout: float = CONDITION_DROPOUT
    snr_gamma: float = MIN_SNR_GAMMA
    text_lr_scale: float = 0.0
    device: str | None = None
    resume: bool = True

    def check(self) -> None:
        """ValueError for an unusable recipe, before anything is built."""
        if self.stage not in STAGES:
            raise ValueError(f"unknown t2i stage {self.stage!r}; expected one of {', '.join(STAGES)}")
        if not 0 <= self.condition_dropout < 1:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.snr_gamma < 0:
            raise ValueError(f"snr_gamma must be >= 0 (0: plain MSE), got {self.snr_gamma}")
        if self.text_lr_scale < 0:
            raise ValueError(f"text_lr_scale must be >= 0 (0: frozen text tower), got {self.text_lr_scale}")
        if self.text_lr_scale and (self.stage != "unet" or self.conditioning != "segments"):
            raise ValueError("text_lr_scale tunes the text tower while a new UNet trains (stage unet, conditioning "
                             "segments)")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {self.conditioning!r}; expected one of {', '.join(CONDITIONINGS)}")
        if self.conditioning == LLM_METHOD:
            if self.stage != "unet":
                raise ValueError("conditioning 'segments+llm' trains on a finished pipeline (stage unet), not the VAE")
            if self.pipeline is None:
                raise ValueError("conditioning 'segments+llm' starts from a trained pipeline: pass --pipeline DIR "
                                 "(OUT/pipeline of 'train t2i --stage unet')")
            if detect_layout(self.pipeline) != SD15:
                raise PipelineError(f"{self.pipeline}: conditioning 'segments+llm' trains SD-1.x layouts only")
            if min(self.llm.tokens, self.llm.adapter_width, self.llm.rank) < 1:
                raise ValueError(f"LLM tokens, adapter width and LoRA rank must be >= 1, got {self.llm}")
        elif self.pipeline is not None:
            raise ValueError("--pipeline is for --conditioning segments+llm (stage unet trains a new UNet)")
        elif self.stage == "unet":
            vae_dir(self.vae)


def vae_dir(run_dir: str | None) -> Path:
    """The trained VAE of a stage-"vae" run directory; ValueError when there is none."""
    if run_dir is None:
        raise ValueError("stage 'unet' needs the trained VAE: pass --vae RUN_DIR of a finished 'train t2i --stage vae'")
    path = Path(run_dir) / VAE_DIR
    if not (path / "config.json").is_file():
        raise ValueError(f"{run_dir}: no trained VAE ({path}/config.json missing); run 'train t2i --stage vae' first")
    return path


def pixels(images: list, device: torch.device) -> torch.Tensor:
    """PIL RGB images -> Tensor[B, 3, H, W] in [-1, 1] (the range SD's VAE encodes and decodes)."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).div_(127.5).sub_(1).to(device)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one step's noise, timesteps and dropout: a pure function of (seed, step)."""
    return torch.Generator().manual_seed(seed * _STEP_SEED + step)


def vae_loss(vae, images: torch.Tensor, generator: torch.Generator, kl_weight: float) -> dict[str, torch.Tensor]:
    """L1 reconstruction of images Tensor[B, 3, H, W] from a posterior sample, + kl_weight x KL per pixel value.

    The KL (summed over latent entries, per image) is divided by the image's 3 H W values: the same ratio as
    LDM's sums over pixels and latents.
    """
    posterior = vae.encode(images).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(images.device)
    reconstruction = vae.decode(posterior.mean + posterior.std * noise).sample
    l1 = (reconstruction - images).abs().mean()
    kl = posterior.kl().mean() / images[0].numel()
    return {"loss": l1 + kl_weight * kl, "l1": l1.detach(), "kl": kl.detach()}


@torch.no_grad()
def latent_scaling_factor(vae, data: SceneData, image_size: int, first_step: int) -> float:
    """1 / std of the posterior means of `SCALING_BATCHES` batches from `first_step` on (LDM's rescaling)."""
    latents = [vae.encode(pixels(data.batch(first_step + i, image_size)[0], vae.device)).latent_dist.mean
               for i in range(SCALING_BATCHES)]
    return float(1 / torch.cat(latents).std())


def train_vae(recipe: T2IRecipe) -> Path:
    """Stage "vae": train the autoencoder, set its scaling factor, write OUT/vae; returns that directory."""
    config = small_sd_config(recipe.config)
    device = init_from_env(recipe.device)
    torch.manual_seed(recipe.data.seed)
    component = DiffusersComponent(ComponentConfig("AutoencoderKL", config.vae_config())).to(device)
    vae = component.model

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, _, _ = recipe.data.batch(step, config.image_size)
        return vae_loss(vae, pixels(images, device), step_generator(recipe.data.seed, step), recipe.kl_weight)

    params = [p for p in component.parameters() if p.requires_grad]
    train(component, params, step_fn, recipe.optim, recipe.out_dir, None, recipe.resume, run_info(recipe))
    out = Path(recipe.out_dir) / VAE_DIR
    if is_main():
        vae.register_to_config(scaling_factor=latent_scaling_factor(vae, recipe.data, config.image_size,
                                                                    recipe.optim.steps))
        vae.save_pretrained(str(out), safe_serialization=True)
    return out


def unet_loss(pipe, images: torch.Tensor, captions: list[str], generator: torch.Generator,
              condition_dropout: float, snr_gamma: float = MIN_SNR_GAMMA,
              llm: LLMBranch | None = None, text_grad: bool = False) -> dict[str, torch.Tensor]:
    """Epsilon-prediction MSE of `pipe.unet` on images Tensor[B, 3, H, W] and their captions.

    Latents Tensor[B, C, h, w] = VAE posterior sample x scaling factor; conditioning Tensor[B, 240, W] from
    LongAlign segments, or Tensor[B, 240 + tokens, W] from segments+llm when `llm` is given (gradients reach its
    adapter; with `text_grad` they also reach the text encoder), the empty prompt's for a `condition_dropout`
    share; timesteps uniform over training.
    Each image's MSE is weighted by min(SNR_t, snr_gamma) / SNR_t (Min-SNR: nearly noise-free steps, which
    teach little beyond denoising, stop dominating; 0 gives the plain MSE). "mse" logs the unweighted loss.
    """
    device = images.device
    with torch.no_grad():
        posterior = pipe.vae.encode(images).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
        latents = (posterior.mean + posterior.std * noise) * pipe.vae.config.scaling_factor
    conditions = encode_long_prompt(pipe, captions, "", method=LLM_METHOD if llm else "segments", llm=llm,
                                    text_grad=text_grad)
    count = len(captions)
    dropped = (torch.rand(count, generator=generator) < condition_dropout).to(device)
    context = torch.where(dropped[:, None, None], conditions["negative_prompt_embeds"], conditions["prompt_embeds"])
    noise = torch.randn(latents.shape, generator=generator).to(device)
    timesteps = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (count,), generator=generator).to(device)
    noisy = pipe.scheduler.add_noise(latents, noise, timesteps)
    prediction = pipe.unet(noisy, timesteps, encoder_hidden_states=context).sample
    per_image = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
    if not snr_gamma:
        return {"loss": per_image.mean()}
    alphas = pipe.scheduler.alphas_cumprod.to(device)[timesteps]
    snr = alphas / (1 - alphas)
    weight = snr.clamp(max=snr_gamma) / snr
    return {"loss": (weight * per_image).mean(), "mse": per_image.mean().detach()}


def train_unet(recipe: T2IRecipe) -> Path:
    """Stage "unet": train the UNet against the frozen VAE and the text encoder (frozen, or tuned at
    `text_lr_scale` times the learning rate), write OUT/pipeline; returns it."""
    from diffusers import AutoencoderKL

    config = small_sd_config(recipe.config)
    device = init_from_env(recipe.device)
    vae = AutoencoderKL.from_pretrained(str(vae_dir(recipe.vae)), local_files_only=True)
    if vae.config.sample_size != config.image_size or vae.config.latent_channels != config.latent_channels:
        raise ValueError(f"{recipe.vae}: the VAE is for {vae.config.sample_size} px / {vae.config.latent_channels} "
                         f"latent channels, the config {recipe.config!r} for {config.image_size} px / "
                         f"{config.latent_channels}")
    text_encoder, tokenizer = text_encoder_from_clip(recipe.text_encoder)
    torch.manual_seed(recipe.data.seed)
    component = DiffusersComponent(
        ComponentConfig("UNet2DConditionModel", config.unet_config(text_encoder.config.hidden_size))
    )
    pipe = build_pipeline(text_encoder, tokenizer, vae.eval().requires_grad_(False), component.model)
    pipe.to(device)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, captions, _ = recipe.data.batch(step, config.image_size)
        return unet_loss(pipe, pixels(images, device), captions, step_generator(recipe.data.seed, step),
                         recipe.condition_dropout, recipe.snr_gamma, text_grad=recipe.text_lr_scale > 0)

    params = [p for p in component.parameters() if p.requires_grad]
    tuned = {}
    if recipe.text_lr_scale:
        tuned = {"text_encoder": text_encoder.requires_grad_(True)}
    train(component, params, step_fn, recipe.optim, recipe.out_dir, None, recipe.resume, run_info(recipe),
          aux=tuned, scaled_params=[(list(text_encoder.parameters()), recipe.text_lr_scale)] if tuned else ())
    text_encoder.eval().requires_grad_(False)
    out = Path(recipe.out_dir) / PIPELINE_DIR
    if is_main():
        save_pipeline(pipe.to("cpu"), out)
    return out


def train_llm_conditioning(recipe: T2IRecipe) -> Path:
    """Stage "unet" with conditioning "segments+llm": train a text adapter over the frozen LLM and a UNet LoRA
    on the finished pipeline (everything else frozen), write OUT/adapter; returns that directory.

    The trainer's model is the LoRA (OUT/model); the adapter trains beside it and is checkpointed as `aux`.
    """
    from vision_long.diffusion.conditioning import (
        LLMBranch,
        LLMBranchConfig,
        TextAdapter,
        save_llm_conditioning,
    )

    device = init_from_env(recipe.device)
    pipe = load_pipeline(recipe.pipeline, device=str(device))
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    settings = recipe.llm
    embedder = LLMEmbedder(LLMConfig(name=settings.llm)).to(device)
    torch.manual_seed(recipe.data.seed)
    adapter = TextAdapter(embedder.dim, settings.adapter_width, pipe.unet.config.cross_attention_dim, dropout=0.0)
    torch.nn.init.zeros_(adapter.ff2.net[2].weight)
    torch.nn.init.zeros_(adapter.ff2.net[2].bias)
    adapter.to(device)
    branch = LLMBranch(embedder, adapter, LLMBranchConfig(llm=embedder.config, tokens=settings.tokens))
    lora = UNetLoRA.create(pipe.unet, settings.rank, targets=LLM_LORA_TARGETS)
    image_size = pipe.unet.config.sample_size * pipe.vae_scale_factor

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, captions, _ = recipe.data.batch(step, image_size)
        return unet_loss(pipe, pixels(images, device), captions, step_generator(recipe.data.seed, step),
                         recipe.condition_dropout, recipe.snr_gamma, llm=branch)

    params = [*lora.parameters(), *adapter.parameters()]
    train(lora, params, step_fn, recipe.optim, recipe.out_dir, None, recipe.resume, run_info(recipe),
          aux={"adapter": adapter})
    out = Path(recipe.out_dir) / ADAPTER_DIR
    if is_main():
        save_llm_conditioning(adapter.eval(), branch.config, lora, out)
    return out


def train_t2i(recipe: T2IRecipe) -> Path:
    """Run `recipe.stage` (with `recipe.conditioning`); returns the directory it wrote (OUT/vae, OUT/pipeline or
    OUT/adapter)."""
    recipe.check()
    if recipe.stage == "vae":
        return train_vae(recipe)
    return train_llm_conditioning(recipe) if recipe.conditioning == LLM_METHOD else train_unet(recipe)


def run_info(recipe: T2IRecipe) -> dict:
    """What `run.json` records: the recipe and the resolved architecture (of the new UNet stages)."""
    if recipe.conditioning == LLM_METHOD:
        return {"recipe": "t2i-segments+llm", **asdict(recipe)}
    return {"recipe": f"t2i-{recipe.stage}", **asdict(recipe), "architecture": small_sd_config(recipe.config).to_dict()}
