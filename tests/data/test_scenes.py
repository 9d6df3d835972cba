"""ShapeScenes: determinism, captions that parse back to ground truth, rendering, token positions, hard negatives."""

import itertools
import json
import random
import re
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from vision_long.data.scenes import (
    BACKGROUND_RGB,
    COLOR_RGB,
    COLORS,
    DISTRACTOR_SENTENCES,
    EVAL_SEED_OFFSET,
    EVAL_SEEDS,
    MAX_GRID,
    MIN_GRID,
    OUTLINE_COLORS,
    PATTERNS,
    SHAPES,
    SIZES,
    TRAIN_SEEDS,
    Scene,
    SceneObject,
    ShapeScenesDataset,
    hard_negative_group,
    random_scene,
    shared_prefix_group,
)
from vision_long.tokenization import CLIP_CONTEXT, CLIPTokenizer, TokenizerConfig

GRIDS = range(MIN_GRID, MAX_GRID + 1)
# Written out here, independently of the generator, so the caption is checked against what a reader expects.
CELL_NAMES = {
    2: ["top-left", "top-right", "bottom-left", "bottom-right"],
    3: ["top-left", "top-middle", "top-right", "middle-left", "center", "middle-right",
        "bottom-left", "bottom-middle", "bottom-right"],
}  # fmt: skip
OBJECT_SENTENCE = re.compile(
    r"In the (?:(?P<name>[a-z]+(?:-[a-z]+)?) cell|cell at row (?P<row>\d+), column (?P<column>\d+)) there is a "
    r"(?P<size>\w+) (?:(?P<pattern>striped|dotted) )?(?P<color>\w+) (?P<shape>\w+)"
    r"(?: with a (?P<outline>\w+) outline)?\."
)
ATTRIBUTE_WORDS = set(SHAPES) | set(COLORS) | set(SIZES) | set(PATTERNS) | set(OUTLINE_COLORS) | {"outline"}


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer(TokenizerConfig(context_length=248))


def parse_caption(caption: str, grid: int) -> list[tuple[int, SceneObject]]:
    """(cell index, object) for every object sentence of `caption`, in caption order."""
    out = []
    for m in OBJECT_SENTENCE.finditer(caption):
        if m["name"]:
            index = CELL_NAMES[grid].index(m["name"])
        else:
            index = (int(m["row"]) - 1) * grid + int(m["column"]) - 1
        obj = SceneObject(m["shape"], m["color"], m["size"], m["pattern"], m["outline"])
        out.append((index, obj))
    return out


def split_sentences(caption: str) -> list[str]:
    return re.split(r"(?<=\.) ", caption)


def test_vocabularies_are_large_enough_and_colors_distinct():
    assert len(SHAPES) >= 6 and len(COLORS) >= 8 and len(SIZES) == 2
    rgb = [np.array(COLOR_RGB[c], dtype=float) for c in COLORS]
    assert min(np.abs(c - np.array(BACKGROUND_RGB)).sum() for c in rgb) > 100
    assert min(np.abs(a - b).sum() for a, b in itertools.combinations(rgb, 2)) > 100


def test_same_seed_same_scene_pixels_and_caption():
    for grid in GRIDS:
        a, b = random_scene(123, grid), random_scene(123, grid)
        assert a == b
        assert a.caption() == b.caption()
        assert a.render(64).tobytes() == b.render(64).tobytes()


def test_different_seeds_differ():
    scenes = [random_scene(seed, 3) for seed in range(40)]
    assert len({s.caption() for s in scenes}) == len(scenes)
    assert len({s.render(32).tobytes() for s in scenes}) == len(scenes)


def test_global_rng_untouched():
    state = random.getstate()
    random_scene(5, 4)
    hard_negative_group(5, 3, tokenizer=None)
    assert random.getstate() == state


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**40), grid=st.integers(MIN_GRID, MAX_GRID), fill=st.floats(0.05, 1.0))
def test_caption_names_every_object_once_with_all_attributes(seed, grid, fill):
    scene = random_scene(seed, grid, fill)
    caption = scene.caption()
    truth = [(i, obj) for i, obj in enumerate(scene.objects) if obj is not None]
    assert parse_caption(caption, grid) == truth  # reading order, each object once, every attribute
    assert scene.short_caption() == split_sentences(caption)[0]
    assert OBJECT_SENTENCE.fullmatch(scene.short_caption())
    fillers = [s for s in split_sentences(caption) if not OBJECT_SENTENCE.fullmatch(s)]
    assert fillers == [d.text for d in scene.distractors]
    for sentence in fillers:
        assert not set(re.findall(r"[a-z]+", sentence.lower())) & ATTRIBUTE_WORDS, sentence
    assert "  " not in caption


def test_distractor_pool_names_no_attribute():
    for sentence in DISTRACTOR_SENTENCES:
        assert not set(re.findall(r"[a-z]+", sentence.lower())) & ATTRIBUTE_WORDS, sentence
        assert not re.search(r"\d", sentence) and not OBJECT_SENTENCE.search(sentence)


def test_cell_names_for_small_and_large_grids():
    objects = [SceneObject("circle", "red", "large")] * 9
    sentences = [text for _, text in Scene(3, objects).sentences()]
    assert sentences[4] == "In the center cell there is a large red circle."
    obj = SceneObject("star", "blue", "small", "striped", "white")
    scene = Scene(4, [None] * 6 + [obj] + [None] * 9)
    assert scene.caption() == "In the cell at row 2, column 3 there is a small striped blue star with a white outline."


@pytest.mark.parametrize("size", [16, 64, 100, 224])
def test_render_size_mode_and_colors(size):
    objects = [SceneObject(SHAPES[i % len(SHAPES)], COLORS[i % len(COLORS)], "large") for i in range(8)] + [None]
    image = Scene(3, objects).render(size)
    assert image.size == (size, size) and image.mode == "RGB"
    pixels = np.asarray(image)
    cell = size / 3
    for index, obj in enumerate(objects):
        row, column = divmod(index, 3)
        centre = pixels[int((row + 0.5) * cell), int((column + 0.5) * cell)]
        expected = BACKGROUND_RGB if obj is None else COLOR_RGB[obj.color]
        assert np.abs(centre.astype(int) - expected).max() <= 2, (index, obj)


@pytest.mark.parametrize("size, fraction", [("large", 0.8), ("small", 0.4)])
def test_object_extent_within_cell(size, fraction):
    image_size, grid = 240, 3
    scene = Scene(grid, [None] * 4 + [SceneObject("square", "red", size)] + [None] * 4)
    row = np.asarray(scene.render(image_size))[image_size // 2]
    covered = (np.abs(row.astype(int) - BACKGROUND_RGB).sum(axis=1) > 30).sum()
    assert covered == pytest.approx(fraction * image_size / grid, abs=2)


def _cell_pixels(obj: SceneObject, size: int = 64) -> np.ndarray:
    image = np.asarray(Scene(3, [None] * 4 + [obj] + [None] * 4).render(size)).astype(float)
    return image[size // 3 : 2 * size // 3, size // 3 : 2 * size // 3]


@pytest.mark.parametrize("shape", SHAPES)
def test_patterns_and_outlines_visible_at_64_pixels(shape):
    """Even a small object in a 3 x 3 scene at 64 pixels shows its pattern and outline."""
    plain = _cell_pixels(SceneObject(shape, "blue", "small"))
    variants = {
        "striped": _cell_pixels(SceneObject(shape, "blue", "small", pattern="striped")),
        "dotted": _cell_pixels(SceneObject(shape, "blue", "small", pattern="dotted")),
        "outline": _cell_pixels(SceneObject(shape, "blue", "small", outline="white")),
    }
    for name, pixels in variants.items():
        changed = (np.abs(pixels - plain).sum(axis=-1) > 60).sum()
        assert changed >= 6, (name, changed)
    assert (np.abs(variants["striped"] - variants["dotted"]).sum(axis=-1) > 60).sum() >= 6


def test_render_is_deterministic_across_sizes():
    scene = random_scene(11, 5)
    for size in (48, 96, 333):
        assert scene.render(size).tobytes() == scene.render(size).tobytes()


@pytest.mark.parametrize("grid", GRIDS)
def test_json_round_trip(grid):
    for seed in range(5):
        scene = random_scene(seed, grid)
        data = json.loads(json.dumps(scene.to_json()))
        assert Scene.from_json(data) == scene
        assert Scene.from_json(data).caption() == scene.caption()


def test_caption_lengths_grow_with_grid(tok):
    seeds = range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 100)
    stats = {}
    for grid in GRIDS:
        lengths = [tok.count_tokens(random_scene(seed, grid).caption()) for seed in seeds]
        stats[grid] = (min(lengths), statistics.median(lengths), max(lengths))
    print("caption tokens (min, median, max) per grid:", stats)
    medians = [stats[g][1] for g in GRIDS]
    assert medians == sorted(medians) and len(set(medians)) == len(medians)
    assert 20 <= stats[MIN_GRID][0] <= 45
    assert 500 <= stats[MAX_GRID][2] <= 700


@pytest.mark.parametrize("grid", GRIDS)
def test_prefix_token_counts_are_additive_and_spans_exact(tok, grid):
    for seed in range(3):
        scene = random_scene(seed, grid)
        sentences = scene.sentences()
        ids = tok.encode(scene.caption())
        assert sum(len(tok.encode(text)) for _, text in sentences) == len(ids)
        spans = scene.sentence_spans(tok)
        assert [index for index, _, _ in spans] == [index for index, _ in sentences]
        assert spans[0][1] == 1 and spans[-1][2] == len(ids) + 1
        for (_, start, end), (_, text), nxt in zip(
            spans, sentences, spans[1:] + [(None, len(ids) + 1, None)], strict=True
        ):
            assert ids[start - 1 : end - 1] == tok.encode(text)
            assert end == nxt[1]


@pytest.mark.parametrize("grid, seeds", [(3, range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 12)), (4, [1, 2]), (6, [3])])
def test_hard_negatives_differ_in_one_late_object(tok, grid, seeds):
    for seed in seeds:
        group = hard_negative_group(seed, grid, group_size=4, tokenizer=tok)
        assert len(group) == 4 and group[0] == random_scene(seed, grid, fill=1.0)
        differing = {
            i for s in group[1:] for i, (a, b) in enumerate(zip(group[0].objects, s.objects, strict=True)) if a != b
        }
        assert len(differing) == 1
        (index,) = differing
        for a, b in itertools.combinations(group, 2):
            assert a.distractors == b.distractors and a.grid == b.grid
            changed = [
                f for f in vars(a.objects[index]) if getattr(a.objects[index], f) != getattr(b.objects[index], f)
            ]
            assert len(changed) == 1 and changed[0] in ("color", "shape")
            assert a.render(64).tobytes() != b.render(64).tobytes()
        heads = set()
        for scene in group:
            (start,) = [start for i, start, _ in scene.sentence_spans(tok) if i == index]
            assert start >= CLIP_CONTEXT
            heads.add(tuple(tok.tokenize_to_lists(scene.caption(), CLIP_CONTEXT, truncate=True)[0][0]))
        assert len(heads) == 1  # a 77-token CLIP reads the same text for every scene of the group


def test_early_hard_negatives_differ_where_a_77_token_clip_reads(tok):
    cells = set()
    for seed in range(20):
        group = hard_negative_group(seed, 3, tokenizer=tok, fill=0.3, late=False)
        (index,) = {i for s in group[1:] for i, (a, b) in enumerate(zip(group[0].objects, s.objects)) if a != b}
        cells.add(index)
        heads = set()
        for scene in group:
            (end,) = [end for i, _, end in scene.sentence_spans(tok) if i == index]
            assert end <= CLIP_CONTEXT - 1  # the whole sentence, then EOT, fit in 77 tokens
            heads.add(tuple(tok.tokenize_to_lists(scene.caption(), CLIP_CONTEXT, truncate=True)[0][0]))
        assert len(heads) == 4  # a 77-token CLIP reads four different texts
    assert len(cells) >= 6  # in sparse scenes the changed object can sit anywhere, not only in the top row


def test_shared_prefix_groups_share_77_tokens_and_redraw_every_late_object(tok):
    for seed in range(3):
        group = shared_prefix_group(seed, 3, tokenizer=tok)
        late = {i for i, start, _ in group[0].sentence_spans(tok) if i is not None and start >= CLIP_CONTEXT}
        heads = {tuple(tok.tokenize_to_lists(s.caption(), CLIP_CONTEXT, truncate=True)[0][0]) for s in group}
        assert len(group) == 4 and len(heads) == 1 and late
        for scene in group[1:]:
            changed = {i for i, (a, b) in enumerate(zip(group[0].objects, scene.objects)) if a != b}
            assert changed <= late and len(changed) >= len(late) - 1  # a redraw may repeat an object by chance
            assert scene.distractors == group[0].distractors


def test_scene_data_batches_mix_late_early_and_random_scenes():
    from vision_long.training.shapescenes import SceneData

    data = SceneData(batch_size=32, hard_fraction=1 / 4, early_hard_fraction=1 / 4, prefix_fraction=1 / 4,
                     fill=(0.1, 1.0))
    images, long, short = data.batch(0, 32)
    assert len(images) == len(long) == len(short) == 32
    assert data.batch(0, 32)[1] == long  # a pure function of the step
    with pytest.raises(ValueError, match="at most 1"):
        SceneData(hard_fraction=0.5, early_hard_fraction=0.3, prefix_fraction=0.3)
    with pytest.raises(ValueError, match="fill"):
        SceneData(fill=(0.5, 0.2))


def test_hard_negative_errors():
    with pytest.raises(ValueError, match="starts at token 77"):
        hard_negative_group(0, grid=2, fill=0.01)  # one object, a caption far shorter than 77 tokens
    with pytest.raises(ValueError, match="group_size"):
        hard_negative_group(0, grid=3, group_size=len(COLORS) + len(SHAPES))
    with pytest.raises(ValueError, match="group_size"):
        hard_negative_group(0, grid=3, group_size=1)


def test_invalid_ground_truth_rejected():
    with pytest.raises(ValueError, match="color"):
        SceneObject("circle", "teal", "large")
    with pytest.raises(ValueError, match="outline"):
        SceneObject("circle", "white", "large", outline="white")
    with pytest.raises(ValueError, match="cells"):
        Scene(3, [SceneObject("circle", "red", "large")] * 8)
    with pytest.raises(ValueError, match="at least one object"):
        Scene(2, [None] * 4)
    with pytest.raises(ValueError, match="grid"):
        random_scene(0, MAX_GRID + 1)


def test_seed_ranges_are_disjoint():
    assert TRAIN_SEEDS.stop <= EVAL_SEED_OFFSET == EVAL_SEEDS.start


def test_dataset_indexing_and_transform():
    dataset = ShapeScenesDataset(EVAL_SEEDS[:6], grid=3, image_size=32)
    assert len(dataset) == 6
    item = dataset[2]
    scene = random_scene(EVAL_SEEDS[2], 3)
    assert item["seed"] == EVAL_SEEDS[2] and item["caption"] == scene.caption()
    assert item["short_caption"] == scene.short_caption()
    assert item["image"].tobytes() == scene.render(32).tobytes()

    def to_tensor(image):
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255

    mixed = ShapeScenesDataset(range(10), grid=(2, 6), image_size=48, transform=to_tensor)
    assert {mixed.scene(i).grid for i in range(10)} == set(GRIDS)
    batch = next(iter(DataLoader(mixed, batch_size=5)))
    assert batch["image"].shape == (5, 3, 48, 48)
    assert batch["caption"][1] == random_scene(1, mixed.grid_for(1)).caption()
    with pytest.raises(ValueError, match="grid"):
        ShapeScenesDataset(range(3), grid=(4, 2))


def test_partial_caption_names_a_seeded_subset_of_the_objects_in_reading_order():
    scene = random_scene(5, grid=3, fill=1.0)
    objects = [text for index, text in scene.sentences() if index is not None]
    assert scene.partial_caption(1.0) == " ".join(objects)  # keep everything: the caption without distractors
    for seed in range(20):
        caption = scene.partial_caption(0.4, seed)
        assert caption == scene.partial_caption(0.4, seed)  # seeded
        kept = [text for text in objects if text in caption]
        assert kept and " ".join(kept) == caption  # a non-empty ordered subset, nothing else
    assert len({scene.partial_caption(0.4, seed) for seed in range(20)}) > 10
    assert scene.partial_caption(1e-9, 0) in objects  # at least one sentence
    with pytest.raises(ValueError, match="keep must be in"):
        scene.partial_caption(0.0)
