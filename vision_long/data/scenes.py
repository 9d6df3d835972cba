"""ShapeScenes: a deterministic synthetic world of shapes on a grid, with long captions and exact ground truth.

A scene is a G x G grid (G from `MIN_GRID` to `MAX_GRID`). Each cell is empty or holds one object with a shape,
a color, a size, an optional pattern and an optional outline (the vocabularies are the tuples below). From the
ground truth a scene renders itself at any resolution and writes a long caption: one sentence per object in
reading order (row-major), every attribute named, plus filler ("distractor") sentences that name no attribute
value, interleaved after object sentences. The caption always opens with the first object's sentence, which is
therefore the short caption (Long-CLIP's convention: the first sentence of the long caption).

Everything is a function of a seed through a local `random.Random(seed)`, so the same seed gives the same scene,
pixels and caption on every machine. Training scenes use seeds in `TRAIN_SEEDS`, evaluation scenes seeds from
`EVAL_SEED_OFFSET` on (`EVAL_SEEDS`): the random streams never overlap, although a tiny grid with one object can
come out identical under two seeds by chance.

Hard negatives (`hard_negative_group`) are scenes that differ in one attribute of one object whose sentence
starts at token position 77 or later, so a 77-token CLIP sees identical text for all of them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Protocol

from PIL import Image, ImageChops, ImageDraw
from torch.utils.data import Dataset

from vision_long.tokenization import CLIP_CONTEXT, LONGCLIP_CONTEXT, CLIPTokenizer, TokenizerConfig

# ---- the world's vocabulary -------------------------------------------------------------------------------
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SIZES: tuple[str, ...] = ("small", "large")
PATTERNS: tuple[str, ...] = ("striped", "dotted")  # an object may also have no pattern (None)
OUTLINE_COLORS: tuple[str, ...] = ("white", "black")  # or no outline (None); never the object's own color

MIN_GRID, MAX_GRID = 2, 6
DEFAULT_GRID = 3
DEFAULT_FILL = 0.7  # probability that a cell holds an object (a scene always holds at least one)
PATTERN_PROBABILITY = 0.5
OUTLINE_PROBABILITY = 0.5
MIN_DEFAULT_DISTRACTORS = 2  # with grid + 1 at most: captions span ~30 (2 x 2) to ~600 (6 x 6) tokens
HARD_NEGATIVE_FILL = 1.0  # full grids, so a 3 x 3 caption always runs past token 77

# Seeds: training and evaluation draw from disjoint ranges.
TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEED_OFFSET = 10_000_000
EVAL_SEEDS = range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 1_000_000)

# ---- rendering ----------------------------------------------------------------------------------------------
BACKGROUND_RGB = (128, 128, 128)
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 30),
    "purple": (140, 50, 190),
    "orange": (250, 140, 10),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
SIZE_RADIUS = {"small": 0.2, "large": 0.4}  # half an object's extent, in cell widths: it spans 40% / 80% of the cell
OUTLINE_WIDTH = 0.06  # in cell widths
PATTERN_PERIOD = 0.16  # stripe / dot spacing, in cell widths
DOT_RADIUS = 0.3  # in pattern periods
SUPERSAMPLE = 4  # draw at 4x and box-filter down: anti-aliased and deterministic
_LIGHT_LUMINANCE = 140  # colors brighter than this get black pattern ink, darker ones white


def _regular_polygon(corners: int, start_degrees: float, radii: Sequence[float] = (1.0,)) -> list[tuple[float, float]]:
    """`corners` vertices on circles of `radii` (cycled) from `start_degrees` (y points down), centred vertically."""
    angles = [math.radians(start_degrees + 360 * i / corners) for i in range(corners)]
    points = [(radii[i % len(radii)] * math.cos(a), radii[i % len(radii)] * math.sin(a)) for i, a in enumerate(angles)]
    shift = (min(y for _, y in points) + max(y for _, y in points)) / 2
    return [(x, y - shift) for x, y in points]


_CROSS_ARM = 0.35  # half-width of a cross's arms, in object radii
# Outlines of every non-circle shape in unit coordinates (the object's extent is [-1, 1] in both axes).
UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "star": _regular_polygon(10, -90, radii=(1.0, 0.45)),
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
    "hexagon": _regular_polygon(6, 0),
    "cross": [
        (-_CROSS_ARM, -1), (_CROSS_ARM, -1), (_CROSS_ARM, -_CROSS_ARM), (1, -_CROSS_ARM), (1, _CROSS_ARM),
        (_CROSS_ARM, _CROSS_ARM), (_CROSS_ARM, 1), (-_CROSS_ARM, 1), (-_CROSS_ARM, _CROSS_ARM), (-1, _CROSS_ARM),
        (-1, -_CROSS_ARM), (-_CROSS_ARM, -_CROSS_ARM),
    ],
}  # fmt: skip

# ---- captions -----------------------------------------------------------------------------------------------
NAMED_CELL_MAX_GRID = 3  # grids up to 3 x 3 name their cells ("top-left"); larger ones use row/column numbers
_ROW_NAMES = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
_COLUMN_NAMES = {2: ("left", "right"), 3: ("left", "middle", "right")}
# Filler sentences: none names a color, shape, size, pattern, outline, cell position or number. Drawn without
# repetition, so a caption holds at most len(DISTRACTOR_SENTENCES) of them.
DISTRACTOR_SENTENCES: tuple[str, ...] = (
    "The background is a flat gray.",
    "The grid lines are not drawn.",
    "The picture was generated by a tiny program.",
    "Nothing in the scene casts a shadow.",
    "The lighting is even across the whole image.",
    "There is no text anywhere in the picture.",
    "Each object sits alone in its own cell.",
    "The edges of the objects are crisp and clean.",
    "No two objects overlap.",
    "The image has no border or frame.",
    "The scene is viewed from directly above.",
    "There is no perspective or depth in the scene.",
    "The layout is tidy and evenly spaced.",
    "The image contains no people, animals or plants.",
    "Empty cells show only the background.",
    "The objects are arranged on a regular grid.",
    "The picture looks like a page from a puzzle book.",
    "The colors are solid and fully saturated.",
    "There is no noise or blur in the image.",
    "The spacing between the cells is uniform.",
    "Every object is placed in the exact middle of its cell.",
    "The scene has no horizon and no sky.",
    "The objects are flat and printed without any gradient.",
    "The image is as wide as it is tall.",
)


class Tokenizer(Protocol):
    """What token positions need from a tokenizer: the BPE ids of a text, without start/end tokens."""

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class SceneObject:
    """One object: a `shape` of a `color` and `size`, with an optional `pattern` and `outline` color."""

    shape: str
    color: str
    size: str
    pattern: str | None = None
    outline: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, COLORS),
            ("size", self.size, SIZES),
            ("pattern", self.pattern, (None, *PATTERNS)),
            ("outline", self.outline, (None, *OUTLINE_COLORS)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.outline == self.color:
            raise ValueError(f"the outline must differ from the object's color, both are {self.color!r}")

    def description(self) -> str:
        """The noun phrase naming every attribute, e.g. "small striped blue star with a white outline"."""
        pattern = f"{self.pattern} " if self.pattern else ""
        outline = f" with a {self.outline} outline" if self.outline else ""
        return f"{self.size} {pattern}{self.color} {self.shape}{outline}"


@dataclass(frozen=True)
class Distractor:
    """A filler sentence placed right after the `after`-th object sentence (`after` >= 1)."""

    after: int
    text: str


def cell_name(index: int, grid: int) -> str:
    """The phrase naming cell `index` (row-major) of a G x G grid: "top-left cell", "cell at row 2, column 4"."""
    row, column = divmod(index, grid)
    if grid > NAMED_CELL_MAX_GRID:
        return f"cell at row {row + 1}, column {column + 1}"
    if grid == 3 and row == 1 and column == 1:
        return "center cell"  # not "middle-middle"
    return f"{_ROW_NAMES[grid][row]}-{_COLUMN_NAMES[grid][column]} cell"


@dataclass(frozen=True)
class Scene:
    """The ground truth of one scene.

    objects: one entry per cell in reading order (row-major), None for an empty cell; at least one object.
    distractors: filler sentences, ordered by `after` (their order in the caption).
    seed: the seed the scene was drawn from (hard-negative variants keep their base scene's seed).
    """

    grid: int
    objects: tuple[SceneObject | None, ...]
    distractors: tuple[Distractor, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "distractors", tuple(self.distractors))
        if not MIN_GRID <= self.grid <= MAX_GRID:
            raise ValueError(f"grid must be in [{MIN_GRID}, {MAX_GRID}], got {self.grid}")
        if len(self.objects) != self.grid**2:
            raise ValueError(f"a {self.grid} x {self.grid} scene needs {self.grid**2} cells, got {len(self.objects)}")
        count = self.num_objects
        if count == 0:
            raise ValueError("a scene needs at least one object (its first sentence is the short caption)")
        afters = [d.after for d in self.distractors]
        if afters != sorted(afters) or not all(1 <= a <= count for a in afters):
            raise ValueError(f"distractor positions must be sorted and within [1, {count}], got {afters}")

    @property
    def num_objects(self) -> int:
        return sum(obj is not None for obj in self.objects)

    def sentences(self) -> list[tuple[int | None, str]]:
        """The caption's sentences in order, each with its object's cell index (None for a distractor)."""
        out: list[tuple[int | None, str]] = []
        pending = list(self.distractors)
        seen = 0
        for index, obj in enumerate(self.objects):
            if obj is None:
                continue
            out.append((index, f"In the {cell_name(index, self.grid)} there is a {obj.description()}."))
            seen += 1
            while pending and pending[0].after == seen:
                out.append((None, pending.pop(0).text))
        return out

    def caption(self) -> str:
        """The long caption: every sentence, joined by single spaces."""
        return " ".join(text for _, text in self.sentences())

    def partial_caption(self, keep: float, seed: int = 0) -> str:
        """A caption naming a random subset of the objects, in reading order, without distractors: each object's
        sentence is kept with probability `keep` (at least one is), drawn from (scene seed, `seed`).

        What a pretrained CLIP's captions are like: short, each about a few things anywhere in the image. Training
        the 77-token stand-in on these (cut at 77 tokens) names every cell of a dense grid equally often, so its
        image tower learns to see all of them; reading-order captions cut at 77 only ever name the first rows.
        """
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        objects = [text for index, text in self.sentences() if index is not None]
        rng = random.Random(f"partial/{self.seed}/{seed}")
        kept = [text for text in objects if rng.random() < keep] or [rng.choice(objects)]
        return " ".join(kept)

    def short_caption(self) -> str:
        """The first sentence of the long caption: always the first object's sentence."""
        return self.sentences()[0][1]

    def sentence_spans(self, tokenizer: Tokenizer) -> list[tuple[int | None, int, int]]:
        """(cell index or None, start, end) of each sentence, positions in `[SOT] + tokenizer.encode(caption)`.

        SOT is position 0 and `end` is exclusive: sentence ids are `encode(caption)[start - 1 : end - 1]`.
        Each boundary comes from tokenizing the caption prefix up to it, so no additivity is assumed.
        """
        sentences = self.sentences()
        spans, start = [], 1
        for i, (index, _) in enumerate(sentences):
            end = 1 + len(tokenizer.encode(" ".join(text for _, text in sentences[: i + 1])))
            spans.append((index, start, end))
            start = end
        return spans

    def render(self, size: int = 64) -> Image.Image:
        """The scene as a `size` x `size` RGB image: each object centred in its cell on a gray background."""
        if size < self.grid:
            raise ValueError(f"size must be at least the grid ({self.grid}), got {size}")
        big = size * SUPERSAMPLE
        canvas = Image.new("RGB", (big, big), BACKGROUND_RGB)
        cell = big / self.grid
        for index, obj in enumerate(self.objects):
            if obj is not None:
                row, column = divmod(index, self.grid)
                _draw_object(canvas, obj, ((column + 0.5) * cell, (row + 0.5) * cell), cell)
        return canvas.resize((size, size), Image.Resampling.BOX)

    def with_object(self, index: int, obj: SceneObject) -> Scene:
        """This scene with cell `index` holding `obj` instead (the cell must already hold an object)."""
        if self.objects[index] is None:
            raise ValueError(f"cell {index} is empty; replacing it would change the caption's structure")
        objects = list(self.objects)
        objects[index] = obj
        return replace(self, objects=tuple(objects))

    def to_json(self) -> dict[str, Any]:
        """The ground truth as plain JSON types; `Scene.from_json` inverts it exactly."""
        return {
            "grid": self.grid,
            "seed": self.seed,
            "objects": [None if obj is None else asdict(obj) for obj in self.objects],
            "distractors": [{"after": d.after, "text": d.text} for d in self.distractors],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        """The scene written by `to_json` (also after a `json.dumps` / `json.loads` round trip)."""
        return cls(
            grid=data["grid"],
            objects=tuple(None if obj is None else SceneObject(**obj) for obj in data["objects"]),
            distractors=tuple(Distractor(**d) for d in data["distractors"]),
            seed=data["seed"],
        )


def _pattern_ink(color: str) -> tuple[int, int, int]:
    """Stripes and dots are black on light colors and white on dark ones."""
    r, g, b = COLOR_RGB[color]
    return COLOR_RGB["black"] if 0.299 * r + 0.587 * g + 0.114 * b > _LIGHT_LUMINANCE else COLOR_RGB["white"]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, center: tuple[float, float], radius: float, fill: Any) -> None:
    cx, cy = center
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon([(cx + radius * x, cy + radius * y) for x, y in UNIT_POLYGONS[shape]], fill=fill)


def _draw_object(canvas: Image.Image, obj: SceneObject, center: tuple[float, float], cell: float) -> None:
    """Draw `obj` on `canvas` centred at `center`: outline ring, body, then pattern clipped to the body."""
    draw = ImageDraw.Draw(canvas)
    radius = SIZE_RADIUS[obj.size] * cell
    if obj.outline:
        _draw_shape(draw, obj.shape, center, radius, COLOR_RGB[obj.outline])
        radius -= OUTLINE_WIDTH * cell
    _draw_shape(draw, obj.shape, center, radius, COLOR_RGB[obj.color])
    if obj.pattern:
        _draw_pattern(canvas, obj, center, radius, PATTERN_PERIOD * cell)


def _draw_pattern(
    canvas: Image.Image, obj: SceneObject, center: tuple[float, float], radius: float, period: float
) -> None:
    """Stripes (horizontal bands) or dots in the contrasting ink, clipped to the object's body."""
    x0, y0 = math.floor(center[0] - radius), math.floor(center[1] - radius)
    width = math.ceil(center[0] + radius) - x0 + 1
    local = (center[0] - x0, center[1] - y0)
    body = Image.new("L", (width, width), 0)
    _draw_shape(ImageDraw.Draw(body), obj.shape, local, radius, 255)
    marks = Image.new("L", (width, width), 0)
    draw = ImageDraw.Draw(marks)
    steps = range(-math.ceil(radius / period), math.ceil(radius / period) + 1)
    for i in steps:
        y = local[1] + i * period
        if obj.pattern == "striped":
            draw.rectangle([0, y - period / 4, width, y + period / 4], fill=255)
        else:
            dot = DOT_RADIUS * period
            for j in steps:
                x = local[0] + j * period
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=255)
    canvas.paste(_pattern_ink(obj.color), (x0, y0, x0 + width, y0 + width), ImageChops.multiply(body, marks))


def _default_distractor_count(rng: random.Random, grid: int) -> int:
    """Filler sentences per caption when not given: between `MIN_DEFAULT_DISTRACTORS` and grid + 1."""
    return rng.randint(MIN_DEFAULT_DISTRACTORS, grid + 1)


def _random_object(rng: random.Random) -> SceneObject:
    color = rng.choice(COLORS)
    pattern = rng.choice(PATTERNS) if rng.random() < PATTERN_PROBABILITY else None
    outline_choices = [c for c in OUTLINE_COLORS if c != color]
    outline = rng.choice(outline_choices) if rng.random() < OUTLINE_PROBABILITY else None
    return SceneObject(shape=rng.choice(SHAPES), color=color, size=rng.choice(SIZES), pattern=pattern, outline=outline)


def random_scene(
    seed: int, grid: int = DEFAULT_GRID, fill: float = DEFAULT_FILL, distractors: int | None = None
) -> Scene:
    """The scene of `seed`: each cell holds a random object with probability `fill` (at least one object).

    distractors: number of filler sentences (default: a seeded draw between 2 and grid + 1), each placed
    after a random object sentence. Uses only a local `random.Random(seed)`, so the global RNG is untouched.
    """
    if not MIN_GRID <= grid <= MAX_GRID:
        raise ValueError(f"grid must be in [{MIN_GRID}, {MAX_GRID}], got {grid}")
    if not 0 < fill <= 1:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    rng = random.Random(seed)
    objects = [_random_object(rng) if rng.random() < fill else None for _ in range(grid**2)]
    if not any(objects):
        objects[rng.randrange(grid**2)] = _random_object(rng)
    count = _default_distractor_count(rng, grid) if distractors is None else distractors
    if not 0 <= count <= len(DISTRACTOR_SENTENCES):
        raise ValueError(f"distractors must be in [0, {len(DISTRACTOR_SENTENCES)}], got {count}")
    num_objects = sum(obj is not None for obj in objects)
    texts = rng.sample(DISTRACTOR_SENTENCES, count)
    afters = sorted(rng.randint(1, num_objects) for _ in range(count))
    return Scene(grid, tuple(objects), tuple(Distractor(a, t) for a, t in zip(afters, texts, strict=True)), seed)


@lru_cache(maxsize=1)
def default_tokenizer() -> CLIPTokenizer:
    """The full CLIP BPE tokenizer (OpenAI vocabulary), which defines token positions by default."""
    return CLIPTokenizer(TokenizerConfig(context_length=LONGCLIP_CONTEXT))


def hard_negative_group(
    seed: int,
    grid: int = DEFAULT_GRID,
    group_size: int = 4,
    tokenizer: Tokenizer | None = None,
    fill: float = HARD_NEGATIVE_FILL,
    late: bool = True,
) -> list[Scene]:
    """`group_size` scenes differing only in one attribute (color or shape) of one object.

    The base scene is `random_scene(seed, grid, fill)` and comes first. With `late` (the evaluation's hard
    negatives) the changed object is drawn among those whose sentence starts at position >= 77 of
    `[SOT] + tokenizer.encode(caption)` (the full CLIP tokenizer by default), so a 77-token CLIP never sees the
    difference while the images differ. With `late=False` it is drawn among those whose whole sentence fits in
    the first 76 positions (EOT is the 77th), so a 77-token CLIP reads it: fine-grained negatives for training
    one. Raises ValueError when no object sentence qualifies, or when the attribute has fewer than `group_size`
    allowed values.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2, got {group_size}")
    base = random_scene(seed, grid, fill)
    spans = base.sentence_spans(tokenizer or default_tokenizer())
    if late:
        where = f"starts at token {CLIP_CONTEXT} or later"
        candidates = [index for index, start, _ in spans if index is not None and start >= CLIP_CONTEXT]
    else:
        where = f"ends before token {CLIP_CONTEXT - 1}"
        candidates = [index for index, _, end in spans if index is not None and end <= CLIP_CONTEXT - 1]
    if not candidates:
        raise ValueError(
            f"no object sentence of scene {seed} ({grid} x {grid}, {base.num_objects} objects, caption "
            f"{spans[-1][2] + 1} tokens with start/end) {where}; use a {'larger' if late else 'smaller'} grid or fill"
        )
    rng = random.Random(f"hard-negative/{seed}")
    index = rng.choice(candidates)
    target = base.objects[index]
    attribute = rng.choice(("color", "shape"))
    if attribute == "color":
        others = [c for c in COLORS if c not in (target.color, target.outline)]
    else:
        others = [s for s in SHAPES if s != target.shape]
    if group_size - 1 > len(others):
        raise ValueError(f"group_size {group_size} exceeds the {len(others) + 1} values {attribute} can take here")
    return [base] + [
        base.with_object(index, replace(target, **{attribute: v})) for v in rng.sample(others, group_size - 1)
    ]


def shared_prefix_group(
    seed: int, grid: int = DEFAULT_GRID, group_size: int = 4, tokenizer: Tokenizer | None = None,
    fill: float = HARD_NEGATIVE_FILL,
) -> list[Scene]:
    """`group_size` scenes with the same first 77 caption tokens and every later-described object redrawn.

    The base scene is `random_scene(seed, grid, fill)`; in the others each object whose sentence starts at
    position >= 77 is replaced by a fresh random object (cells and distractors stay), so a 77-token CLIP reads
    the same text for all of them while the images differ in every late cell. A training signal for reading
    past token 77 that is stronger than the one-attribute `hard_negative_group`: when both towers start blind
    to late content, a single changed attribute barely moves either embedding. Raises ValueError when no object
    sentence starts at token 77 or later.
    """
    base = random_scene(seed, grid, fill)
    spans = base.sentence_spans(tokenizer or default_tokenizer())
    late = [index for index, start, _ in spans if index is not None and start >= CLIP_CONTEXT]
    if not late:
        raise ValueError(f"no object sentence of scene {seed} starts at token {CLIP_CONTEXT} or later")
    rng = random.Random(f"shared-prefix/{seed}")
    group = [base]
    for _ in range(group_size - 1):
        scene = base
        for index in late:
            scene = scene.with_object(index, _random_object(rng))
        group.append(scene)
    return group


class ShapeScenesDataset(Dataset):
    """Scenes of the given seeds as dict(image, caption, short_caption, seed).

    grid: one grid size, or an inclusive range (lo, hi); seed s then gets grid `lo + s % (hi - lo + 1)`.
    image: the rendered PIL image, or `transform(image)` when a transform is given (e.g. to a Tensor[3, H, W]).
    Nothing is cached: rendering a 64-pixel scene takes about a millisecond.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        grid: int | tuple[int, int] = DEFAULT_GRID,
        image_size: int = 64,
        transform: Callable[[Image.Image], Any] | None = None,
    ):
        lo, hi = (grid, grid) if isinstance(grid, int) else grid
        if not MIN_GRID <= lo <= hi <= MAX_GRID:
            raise ValueError(f"grid must be an int or (lo, hi) with {MIN_GRID} <= lo <= hi <= {MAX_GRID}, got {grid}")
        self.seeds = seeds
        self.grid_range = (lo, hi)
        self.image_size = image_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.seeds)

    def grid_for(self, seed: int) -> int:
        """The grid size of `seed`'s scene."""
        lo, hi = self.grid_range
        return lo + seed % (hi - lo + 1)

    def scene(self, index: int) -> Scene:
        """The ground truth of item `index`."""
        seed = self.seeds[index]
        return random_scene(seed, self.grid_for(seed))

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        image = scene.render(self.image_size)
        return {
            "image": self.transform(image) if self.transform else image,
            "caption": scene.caption(),
            "short_caption": scene.short_caption(),
            "seed": scene.seed,
        }
