"""ProCLIP's two stages on ShapeScenes (reference notes 2.3-2.4).

Stage 1 (representation inheritance): only the adapter trains. Its outputs on the LLM embeddings of short
and long captions are distilled onto the frozen CLIP text tower's features of the same captions (which the
teacher cuts at its 77-token context, as upstream's does), with L_ins on both views and L_struct on the
short view. Text only, random scenes only: hard-negative groups would teach the student that captions
differing after token 77 mean the same thing.

Stage 2 (contrastive tuning with self-distillation): the image tower, the adapter and the temperature train
with InfoNCE (temperature clamped to 100) plus `reg_weight` x (L_ins + L_struct) between the image tower
and an EMA copy of it. Each random scene contributes its long or its short caption (a seeded coin, as
LLM2CLIP samples one of its caption sets); hard-negative groups always use the long caption.

The LLM is frozen, so the embeddings of the whole training pool are computed once (and cached on disk).
Upstream publishes neither lambda nor the EMA momentum; our defaults (1.0 and 0.999) are argued in
`docs/proclip.md`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from vision_long.data.scenes import (
    TRAIN_SEEDS,
    Scene,
    hard_negative_group,
    random_scene,
)
from vision_long.distributed import init_from_env, is_main, rank, world_size
from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder
from vision_long.encoders.loading import load_encoder
from vision_long.encoders.longclip_loss import clip_loss
from vision_long.encoders.proclip import AdapterConfig, ProCLIPConfig, ProCLIPEncoder
from vision_long.encoders.proclip_loss import EMATeacher, distillation_loss
from vision_long.training.shapescenes import HARD_GROUP_SIZE, MAX_LOGIT_SCALE
from vision_long.training.trainer import OptimConfig, train

REG_WEIGHT = 1.0  # lambda: not published upstream (see docs/proclip.md)
EMA_MOMENTUM = 0.999  # not published upstream (see docs/proclip.md)
POOL_SEED_OFFSET = 7_000_000  # pool scenes sit in their own part of the training seed range


@dataclass
class ScenePool:
    """A fixed pool of training scenes: `scenes` random ones and `hard_groups` hard-negative groups of 4.

    Grid sizes cycle through `grids`. The pool is fixed (rather than endless like the CLIP recipes' data)
    because every caption must go through the frozen LLM once.
    """

    grids: tuple[int, ...] = (3, 4, 5, 6)
    scenes: int = 3000
    hard_groups: int = 500
    seed: int = 0

    def build(self) -> tuple[list[Scene], list[list[Scene]]]:
        first = POOL_SEED_OFFSET + self.seed * 100_003
        seeds = [TRAIN_SEEDS[(first + i) % len(TRAIN_SEEDS)] for i in range(self.scenes + self.hard_groups)]
        grid = [self.grids[i % len(self.grids)] for i in range(len(seeds))]
        scenes = [random_scene(seeds[i], grid[i]) for i in range(self.scenes)]
        groups = [hard_negative_group(seeds[i], grid[i], HARD_GROUP_SIZE) for i in range(self.scenes, len(seeds))]
        return scenes, groups


@dataclass
class ProCLIPRecipe:
    """`vision-long train proclip --stage 1|2`.

    init: stage 1: the CLIP to align to (its text tower is the teacher, its image tower is copied);
          stage 2: the stage-1 ProCLIP directory.
    """

    out_dir: str
    stage: int = 1
    init: str = "default-77"
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(chunk_long=True))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    structure_form: str = "code"
    reg_weight: float = REG_WEIGHT
    ema_momentum: float = EMA_MOMENTUM
    pool: ScenePool = field(default_factory=ScenePool)
    batch_size: int = 64  # per rank
    hard_fraction: float = 0.5  # stage 2: share of each batch made of hard-negative groups
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=500, lr=1e-3, warmup=50, weight_decay=0.05))
    llm_cache: str | None = None  # default: OUT/llm-cache
    device: str | None = None
    resume: bool = True


def _batch_rows(n: int, batch: int, step: int, seed: int) -> list[int]:
    """This rank's `batch` rows of a pass over `n` items reshuffled every epoch (a pure function of step)."""
    per_step = batch * world_size()
    steps_per_epoch = max(1, n // per_step)
    epoch, offset = divmod(step, steps_per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = offset * per_step + rank() * batch
    return order[start : start + batch].tolist()


def _embed_pool(llm: LLMEmbedder, texts: list[str], what: str) -> torch.Tensor:
    if is_main():
        print(f"embedding {len(texts)} {what} with the frozen LLM (cached after the first run)")
    return torch.cat([llm.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]).cpu()


def train_proclip(recipe: ProCLIPRecipe) -> ProCLIPEncoder:
    """Run stage 1 or stage 2 of ProCLIP and save the model to `OUT/model`."""
    if recipe.stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {recipe.stage}")
    device = init_from_env(recipe.device)
    torch.manual_seed(recipe.pool.seed)
    if recipe.stage == 1:
        clip = load_encoder(recipe.init, stretch=False)
        llm = LLMEmbedder(recipe.llm)
        config = ProCLIPConfig(embed_dim=clip.embed_dim, llm_dim=llm.dim, llm=recipe.llm, adapter=recipe.adapter,
                               vision=clip.config.vision)
        model = ProCLIPEncoder(config, llm)
        model.visual.load_state_dict(clip.visual.state_dict())
    else:
        clip = None
        model = load_encoder(recipe.init)
        if model.family != "proclip":
            raise ValueError(f"stage 2 starts from a stage-1 ProCLIP model; {recipe.init} is a {model.family} model")
    model.llm.use_cache(recipe.llm_cache or f"{recipe.out_dir}/llm-cache")
    model = model.to(device)
    scenes, groups = recipe.pool.build()
    info = {"recipe": f"proclip-stage{recipe.stage}", **asdict(recipe)}
    if recipe.stage == 1:
        return _stage1(recipe, model, clip.to(device), scenes, info)
    return _stage2(recipe, model, scenes, groups, info)


def _stage1(recipe: ProCLIPRecipe, model: ProCLIPEncoder, clip, scenes: list[Scene], info: dict) -> ProCLIPEncoder:
    short = [s.short_caption() for s in scenes]
    long = [s.caption() for s in scenes]
    llm_short, llm_long = _embed_pool(model.llm, short, "short captions"), _embed_pool(model.llm, long, "long captions")
    clip_short = clip.encode_text(short, truncate=True).cpu()
    clip_long = clip.encode_text(long, truncate=True).cpu()  # the teacher reads 77 tokens of each, as upstream's
    model.requires_grad_(False)
    model.adapter.requires_grad_(True)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        rows = _batch_rows(len(scenes), recipe.batch_size, step, recipe.pool.seed)
        s = F.normalize(model.encode_llm_embeddings(llm_short[rows]), dim=-1)
        sl = F.normalize(model.encode_llm_embeddings(llm_long[rows]), dim=-1)
        t, tl = clip_short[rows].to(s.device), clip_long[rows].to(s.device)
        short_parts = distillation_loss(s, t, recipe.structure_form)  # L_ins + L_struct on the short view
        long_ins = F.mse_loss(sl, tl, reduction="sum")  # L_ins only on the second view
        return {"loss": short_parts["loss"] + long_ins, "instance": short_parts["instance"] + long_ins.detach(),
                "structure": short_parts["structure"]}

    params = list(model.adapter.parameters())
    return train(model, params, step_fn, recipe.optim, recipe.out_dir, None, recipe.resume, info)


def _stage2(
    recipe: ProCLIPRecipe, model: ProCLIPEncoder, scenes: list[Scene], groups: list[list[Scene]], info: dict
) -> ProCLIPEncoder:
    hard = [s for g in groups for s in g]
    llm_short = _embed_pool(model.llm, [s.short_caption() for s in scenes], "short captions")
    llm_long = _embed_pool(model.llm, [s.caption() for s in scenes], "long captions")
    llm_hard = _embed_pool(model.llm, [s.caption() for s in hard], "hard-negative captions")
    teacher = EMATeacher(model.visual, recipe.ema_momentum)
    n_groups = int(recipe.batch_size * recipe.hard_fraction) // HARD_GROUP_SIZE if groups else 0
    n_random = recipe.batch_size - n_groups * HARD_GROUP_SIZE
    model.requires_grad_(True)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        rows = _batch_rows(len(scenes), n_random, step, recipe.pool.seed)
        coin = random.Random(f"proclip-view/{recipe.pool.seed}/{step}/{rank()}")
        use_long = [coin.random() < 0.5 for _ in rows]
        text = torch.stack([(llm_long if lg else llm_short)[r] for r, lg in zip(rows, use_long, strict=True)])
        images = [scenes[r] for r in rows]
        if n_groups:
            picked = _batch_rows(len(groups), n_groups, step, recipe.pool.seed + 1)
            hard_rows = [g * HARD_GROUP_SIZE + k for g in picked for k in range(HARD_GROUP_SIZE)]
            text = torch.cat([text, llm_hard[hard_rows]])
            images += [hard[r] for r in hard_rows]
        pixels = torch.stack([model.preprocess(s.render(model.image_size)) for s in images]).to(model.device)
        image = F.normalize(model.encode_pixels(pixels), dim=-1)
        txt = F.normalize(model.encode_llm_embeddings(text), dim=-1)
        info_nce = clip_loss(image, txt, model.logit_scale.exp())
        reg = distillation_loss(image, F.normalize(teacher(pixels), dim=-1), recipe.structure_form)
        return {"loss": info_nce + recipe.reg_weight * reg["loss"], "info_nce": info_nce.detach(),
                "reg": reg["loss"].detach(), "scale": model.logit_scale.exp().detach()}

    def after_step() -> None:
        teacher.update(model.visual)
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    params = [p for p in model.parameters() if p.requires_grad]
    return train(model, params, step_fn, recipe.optim, recipe.out_dir, after_step, recipe.resume, info,
                 aux={"ema_teacher": teacher})

