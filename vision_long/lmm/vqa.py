"""ShapeScenes VQA: questions about one object of a large scene of small objects, answered from the ground truth.

Each item is a function of its seed: the scene is `random_scene(seed, grid, fill)` (every object redrawn at
`object_size`), the question comes from a local `random.Random("vqa/<seed>")`. Kinds:
  color   "What color is the small shape in the cell at row 4, column 2?"  -> "red"
          "What color is the star?"  (when exactly one star is in the scene)
  shape   "What shape is the small object in the cell at row 1, column 5?"  -> "hexagon"
          "What shape is the purple object?"  (when exactly one object is purple)
  exists  "Is there a blue circle in the image?"  -> "yes" / "no" (half each)
Cell references name the position only, so they need the image's layout; object references name what to look
for, which is what text-conditioned zoom can match. Training and evaluation items use the scene module's disjoint
seed ranges (`vqa_seeds`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from vision_long.data.scenes import (
    COLORS,
    EVAL_SEEDS,
    MAX_GRID,
    MIN_GRID,
    SHAPES,
    SIZES,
    TRAIN_SEEDS,
    Scene,
    cell_name,
    random_scene,
)

QUESTION_KINDS: tuple[str, ...] = ("color", "shape", "exists")
SPLITS = {"train": TRAIN_SEEDS, "eval": EVAL_SEEDS}
DEFAULT_IMAGE_SIZE = 384  # the default CLIP's 64-pixel crops x the 6 x 6 high grid: one cell per high crop
DEFAULT_VQA_FILL = 0.5
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")  # words and runs of punctuation (`tokenizers`' Whitespace splitting)


@dataclass(frozen=True)
class VQAConfig:
    """Scene grid, rendered image size, cell fill probability, object size (None keeps each drawn size), kinds."""

    grid: int = MAX_GRID
    image_size: int = DEFAULT_IMAGE_SIZE
    fill: float = DEFAULT_VQA_FILL
    object_size: str | None = "small"
    kinds: tuple[str, ...] = QUESTION_KINDS

    def __post_init__(self) -> None:
        if not MIN_GRID <= self.grid <= MAX_GRID:
            raise ValueError(f"grid must be in [{MIN_GRID}, {MAX_GRID}], got {self.grid}")
        if self.image_size < self.grid:
            raise ValueError(f"image_size must be at least the grid ({self.grid}), got {self.image_size}")
        if self.object_size not in (None, *SIZES):
            raise ValueError(f"object_size must be None or one of {SIZES}, got {self.object_size!r}")
        if not self.kinds or any(kind not in QUESTION_KINDS for kind in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {QUESTION_KINDS}, got {self.kinds!r}")


@dataclass(frozen=True)
class VQAItem:
    """One question with its exact answer; `cell` is the cell it is about (None for an absent object)."""

    seed: int
    scene: Scene
    kind: str
    question: str
    answer: str
    cell: int | None
    image_size: int

    def image(self) -> Image.Image:
        """The scene rendered at `image_size` x `image_size` pixels (RGB)."""
        return self.scene.render(self.image_size)

    def point(self) -> tuple[float, float] | None:
        """The centre of the asked object's cell in the image's pixels (x, y); None when no object is asked about."""
        if self.cell is None:
            return None
        row, column = divmod(self.cell, self.scene.grid)
        side = self.image_size / self.scene.grid
        return ((column + 0.5) * side, (row + 0.5) * side)


def vqa_seeds(split: str, n: int, start: int = 0) -> range:
    """`n` seeds of `split` ("train" or "eval") from the `start`-th on; the two splits never share a seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    seeds = SPLITS[split]
    if n < 0 or start < 0 or start + n > len(seeds):
        raise ValueError(f"seeds [{start}, {start + n}) are outside the {len(seeds)} seeds of split {split!r}")
    return seeds[start : start + n]


def vqa_item(seed: int, config: VQAConfig | None = None) -> VQAItem:
    """The question, answer and scene of `seed` (the same on every machine)."""
    config = config or VQAConfig()
    scene = random_scene(seed, config.grid, config.fill)
    if config.object_size is not None:
        objects = tuple(None if obj is None else replace(obj, size=config.object_size) for obj in scene.objects)
        scene = replace(scene, objects=objects)
    rng = random.Random(f"vqa/{seed}")
    kind = rng.choice(config.kinds)
    if kind == "exists":
        question, answer, cell = _exists_question(scene, rng)
    else:
        question, answer, cell = _attribute_question(kind, scene, rng)
    return VQAItem(seed, scene, kind, question, answer, cell, config.image_size)


# kind -> (attribute that may name the object when unique, question by cell, question by that attribute)
_ATTRIBUTE_QUESTIONS = {
    "color": ("shape", "What color is the {size} shape in the {cell}?", "What color is the {shape}?"),
    "shape": ("color", "What shape is the {size} object in the {cell}?", "What shape is the {color} object?"),
}
_EXISTS_QUESTION = "Is there a {color} {shape} in the image?"


def vqa_vocabulary() -> list[str]:
    """Every word and punctuation mark a question or answer can hold, for every grid size, in a fixed order.

    Words are the templates' fixed words, the cell names of every grid, the colors, shapes and sizes, and
    "yes" / "no": `WORD_PATTERN.findall(text.lower())` of any question or answer is a subset, so a tokenizer built
    from it never needs its unknown-word token for VQA text.
    """
    templates = [_EXISTS_QUESTION] + [q for _, *questions in _ATTRIBUTE_QUESTIONS.values() for q in questions]
    cells = [cell_name(i, grid) for grid in range(MIN_GRID, MAX_GRID + 1) for i in range(grid * grid)]
    texts = [re.sub(r"\{\w+\}", " ", t) for t in templates] + cells + [*COLORS, *SHAPES, *SIZES, "yes", "no"]
    return list(dict.fromkeys(word for text in texts for word in WORD_PATTERN.findall(text.lower())))


def _attribute_question(kind: str, scene: Scene, rng: random.Random) -> tuple[str, str, int]:
    """Ask for one object's `kind` attribute; name the object by its cell, or (half the time) by its other
    attribute when no other object shares it."""
    naming, by_cell, by_attribute = _ATTRIBUTE_QUESTIONS[kind]
    cell = rng.choice([i for i, obj in enumerate(scene.objects) if obj is not None])
    obj = scene.objects[cell]
    unique = Counter(getattr(o, naming) for o in scene.objects if o)[getattr(obj, naming)] == 1
    template = by_attribute if unique and rng.random() < 0.5 else by_cell
    question = template.format(size=obj.size, cell=cell_name(cell, scene.grid), shape=obj.shape, color=obj.color)
    return question, getattr(obj, kind), cell


def _exists_question(scene: Scene, rng: random.Random) -> tuple[str, str, int | None]:
    """Ask whether a (color, shape) is in the scene: half the time one that is (cell: its first), else one not."""
    present: dict[tuple[str, str], int] = {}  # (color, shape) -> its first cell
    for index, obj in enumerate(scene.objects):
        if obj is not None:
            present.setdefault((obj.color, obj.shape), index)
    absent = [(color, shape) for color in COLORS for shape in SHAPES if (color, shape) not in present]
    if rng.random() < 0.5:
        color, shape = rng.choice(sorted(present))
        return _EXISTS_QUESTION.format(color=color, shape=shape), "yes", present[color, shape]
    color, shape = rng.choice(absent)
    return _EXISTS_QUESTION.format(color=color, shape=shape), "no", None


class VQADataset(Dataset):
    """Items of the given seeds as dict(image, question, answer, kind, cell, seed); images rendered on access.

    `config` is one `VQAConfig` for every item, or a sequence of one per seed (training on mixed scenes).
    """

    def __init__(self, seeds: Sequence[int], config: VQAConfig | Sequence[VQAConfig] | None = None):
        configs = [config or VQAConfig()] * len(seeds) if config is None or isinstance(config, VQAConfig) else config
        if len(configs) != len(seeds):
            raise ValueError(f"need one config per seed ({len(seeds)}), got {len(configs)}")
        self.seeds = seeds
        self.configs = list(configs)

    def __len__(self) -> int:
        return len(self.seeds)

    def item(self, index: int) -> VQAItem:
        """The ground truth of item `index`."""
        return vqa_item(self.seeds[index], self.configs[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.item(index)
        return {
            "image": item.image(),
            "question": item.question,
            "answer": item.answer,
            "kind": item.kind,
            "cell": item.cell,
            "seed": item.seed,
        }
