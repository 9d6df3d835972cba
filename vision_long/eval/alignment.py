"""Exact long-prompt alignment for text-to-image models on ShapeScenes: parse an image back into a scene.

A `CellParser` (a tiny CNN trained on rendered cells) reads each grid cell of an image: is there an object, and
which color, shape and size. A scene's objects are then scored against the ground truth: per object, the four
attributes presence, color, shape and size (color, shape and size count as correct only when the object was
found), averaged. `acc_before_77` / `acc_after_77` split the objects by whether their caption sentence starts
before token 77 (the full CLIP tokenizer at context 248, `Scene.sentence_spans`): a text encoder cut at 77 tokens
never sees the second group. `acc_77_to_240` / `acc_after_240` split the second group again at token 240, what
LongAlign's 240 merged CLIP rows hold (6 x 6 captions run to ~750 tokens; only an LLM branch reads past 240).
The `t2i-alignment` suite generates one image per evaluation scene's long caption with each prompt encoding
(`encode_long_prompt`; the same seed per prompt across methods) and reports these numbers per method; method
"rendered" parses the scenes' own renders, i.e. the parser's own accuracy; method "reconstructed" parses those renders
after a round trip through the pipeline's VAE (encode, posterior mean, decode), the ceiling of any image the
pipeline can generate, since every generation is decoded by that VAE. Method "segments+llm" runs on a
pipeline carrying an LLM branch (`diffusion.conditioning.load_llm_conditioning`), whose UNet LoRA is switched
off for the other methods, so they see the base UNet.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from vision_long.checkpoints import CheckpointError, load_native
from vision_long.data.scenes import (
    COLORS,
    EVAL_SEED_OFFSET,
    SHAPES,
    SIZES,
    TRAIN_SEEDS,
    Scene,
    SceneObject,
    default_tokenizer,
    random_scene,
)
from vision_long.diffusion.segments import MERGED_TOKENS
from vision_long.eval.long_retrieval import SEEDS_PER_RUN
from vision_long.tokenization import CLIP_CONTEXT
from vision_long.training.trainer import OptimConfig, train

DEFAULT_PARSER = Path(__file__).resolve().parent.parent / "assets" / "cell-parser"
RENDERED = "rendered"  # the suite's method that parses the scenes' own renders
RECONSTRUCTED = "reconstructed"  # ... and the renders after a round trip through the pipeline's VAE
PARSED_SCENES = (RENDERED, RECONSTRUCTED)  # methods that generate nothing
RENDER_SIZE = 64  # side of the rendered images when no pipeline fixes the resolution (the default CLIP's size)
HEADS: tuple[tuple[str, int], ...] = (
    ("presence", 2), ("color", len(COLORS)), ("shape", len(SHAPES)), ("size", len(SIZES)))
IGNORE = -100  # label of color / shape / size for an empty cell
# Held-out settings the training command reports: (grid, image side in pixels).
HELD_OUT_SETTINGS: tuple[tuple[int, int], ...] = ((3, 64), (2, 64), (4, 64), (3, 128), (5, 160), (6, 192))


# ---- the classifier ---------------------------------------------------------------------------------------------
@dataclass
class CellParserConfig:
    """A cell is resized to `cell_pixels` square; one 3x3 conv + ReLU + 2x2 max-pool per entry of `channels`."""

    cell_pixels: int = 24
    channels: tuple[int, ...] = (32, 64, 96)
    hidden: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CellParserConfig:
        return cls(**{**data, "channels": tuple(data["channels"])})


class CellParser(nn.Module):
    """Tensor[N, 3, C, C] cells in [0, 1] -> logits Tensor[N, 19]: presence (2) | color (8) | shape (7) | size (2)."""

    family = "cell-parser"
    config_class = CellParserConfig

    def __init__(self, config: CellParserConfig):
        super().__init__()
        if config.cell_pixels % 2 ** len(config.channels):
            raise ValueError(f"cell_pixels {config.cell_pixels} must be divisible by 2^{len(config.channels)}")
        self.config = config
        layers, width = [], 3
        for channels in config.channels:
            layers += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width = channels
        side = config.cell_pixels // 2 ** len(config.channels)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(width * side * side, config.hidden), nn.ReLU(),
                                  nn.Linear(config.hidden, sum(n for _, n in HEADS)))

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((cells - 0.5) / 0.25))

    @staticmethod
    def split(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits Tensor[N, 19] -> {"presence": Tensor[N, 2], "color": [N, 8], "shape": [N, 7], "size": [N, 2]}."""
        return dict(zip([name for name, _ in HEADS], logits.split([n for _, n in HEADS], dim=-1), strict=True))


def load_cell_parser(path: str | Path | None = None, device: str | None = None) -> CellParser:
    """The parser saved at `path` (native format), or the embedded one (vision_long/assets/cell-parser)."""
    path = Path(path) if path is not None else DEFAULT_PARSER
    if path == DEFAULT_PARSER and not (path / "config.json").is_file():
        raise CheckpointError(f"the embedded cell parser ({path}) is not installed; train one with "
                              "'vision-long train cell-parser --out DIR' and pass --parser DIR/model")
    parser = load_native(path, device=device)
    if not isinstance(parser, CellParser):
        raise CheckpointError(f"{path}: a {parser.family} checkpoint, not a cell parser")
    return parser


# ---- cells in and scenes out --------------------------------------------------------------------------------------
def crop_cells(
    image: Image.Image, grid: int, cell_pixels: int, rng: random.Random | None = None, jitter: float = 0.0
) -> torch.Tensor:
    """The G x G cells of `image` (row-major), each resized to `cell_pixels`: Tensor[G * G, 3, C, C] in [0, 1].

    Cell boxes are exact fractions of the image (64 px / 3 cells = 21.33 px), resampled with PIL's antialiased
    bilinear filter, so any resolution works. With `rng`, each box is shifted and scaled by up to `jitter` of a cell
    (training augmentation).
    """
    image = image.convert("RGB")
    width, height = image.size
    cw, ch = width / grid, height / grid
    crops = []
    for index in range(grid * grid):
        row, column = divmod(index, grid)
        cx, cy, half_w, half_h = (column + 0.5) * cw, (row + 0.5) * ch, cw / 2, ch / 2
        if rng is not None:
            scale = 1 + rng.uniform(-jitter, jitter)
            cx, cy = cx + rng.uniform(-jitter, jitter) * cw, cy + rng.uniform(-jitter, jitter) * ch
            half_w, half_h = half_w * scale, half_h * scale
        box = (max(0.0, cx - half_w), max(0.0, cy - half_h), min(width, cx + half_w), min(height, cy + half_h))
        crops.append(np.asarray(image.resize((cell_pixels, cell_pixels), Image.Resampling.BILINEAR, box=box)))
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


Parsed = tuple[SceneObject | None, ...]  # one entry per cell, row-major, like Scene.objects


@torch.inference_mode()
def parse_images(parser: CellParser, images: list[Image.Image], grid: int, batch_size: int = 1024) -> list[Parsed]:
    """Read each image back into per-cell objects (color, shape, size; no pattern or outline) or None."""
    device = next(parser.parameters()).device
    cells = torch.cat([crop_cells(image, grid, parser.config.cell_pixels) for image in images])
    logits = torch.cat([parser(chunk.to(device)).float().cpu() for chunk in cells.split(batch_size)])
    heads = {name: part.argmax(-1).tolist() for name, part in CellParser.split(logits).items()}
    objects = [
        SceneObject(shape=SHAPES[heads["shape"][i]], color=COLORS[heads["color"][i]], size=SIZES[heads["size"][i]])
        if heads["presence"][i] else None
        for i in range(len(cells))
    ]
    return [tuple(objects[k * grid * grid : (k + 1) * grid * grid]) for k in range(len(images))]


# ---- the metric ---------------------------------------------------------------------------------------------------
def object_hits(truth: SceneObject, parsed: SceneObject | None) -> tuple[bool, bool, bool, bool]:
    """(presence, color, shape, size) correct for one object; attributes of a missed object count as wrong."""
    if parsed is None:
        return False, False, False, False
    return True, parsed.color == truth.color, parsed.shape == truth.shape, parsed.size == truth.size


def object_scores(scene: Scene, cells: Parsed) -> list[float]:
    """Each object's score in reading order: the mean of its four `object_hits` (1 parsed exactly, 0 missed)."""
    hits = [object_hits(truth, cells[i]) for i, truth in enumerate(scene.objects) if truth is not None]
    return [sum(h) / len(h) for h in hits]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def alignment_metrics(scenes: list[Scene], parsed: list[Parsed], tokenizer=None) -> dict:
    """Attribute accuracy per object of `parsed` against the `scenes`' ground truth.

    An object scores the mean of its four hits (`object_hits`): 1 when parsed exactly, 0 when missed. Keys:
    acc_all, acc_before_77, acc_after_77 (objects whose sentence starts at token < 77 / >= 77 of
    `[SOT] + tokenizer.encode(caption)`; default tokenizer: full CLIP BPE), acc_77_to_240 and acc_after_240
    (acc_after_77's objects split at token 240), n (scenes), n_objects, n_before_77, n_after_77, n_77_to_240,
    n_after_240, exact_all (objects parsed exactly), presence / color / shape / size (per-attribute accuracy over
    objects), empty_cells (empty cells parsed as empty). A group without objects gives None.
    """
    if len(scenes) != len(parsed):
        raise ValueError(f"got {len(parsed)} parsed images for {len(scenes)} scenes")
    tokenizer = tokenizer or default_tokenizer()
    before, middle, late, exact, empty = [], [], [], [], []
    per_attribute: list[tuple[bool, ...]] = []
    for scene, cells in zip(scenes, parsed, strict=True):
        if len(cells) != scene.grid**2:
            raise ValueError(f"a {scene.grid} x {scene.grid} scene needs {scene.grid**2} parsed cells, "
                             f"got {len(cells)}")
        starts = {index: start for index, start, _ in scene.sentence_spans(tokenizer) if index is not None}
        for index, truth in enumerate(scene.objects):
            if truth is None:
                empty.append(float(cells[index] is None))
                continue
            hits = object_hits(truth, cells[index])
            per_attribute.append(hits)
            exact.append(float(all(hits)))
            start = starts[index]
            group = before if start < CLIP_CONTEXT else middle if start < MERGED_TOKENS else late
            group.append(sum(hits) / len(hits))
    after = middle + late
    columns = list(zip(*per_attribute, strict=True)) if per_attribute else [[] for _ in HEADS]
    return {
        "acc_before_77": _mean(before), "acc_after_77": _mean(after), "acc_all": _mean(before + after),
        "acc_77_to_240": _mean(middle), "acc_after_240": _mean(late),
        "n": len(scenes), "n_objects": len(before) + len(after), "n_before_77": len(before), "n_after_77": len(after),
        "n_77_to_240": len(middle), "n_after_240": len(late),
        "exact_all": _mean(exact),
        **{name: _mean([float(h) for h in column]) for (name, _), column in zip(HEADS, columns, strict=True)},
        "empty_cells": _mean(empty),
    }


def evaluation_scenes(n: int, seed: int, grid: int) -> list[Scene]:
    """The suite's `n` scenes: evaluation seed `seed` uses scenes EVAL_SEED_OFFSET + seed * 1e6 + i."""
    if n < 1 or seed < 0:
        raise ValueError(f"need n >= 1 and seed >= 0, got n={n}, seed={seed}")
    first = EVAL_SEED_OFFSET + seed * SEEDS_PER_RUN
    return [random_scene(first + i, grid) for i in range(n)]


def rendered_accuracy(parser: CellParser, n: int = 300, seed: int = 0, grid: int = 3, size: int = RENDER_SIZE) -> dict:
    """`alignment_metrics` of the parser on `n` evaluation scenes rendered at `size` pixels (held out)."""
    scenes = evaluation_scenes(n, seed, grid)
    return {**alignment_metrics(scenes, parse_images(parser, [s.render(size) for s in scenes], grid)),
            "grid": grid, "image_size": size}


# ---- the t2i-alignment suite ------------------------------------------------------------------------------------
def generate_images(
    pipe, captions: list[str], seeds: list[int], method: str, steps: int, guidance: float, batch_size: int,
    encode_kwargs: dict | None = None,
) -> list[Image.Image]:
    """One image per caption at the pipeline's native size, caption i from `torch.Generator().manual_seed(seeds[i])`
    (diffusers draws each image's latents from its own generator, so batching does not change images)."""
    from vision_long.diffusion.prompts import encode_long_prompt

    images = []
    for start in range(0, len(captions), batch_size):
        batch = captions[start : start + batch_size]
        kwargs = encode_long_prompt(pipe, batch, "", method, **(encode_kwargs or {}))
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[start : start + batch_size]]
        images += pipe(**kwargs, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                       output_type="pil").images
    return images


@torch.no_grad()
def vae_round_trip(pipe, images: list[Image.Image], batch_size: int = 16) -> list[Image.Image]:
    """The images after the pipeline's VAE: encode, posterior mean, decode (RGB, same size), through the pipeline's
    own `image_processor`. What a generation can at best look like, since every generated latent is decoded by
    this VAE."""
    vae, processor, out = pipe.vae, pipe.image_processor, []
    for start in range(0, len(images), batch_size):
        x = processor.preprocess(images[start : start + batch_size]).to(device=vae.device, dtype=vae.dtype)
        out += processor.postprocess(vae.decode(vae.encode(x).latent_dist.mean).sample, output_type="pil")
    return out


@dataclass
class AlignmentSuite:
    """What `evaluate_t2i_alignment` runs: methods (prompt encodings and/or "rendered"), scenes and sampler."""

    methods: tuple[str, ...] = ("truncate", "chunks", "segments", "longclip")
    n: int = 200
    seed: int = 0
    grid: int = 3
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 16
    encode_kwargs: dict = field(default_factory=dict)  # method "longclip": longclip_text_encoder= (and tokenizer)
    keep_object_scores: bool = False  # add "object_scores" (per scene, `object_scores`) to each result

    def __post_init__(self) -> None:
        from vision_long.diffusion.prompts import METHODS

        unknown = [m for m in self.methods if m not in (*METHODS, *PARSED_SCENES)]
        if unknown or not self.methods:
            known = ", ".join((*METHODS, *PARSED_SCENES))
            raise ValueError(f"unknown methods {unknown or '(none)'}; expected some of {known}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")


def longclip_kwargs(pipe, source: str | Path | None = None) -> dict:
    """`encode_long_prompt` arguments for method "longclip": the Long-CLIP `CLIPTextModel` directory `source`
    (loaded once), else the pipeline's own text encoder when it has more than 77 positions."""
    from vision_long.diffusion.pipelines import load_text_encoder
    from vision_long.diffusion.prompts import PromptError

    if source is not None:
        te, tok = load_text_encoder(source, None, pipe._execution_device, pipe.unet.dtype)
        return {"longclip_text_encoder": te, "longclip_tokenizer": tok}
    if pipe.text_encoder.config.max_position_embeddings <= CLIP_CONTEXT:
        raise PromptError("method 'longclip' needs a Long-CLIP text encoder directory (--longclip DIR, e.g. from "
                          "'vision-long convert MODEL DIR --to hf'): the pipeline's own has only "
                          f"{pipe.text_encoder.config.max_position_embeddings} positions")
    return {"longclip_text_encoder": pipe.text_encoder, "longclip_tokenizer": pipe.tokenizer}


def evaluate_t2i_alignment(suite: AlignmentSuite, parser: CellParser, pipe=None, progress: bool = False) -> list[dict]:
    """One metrics dict (`alignment_metrics` plus method, grid, seed, steps, guidance, image_size, seconds, and with
    `suite.keep_object_scores` the per-scene `object_scores` for paired comparisons) per method.

    Every method sees the same scenes and, for scene i, the same generation seed (the scene's seed). `pipe` (an
    SD-1.x / SDXL pipeline) is needed for every method but "rendered", which renders at the pipeline's size (or
    `RENDER_SIZE` without a pipeline); "segments+llm" needs a pipeline carrying an LLM branch, whose UNet LoRA is
    on for that method only.
    """
    from vision_long.diffusion.conditioning import (
        branch_lora_enabled,
        pipeline_llm_branch,
    )
    from vision_long.diffusion.prompts import LLM_METHOD

    if pipe is None and any(m != RENDERED for m in suite.methods):
        raise ValueError("generating or reconstructing images needs a pipeline; only method 'rendered' runs "
                         "without one")
    if LLM_METHOD in suite.methods and pipeline_llm_branch(pipe) is None:
        raise ValueError("method 'segments+llm' needs an LLM adapter: load one onto the pipeline with "
                         "diffusion.conditioning.load_llm_conditioning (or longsd.load_longsd)")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor if pipe is not None else RENDER_SIZE
    scenes = evaluation_scenes(suite.n, suite.seed, suite.grid)
    captions, seeds = [s.caption() for s in scenes], [s.seed for s in scenes]
    if pipe is not None:
        pipe.set_progress_bar_config(disable=True)
    results = []
    for method in tqdm(suite.methods, desc="t2i-alignment", disable=not progress):
        start = time.perf_counter()
        if method == RENDERED:
            images = [s.render(size) for s in scenes]
        elif method == RECONSTRUCTED:
            images = vae_round_trip(pipe, [s.render(size) for s in scenes], suite.batch_size)
        else:
            with branch_lora_enabled(pipe, method == LLM_METHOD):
                images = generate_images(pipe, captions, seeds, method, suite.steps, suite.guidance,
                                         suite.batch_size, suite.encode_kwargs if method == "longclip" else None)
        parsed = parse_images(parser, images, suite.grid)
        results.append({"suite": "t2i-alignment", "method": method, **alignment_metrics(scenes, parsed),
                        "grid": suite.grid, "seed": suite.seed,
                        "steps": None if method in PARSED_SCENES else suite.steps,
                        "guidance": None if method in PARSED_SCENES else suite.guidance,
                        "image_size": images[0].width, "seconds": round(time.perf_counter() - start, 1)})
        if suite.keep_object_scores:
            results[-1]["object_scores"] = [object_scores(s, cells) for s, cells in zip(scenes, parsed, strict=True)]
    return results


# ---- training the parser ----------------------------------------------------------------------------------------
@dataclass
class CellData:
    """Training cells: random training scenes of random grid, density and resolution, cut into jittered cells.

    Each step's batch is a pure function of (seed, step). A scene's cells are `cell_range` pixels wide before
    resizing (64 px / 6 cells = 10.7 ... 192 px / 4 = 48); `noise` is the largest per-cell Gaussian pixel noise.
    """

    batch_size: int = 256
    seed: int = 0
    grids: tuple[int, ...] = (2, 3, 4, 5, 6)
    cell_range: tuple[float, float] = (10.0, 48.0)
    fill: tuple[float, float] = (0.3, 1.0)
    jitter: float = 0.04
    noise: float = 0.03

    def batch(self, step: int, cell_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells Tensor[B, 3, C, C] in [0, 1] and labels LongTensor[B, 4] (presence, color, shape, size; -100 for
        the attributes of an empty cell)."""
        rng = random.Random(f"cells/{self.seed}/{step}")
        cells, labels = [], []
        while len(labels) < self.batch_size:
            grid = rng.choice(self.grids)
            scene = random_scene(TRAIN_SEEDS[rng.randrange(len(TRAIN_SEEDS))], grid, rng.uniform(*self.fill))
            size = max(grid, round(grid * rng.uniform(*self.cell_range)))
            cells.append(crop_cells(scene.render(size), grid, cell_pixels, rng, self.jitter))
            labels += [(0, IGNORE, IGNORE, IGNORE) if o is None else
                       (1, COLORS.index(o.color), SHAPES.index(o.shape), SIZES.index(o.size)) for o in scene.objects]
        pixels = torch.cat(cells)[: self.batch_size]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        sigma = self.noise * torch.rand(len(pixels), 1, 1, 1, generator=generator)
        pixels = (pixels + sigma * torch.randn(pixels.shape, generator=generator)).clamp(0, 1)
        return pixels, torch.tensor(labels[: self.batch_size])


@dataclass
class CellParserRecipe:
    """`vision-long train cell-parser`: the classifier behind the alignment metric."""

    out_dir: str
    model: CellParserConfig = field(default_factory=CellParserConfig)
    data: CellData = field(default_factory=CellData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        steps=1500, lr=2e-3, warmup=50, weight_decay=1e-4, checkpoint_every=500, log_every=50))
    held_out_scenes: int = 300  # evaluation scenes per held-out setting after training
    device: str | None = None
    resume: bool = True


def train_cell_parser(recipe: CellParserRecipe) -> tuple[CellParser, list[dict]]:
    """Train with cross-entropy on each head (attribute heads on object cells only), save OUT/model, then write
    the held-out accuracy on rendered evaluation scenes (`HELD_OUT_SETTINGS`) to OUT/held_out.json."""
    import json

    device = torch.device(recipe.device or "cpu")
    torch.manual_seed(recipe.data.seed)
    parser = CellParser(recipe.model).to(device)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        pixels, labels = recipe.data.batch(step, recipe.model.cell_pixels)
        labels = labels.to(device)
        logits = CellParser.split(parser(pixels.to(device)))
        losses = {name: F.cross_entropy(logits[name], labels[:, i], ignore_index=IGNORE)
                  for i, (name, _) in enumerate(HEADS)}
        with torch.no_grad():
            labels = torch.where(labels == IGNORE, 0, labels)  # an empty cell needs only its presence right
            exact = torch.stack([logits[name].argmax(-1) == labels[:, i] for i, (name, _) in enumerate(HEADS)])
            exact[1:] |= labels[:, 0] == 0
            accuracy = exact.all(0).float().mean()
        return {"loss": sum(losses.values()), **losses, "cell_accuracy": accuracy}

    train(parser, list(parser.parameters()), step_fn, recipe.optim, recipe.out_dir, resume=recipe.resume,
          run_info={"recipe": "cell-parser", **asdict(recipe)})
    held_out = [rendered_accuracy(parser, recipe.held_out_scenes, grid=grid, size=size)
                for grid, size in HELD_OUT_SETTINGS]
    (Path(recipe.out_dir) / "held_out.json").write_text(json.dumps(held_out, indent=2) + "\n")
    return parser, held_out
