"""ShapeScenes recipes: a 77-token CLIP from scratch, then Long-CLIP fine-tuning of it.

`train_clip` is the stand-in for "a pretrained CLIP": trained at context 77 on long captions truncated to 77
tokens. `train_longclip` applies the Long-CLIP recipe to it (reference notes 1.5): stretch the positions
(keep 20, ratio 4), freeze the stretched table and train the residual one, reset the temperature to 100, and
fine-tune everything with L_long + L_short, where L_short matches short captions (the first sentence) to the
images' top-32 principal components (PCM) with label smoothing 0.1.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from vision_long.data.scenes import (
    DEFAULT_FILL,
    TRAIN_SEEDS,
    hard_negative_group,
    random_scene,
    shared_prefix_group,
)
from vision_long.distributed import init_from_env, rank, world_size
from vision_long.encoders.loading import load_encoder
from vision_long.encoders.longclip import LongCLIP
from vision_long.encoders.longclip_loss import LongCLIPLoss, clip_loss
from vision_long.encoders.model_configs import model_config
from vision_long.tokenization import CLIP_CONTEXT
from vision_long.training.trainer import OptimConfig, train

HARD_GROUP_SIZE = 4
MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps its temperature at 100
LONGCLIP_LOGIT_SCALE = math.log(100)  # Long-CLIP re-initialises it to 100 (and does not clamp)


@dataclass
class SceneData:
    """Which scenes a run sees: grid sizes drawn uniformly from `grids`, seeds from the training range.

    `fill` is the range each random scene's cell-occupancy probability is drawn from (uniformly, seeded by the
    scene). A wide range makes sparse scenes whose first sentences describe any cell, so a model trained on
    captions cut at 77 tokens still sees every image region named: the stand-in for a pretrained CLIP, which
    has seen captions about every part of an image, only never long ones.

    `hard_fraction` of each batch is made of hard-negative groups of 4 (scenes that differ only in one object
    described after token 77). Random scenes differ in their first objects already, so without such groups a
    contrastive batch never asks a model to read past the first sentences. A 77-token model cannot use them
    (their truncated captions are identical), so they only help a model that reads long text.

    `early_hard_fraction` adds groups that differ in one object described within the first 77 tokens, drawn
    from scenes of density `fill`: in sparse scenes that object can sit in any cell. Random batches are told
    apart by their first objects alone, so without these groups the image tower never learns to see the lower
    rows of a dense grid (their embeddings barely move when a bottom object changes); with them, the 77-token
    model learns fine-grained detail everywhere in the image, as a real pretrained CLIP has.

    `partial_captions` (0 < p <= 1, None: off) replaces each long caption by `Scene.partial_caption(p)`: a random
    subset of the object sentences. For the 77-token stand-in: every cell of a dense grid gets named within 77
    tokens, so its image tower sees the whole image, as a real pretrained CLIP's does.

    `prefix_fraction` adds groups of 4 that share the first 77 caption tokens and redraw every object described
    later (`shared_prefix_group`): a strong signal for reading past token 77 that, unlike the one-attribute
    hard negatives, does not vanish while both towers are still blind to the lower cells.
    """

    grids: tuple[int, ...] = (3,)
    batch_size: int = 64  # per rank
    seed: int = 0
    hard_fraction: float = 0.0
    fill: tuple[float, float] = (DEFAULT_FILL, DEFAULT_FILL)
    early_hard_fraction: float = 0.0
    prefix_fraction: float = 0.0
    partial_captions: float | None = None

    def __post_init__(self) -> None:
        lo, hi = self.fill
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"fill must be a range 0 < lo <= hi <= 1, got {self.fill}")
        if self.hard_fraction + self.early_hard_fraction + self.prefix_fraction > 1:
            raise ValueError("hard_fraction + early_hard_fraction + prefix_fraction must be at most 1")
        if self.partial_captions is not None and not 0 < self.partial_captions <= 1:
            raise ValueError(f"partial_captions must be in (0, 1] or None, got {self.partial_captions}")

    def batch(self, step: int, image_size: int) -> tuple[list, list[str], list[str]]:
        """Images (PIL), long captions and short captions of this rank's batch at `step`.

        Scene seeds are a pure function of (seed, step, rank), so every rank sees different scenes and a
        resumed run sees exactly the scenes it would have seen.
        """
        first = (self.seed * 1_000_003 + (step * world_size() + rank()) * self.batch_size) % len(TRAIN_SEEDS)
        late = int(self.batch_size * self.hard_fraction) // HARD_GROUP_SIZE
        early = int(self.batch_size * self.early_hard_fraction) // HARD_GROUP_SIZE
        scenes = [
            scene
            for g in range(late)
            for scene in hard_negative_group(TRAIN_SEEDS[(first + g) % len(TRAIN_SEEDS)], self._grid(first + g))
        ]
        prefix = int(self.batch_size * self.prefix_fraction) // HARD_GROUP_SIZE
        scenes += [scene for g in range(late, late + early) for scene in self._early_group(first + g)]
        scenes += [
            scene
            for g in range(late + early, late + early + prefix)
            for scene in shared_prefix_group(TRAIN_SEEDS[(first + g) % len(TRAIN_SEEDS)], self._grid(first + g))
        ]
        groups = late + early + prefix
        scenes += [
            random_scene(TRAIN_SEEDS[(first + i) % len(TRAIN_SEEDS)], self._grid(first + i), self._fill(first + i))
            for i in range(groups, self.batch_size - len(scenes) + groups)
        ]
        captions = [s.caption() if self.partial_captions is None else s.partial_caption(self.partial_captions, step)
                    for s in scenes]
        return [s.render(image_size) for s in scenes], captions, [s.short_caption() for s in scenes]

    def _grid(self, index: int) -> int:
        return self.grids[index % len(self.grids)]

    def _early_group(self, index: int) -> list:
        """A group differing in one object the 77-token caption describes; the next seed if a scene has none."""
        for attempt in range(100):
            seed = TRAIN_SEEDS[(index + attempt * 7919) % len(TRAIN_SEEDS)]
            try:
                return hard_negative_group(seed, self._grid(index), fill=self._fill(index), late=False)
            except ValueError:  # e.g. a first sentence too long to end before token 76
                continue
        raise RuntimeError(f"no early hard-negative group found near scene index {index}")

    def _fill(self, index: int) -> float:
        lo, hi = self.fill
        return lo if lo == hi else random.Random(f"fill/{index}").uniform(lo, hi)


def _pixels(model: LongCLIP, images: list) -> torch.Tensor:
    return torch.stack([model.preprocess(im) for im in images]).to(model.device)


def _text(model: LongCLIP, captions: list[str]) -> torch.Tensor:
    """Normalized text features, captions cut at the model's context; packed, so padding costs nothing."""
    lists, _ = model.tokenizer.tokenize_to_lists(captions, truncate=True)
    return F.normalize(model.encode_id_lists(lists), dim=-1)


@dataclass
class ClipRecipe:
    """`vision-long train clip`: a small CLIP from scratch at context 77 (architecture `model`), or, with `init`,
    more training of a 77-token model of this package (e.g. on other captions: a second curriculum stage)."""

    out_dir: str
    model: str = "shapescenes-small"
    init: str | None = None
    data: SceneData = field(default_factory=SceneData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=3000, lr=1e-3, warmup=200))
    device: str | None = None
    resume: bool = True


def train_clip(recipe: ClipRecipe) -> LongCLIP:
    """Train a plain CLIP on ShapeScenes long captions truncated to its 77-token context."""
    device = init_from_env(recipe.device)
    torch.manual_seed(recipe.data.seed)
    if recipe.init is None:
        model = LongCLIP(model_config(recipe.model))
    else:
        model = load_encoder(recipe.init, stretch=False)
        if not isinstance(model, LongCLIP) or model.context_length != CLIP_CONTEXT:
            raise ValueError(f"{recipe.init}: train clip continues a 77-token CLIP of this package, got "
                             f"{type(model).__name__} with context {getattr(model, 'context_length', None)}")
    model = model.to(device)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, captions, _ = recipe.data.batch(step, model.image_size)
        image = F.normalize(model.encode_pixels(_pixels(model, images)), dim=-1)
        return {"loss": clip_loss(image, _text(model, captions), model.logit_scale.exp())}

    def clamp_temperature() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    params = [p for p in model.parameters() if p.requires_grad]
    return train(model, params, step_fn, recipe.optim, recipe.out_dir, clamp_temperature, recipe.resume,
                 {"recipe": "clip", **asdict(recipe)})


@dataclass
class LongCLIPRecipe:
    """`vision-long train longclip`: Long-CLIP fine-tuning of a 77-token CLIP."""

    out_dir: str
    init: str = "default-77"
    positions: str = "kps"  # "kps" (keep 20, ratio 4) or "interpolate" (the naive ablation)
    loss: LongCLIPLoss = field(default_factory=LongCLIPLoss)
    data: SceneData = field(default_factory=SceneData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=1500, lr=2e-4, warmup=100, weight_decay=0.01))
    device: str | None = None
    resume: bool = True


def train_longclip(recipe: LongCLIPRecipe) -> LongCLIP:
    """Stretch the positions of `recipe.init` and fine-tune with L_long + L_short (PCM)."""
    device = init_from_env(recipe.device)
    torch.manual_seed(recipe.data.seed)
    base = load_encoder(recipe.init, stretch=False)
    model = base.stretched(method=recipe.positions).to(device)
    with torch.no_grad():
        model.logit_scale.fill_(LONGCLIP_LOGIT_SCALE)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, long_captions, short_captions = recipe.data.batch(step, model.image_size)
        image = F.normalize(model.encode_pixels(_pixels(model, images)), dim=-1)
        return recipe.loss(image, _text(model, long_captions), _text(model, short_captions), model.logit_scale.exp())

    params = [p for p in model.parameters() if p.requires_grad]  # all but the frozen stretched table
    return train(model, params, step_fn, recipe.optim, recipe.out_dir, None, recipe.resume,
                 {"recipe": "longclip", **asdict(recipe)})
