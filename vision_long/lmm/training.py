"""`vision-long train lmm`: a tiny causal LM + projector learn ShapeScenes VQA over a frozen CLIP vision tower.

The parts, all built offline:
  vision tower  the image tower of one of our CLIPs (`vision_tower_from_clip`, default: the embedded Long-CLIP,
                64-pixel crops, 8 x 8 patches), frozen;
  projector     Linear or 2-layer GELU MLP (trained);
  LM            a small Llama (or GPT-2) from scratch (trained) over a WordLevel tokenizer of the VQA vocabulary
                (`vqa_tokenizer`: every question and answer word, so no unknown words on VQA text).
Each step answers `batch_size` VQA items (`VQABatches`: a pure function of run seed, step and rank, so resuming is
exact) with teacher forcing under a zoom mode; with several `zoom` modes, step s uses `zoom[s % len(zoom)]`, so
one model learns every crop layout it will be evaluated with. Which training mode gives the best accuracy is an
open question: the default `multires` shows the LM every crop (Dragonfly v2's training); `text` and `v1` show
it the selected subsets the zoom modes produce at test time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from vision_long.data.scenes import TRAIN_SEEDS
from vision_long.distributed import init_from_env, is_main, rank, world_size
from vision_long.encoders.base import Encoder
from vision_long.encoders.loading import load_encoder
from vision_long.lmm.loading import save_lmm
from vision_long.lmm.model import (
    DEFAULT_PROMPT,
    IMAGE_TOKEN,
    PENULTIMATE_LAYER,
    PROJECTORS,
    SEPARATOR_TOKEN,
    ZOOM_MODES,
    ZoomConfig,
    ZoomLMM,
)
from vision_long.lmm.processing import MEDIUM_LAYOUTS, multi_resolution_crops
from vision_long.lmm.vision import vision_tower_from_clip
from vision_long.lmm.vqa import (
    WORD_PATTERN,
    VQAConfig,
    VQADataset,
    vqa_item,
    vqa_seeds,
    vqa_vocabulary,
)
from vision_long.lmm.zoom_head import fit_zoom_head, zoom_head_data, zoom_head_top1
from vision_long.training.trainer import FINAL_DIR, OptimConfig, train

UNK, PAD, BOS, EOS = "[UNK]", "[PAD]", "<s>", "</s>"
LM_KINDS = ("llama", "gpt2")
DEFAULT_POOLED_GRID = 2  # the default CLIP's 8 x 8 patch grid pooled to 2 x 2 (+ CLS): 5 embeddings per crop
PROMPT_MARGIN = 64  # positions kept for the prompt and the answer after the largest image block
EASY_GRIDS = (2, 3)  # scene grids of every other training item (VQABatches)
ZOOM_HEAD_ITEMS = 1000  # training items whose questions fit the text zoom head (those about an object: ~80 %)
FEATURE_STAT_IMAGES = 8  # training images whose crops give the feature standardization (8 x 41 crops by default)


def vqa_tokenizer(prompt_template: str = DEFAULT_PROMPT) -> PreTrainedTokenizerFast:
    """A lower-casing WordLevel tokenizer over `vqa_vocabulary()` and the prompt's words, with [UNK], [PAD], <s>
    and </s> (ids 0-3). Splitting is `tokenizers`' Whitespace rule (= `WORD_PATTERN`); decoding joins words with
    spaces. Saved with the model (`save_lmm`), so nothing is downloaded to use it."""
    prompt_words = WORD_PATTERN.findall(prompt_template.replace("{question}", " ").lower())
    words = list(dict.fromkeys([UNK, PAD, BOS, EOS, *prompt_words, *vqa_vocabulary()]))
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS)


@dataclass
class LanguageModelConfig:
    """The tiny causal LM trained from scratch: `kind` llama (RoPE) or gpt2 (learned absolute positions),
    width, layers, attention heads, MLP width and the number of positions (image block + prompt + answer)."""

    kind: str = "llama"
    width: int = 192
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    max_positions: int = 1024

    def __post_init__(self) -> None:
        if self.kind not in LM_KINDS:
            raise ValueError(f"kind must be one of {LM_KINDS}, got {self.kind!r}")
        for name in ("width", "layers", "heads", "intermediate", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")


def build_language_model(config: LanguageModelConfig, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    """A randomly initialised causal LM over `tokenizer`'s vocabulary, its special token ids set from it."""
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    if config.kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tokenizer), n_embd=config.width, n_layer=config.layers, n_head=config.heads,
            n_inner=config.intermediate, n_positions=config.max_positions, **special,
        ))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.width, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, num_key_value_heads=config.heads, intermediate_size=config.intermediate,
        max_position_embeddings=config.max_positions, **special,
    ))


def max_image_tokens(model: ZoomLMM) -> int:
    """LM positions of the largest image block (`multires`: the global view, then all medium and high crops
    pooled, one separator each)."""
    vision = model.vision_tower.config
    patch_grid, resolution = vision.image_size // vision.patch_size, model.config.resolution
    medium = max(columns * rows for columns, rows in MEDIUM_LAYOUTS)  # each over high_factor**2 high crops
    pooled_crops = medium * (1 + resolution.high_factor**2)
    return (1 + patch_grid**2 + 1) + pooled_crops * (1 + resolution.pooled_grid**2 + 1)


@dataclass
class VQABatches:
    """Training batches of ShapeScenes VQA: `batch_size` items per step and rank, drawn from the training seeds.

    The seeds of (step, rank) follow from the run `seed` alone, so every rank sees different items and a resumed
    run sees exactly the items it would have seen. Items alternate (counting over steps and ranks): even ones are
    `vqa` items, odd ones the same with a small grid from `easy_grids` (cycled). On a 2 x 2 or 3 x 3 grid the few
    objects fill a large share of every crop: meant to let the projector and LM learn to read an object's color and
    shape from crops before they can find the asked-about object among 40 crops of a 6 x 6 scene. (Not enough on
    its own: see the lmm_vqa section of benchmarks/RESULTS.md.) `easy_grids=()` trains on `vqa` alone.

    `kind_starts` is a curriculum over question kinds: the first of `vqa.kinds` is asked from step 0 and the i-th
    one joins at step `kind_starts[i - 1]` (so one start per further kind, non-decreasing); () asks every kind from
    the start. An LM that first learns to read one attribute from the zoomed crop keeps reading crops when the
    next kind joins; with all kinds from step 0 it settles on the answer prior (RESULTS.md `lmm_curriculum`).
    """

    vqa: VQAConfig = field(default_factory=VQAConfig)
    batch_size: int = 8
    seed: int = 0
    easy_grids: tuple[int, ...] = EASY_GRIDS
    kind_starts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        for grid in self.easy_grids:  # VQAConfig checks each grid
            replace(self.vqa, grid=grid)
        starts = self.kind_starts
        if starts and (len(starts) != len(self.vqa.kinds) - 1 or starts[0] < 1
                       or list(starts) != sorted(starts)):
            raise ValueError(f"kind_starts must hold one positive, non-decreasing step for each kind after the first "
                             f"of {self.vqa.kinds}, got {starts}")

    def kinds_at(self, step: int) -> tuple[str, ...]:
        """The question kinds asked at `step` under the `kind_starts` curriculum."""
        if not self.kind_starts:
            return self.vqa.kinds
        return self.vqa.kinds[: 1 + sum(start <= step for start in self.kind_starts)]

    def config(self, index: int) -> VQAConfig:
        """The VQA config of the run's item `index` (counting over steps and ranks)."""
        if index % 2 == 0 or not self.easy_grids:
            return self.vqa
        return replace(self.vqa, grid=self.easy_grids[(index // 2) % len(self.easy_grids)])

    def dataset(self, step: int) -> VQADataset:
        """The items of this rank's batch at `step` (render with `dataset[i]` or read `dataset.item(i)`)."""
        first = self.seed * 1_000_003 + (step * world_size() + rank()) * self.batch_size
        seeds = [TRAIN_SEEDS[(first + i) % len(TRAIN_SEEDS)] for i in range(self.batch_size)]
        kinds = self.kinds_at(step)
        return VQADataset(seeds, [replace(self.config(first + i), kinds=kinds) for i in range(self.batch_size)])


@dataclass
class LMMRecipe:
    """`vision-long train lmm`: what to build and how to train it.

    vision: the `load_encoder` spec whose image tower becomes the frozen vision tower; pooled_grid: medium/high
    crops' pooled patch grid side (must divide the tower's patch grid); zoom: the training zoom mode(s), cycled
    per step; zoom_config: top-k of v1 / text zoom and the long-text CLIP that text zoom uses; zoom_head_items:
    training questions that fit text zoom's learned head before the LM trains (`fit_text_zoom_head`; 0: no head,
    crops ranked by the CLIP similarity alone).
    """

    out_dir: str
    vision: str = "default"
    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    projector: str = "mlp"
    pooled_grid: int = DEFAULT_POOLED_GRID
    zoom: tuple[str, ...] = ("multires",)
    zoom_config: ZoomConfig = field(default_factory=ZoomConfig)
    zoom_head_items: int = ZOOM_HEAD_ITEMS
    data: VQABatches = field(default_factory=VQABatches)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(steps=2000, lr=1e-3, warmup=100, weight_decay=0.01, checkpoint_every=250)
    )
    device: str | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if not self.zoom or any(mode not in ZOOM_MODES for mode in self.zoom):
            raise ValueError(f"zoom must be a non-empty list of {ZOOM_MODES}, got {self.zoom!r}")
        if self.zoom_head_items < 0:
            raise ValueError(f"zoom_head_items must be non-negative, got {self.zoom_head_items}")


def build_lmm(recipe: LMMRecipe, text_encoder: Encoder | None = None) -> ZoomLMM:
    """The untrained model of `recipe`: frozen vision tower, random projector and LM, VQA tokenizer (CPU, fp32).

    The tower reads the CLIP's penultimate layer (LLaVA, Dragonfly) and is cut after it, so the last block is
    neither run nor stored. Its features are standardized with statistics of every crop of the first
    `FEATURE_STAT_IMAGES` training images (`ZoomLMM.set_feature_statistics`). When the recipe fits a text zoom
    head, the model gets an untrained one as wide as `text_encoder`'s embeddings (required then).
    """
    tokenizer = vqa_tokenizer()
    tokenizer.add_tokens([IMAGE_TOKEN, SEPARATOR_TOKEN], special_tokens=True)  # before the LM: no resizing
    clip = load_encoder(recipe.vision)
    zoom = recipe.zoom_config
    if uses_zoom_head(recipe):
        if text_encoder is None:
            raise ValueError("a recipe that fits a text zoom head needs its text_encoder")
        zoom = replace(zoom, text_dim=text_encoder.embed_dim)
    model = ZoomLMM.from_parts(
        vision_tower_from_clip(clip, layers=clip.config.vision.layers + 1 + PENULTIMATE_LAYER),
        build_language_model(recipe.lm, tokenizer),
        tokenizer,
        projector=recipe.projector,
        pooled_grid=recipe.pooled_grid,
        zoom=zoom,
        vision_layer=-1,
    )
    needed = max_image_tokens(model) + PROMPT_MARGIN
    if needed > recipe.lm.max_positions:
        raise ValueError(f"the LM needs at least {needed} positions for the largest image block and the prompt, "
                         f"got max_positions={recipe.lm.max_positions}")
    model.vision_tower.requires_grad_(False)
    stat_items = VQADataset(vqa_seeds("train", FEATURE_STAT_IMAGES), recipe.data.vqa)
    crops = [multi_resolution_crops(stat_items[i]["image"], model.config.resolution) for i in range(len(stat_items))]
    with torch.no_grad():
        model.set_feature_statistics(
            model.vision_features([c for x in crops for c in (x.global_view, *x.medium.crops, *x.high.crops)])
        )
    return model


def uses_zoom_head(recipe: LMMRecipe) -> bool:
    """Whether `recipe` fits a learned text zoom head: it trains under text zoom with zoom_head_items > 0."""
    return "text" in recipe.zoom and recipe.zoom_head_items > 0


def fit_text_zoom_head(model: ZoomLMM, text_encoder: Encoder, recipe: LMMRecipe) -> dict[str, float]:
    """Fit `model.zoom_head` on the first `recipe.zoom_head_items` training items that ask about an object (the
    batches' mix of grids), then freeze it. A fifth of them (at least one) are held out; returns the top-1 rates
    (the asked object's crop scored first) before and after fitting, on both parts, and the fitting loss."""
    if model.zoom_head is None:
        raise ValueError("the model has no text zoom head (its config's zoom.text_dim is 0)")
    items = [vqa_item(seed, recipe.data.config(i))
             for i, seed in enumerate(vqa_seeds("train", recipe.zoom_head_items))]
    items = [item for item in items if item.cell is not None]
    if len(items) < 2:
        raise ValueError(f"the first {recipe.zoom_head_items} training items ask about {len(items)} objects; "
                         "fitting the text zoom head needs at least 2 (raise zoom_head_items)")
    crops = [multi_resolution_crops(item.image(), model.config.resolution) for item in items]
    data = zoom_head_data(crops, [item.question for item in items], [item.point() for item in items],
                          text_encoder, progress=is_main())
    fit, held_out = data.split(len(data) - max(1, len(data) // 5))
    head = model.zoom_head.cpu()
    report = {"top1_held_out_before": zoom_head_top1(head, held_out)}
    losses = fit_zoom_head(head, fit, seed=recipe.data.seed, progress=is_main())
    report.update(top1_fit=zoom_head_top1(head, fit), top1_held_out=zoom_head_top1(head, held_out),
                  loss_first=losses[0], loss_last=losses[-1], questions=len(data))
    head.requires_grad_(False)
    return report


def train_lmm(recipe: LMMRecipe) -> ZoomLMM:
    """Train the projector and LM of `build_lmm(recipe)` on VQA; the final model (with its tokenizer, loadable
    by `load_lmm`) is written to `recipe.out_dir/model`. A text zoom head (`uses_zoom_head`) is fitted first and
    stays frozen while the LM trains, so the LM sees the crops the trained model will select; its top-1 rates go
    to `out_dir/zoom_head.json`."""
    device = init_from_env(recipe.device)
    text_encoder = load_encoder(recipe.zoom_config.text_encoder, device=device) if "text" in recipe.zoom else None
    torch.manual_seed(recipe.data.seed)
    model = build_lmm(recipe, text_encoder)
    if uses_zoom_head(recipe):
        report = fit_text_zoom_head(model, text_encoder, recipe)
        if is_main():
            Path(recipe.out_dir).mkdir(parents=True, exist_ok=True)
            (Path(recipe.out_dir) / "zoom_head.json").write_text(json.dumps(report, indent=2) + "\n")
            print(f"text zoom head: the asked object's crop ranks first for {report['top1_held_out']:.1%} of "
                  f"held-out questions ({report['top1_held_out_before']:.1%} before fitting)")
    model = model.to(device)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        batch = recipe.data.dataset(step)
        items = [batch[i] for i in range(len(batch))]
        zoom = recipe.zoom[step % len(recipe.zoom)]
        loss = model([x["image"] for x in items], [x["question"] for x in items], [x["answer"] for x in items],
                     zoom=zoom, text_encoder=text_encoder)
        return {"loss": loss}

    params = [p for p in model.parameters() if p.requires_grad]  # projector + LM; the vision tower is frozen
    train(model, params, step_fn, recipe.optim, recipe.out_dir, None, recipe.resume, run_info(recipe))
    if is_main():
        save_lmm(model, Path(recipe.out_dir) / FINAL_DIR)  # the trainer's final save plus the tokenizer
    return model


def run_info(recipe: LMMRecipe) -> dict[str, Any]:
    """The recipe as JSON types, for `run.json` and checkpoints."""
    return {"recipe": "lmm", **asdict(recipe)}
