"""ShapeScenes VQA: determinism, exact answers from the ground truth, disjoint seed splits."""

from collections import Counter

import pytest

from vision_long.data.scenes import COLORS, EVAL_SEEDS, SHAPES, TRAIN_SEEDS, cell_name
from vision_long.lmm import VQAConfig, VQADataset, vqa_item, vqa_seeds

SEEDS = range(300)


def test_items_are_a_function_of_the_seed():
    for seed in (0, 7, EVAL_SEEDS[3]):
        first, second = vqa_item(seed), vqa_item(seed)
        assert first == second
        assert first.image().tobytes() == second.image().tobytes()
    assert len({vqa_item(seed).question for seed in range(20)}) > 10


def test_answers_match_the_scene_ground_truth():
    config = VQAConfig()
    for seed in SEEDS:
        item = vqa_item(seed, config)
        scene, obj = (
            item.scene,
            item.scene.objects[item.cell] if item.cell is not None else None,
        )
        assert all(o is None or o.size == "small" for o in scene.objects)
        if item.kind == "color":
            assert item.answer == obj.color
            assert item.question in (
                f"What color is the small shape in the {cell_name(item.cell, 6)}?",
                f"What color is the {obj.shape}?",
            )
            if item.question == f"What color is the {obj.shape}?":  # the shape names exactly one object
                assert sum(o is not None and o.shape == obj.shape for o in scene.objects) == 1
        elif item.kind == "shape":
            assert item.answer == obj.shape
            assert item.question in (
                f"What shape is the small object in the {cell_name(item.cell, 6)}?",
                f"What shape is the {obj.color} object?",
            )
            if item.question == f"What shape is the {obj.color} object?":
                assert sum(o is not None and o.color == obj.color for o in scene.objects) == 1
        else:
            words = item.question.removeprefix("Is there a ").removesuffix(" in the image?").split()
            color, shape = words
            assert color in COLORS and shape in SHAPES
            present = any(o is not None and (o.color, o.shape) == (color, shape) for o in scene.objects)
            assert item.answer == ("yes" if present else "no")
            assert (item.cell is not None) == present
            if present:
                assert (obj.color, obj.shape) == (color, shape)


def test_every_kind_reference_and_answer_occurs():
    items = [vqa_item(seed) for seed in SEEDS]
    kinds = Counter(item.kind for item in items)
    assert set(kinds) == {"color", "shape", "exists"} and min(kinds.values()) > 60
    assert {item.answer for item in items if item.kind == "exists"} == {"yes", "no"}
    assert any("row" in item.question for item in items if item.kind == "color")
    assert any("row" not in item.question for item in items if item.kind == "color")
    assert any("row" not in item.question for item in items if item.kind == "shape")


def test_config_controls_the_scene_and_the_kinds():
    item = vqa_item(3, VQAConfig(grid=3, image_size=96, object_size=None, kinds=("shape",)))
    assert item.kind == "shape" and item.scene.grid == 3 and item.image().size == (96, 96)
    assert "row" not in item.question  # grids up to 3 x 3 name their cells ("top-left cell")
    with pytest.raises(ValueError, match="kinds"):
        VQAConfig(kinds=("count",))
    with pytest.raises(ValueError, match="object_size"):
        VQAConfig(object_size="tiny")
    with pytest.raises(ValueError, match="grid"):
        VQAConfig(grid=9)


def test_train_and_eval_seeds_are_disjoint():
    train, evaluation = vqa_seeds("train", 1000), vqa_seeds("eval", 1000)
    assert set(train) <= set(TRAIN_SEEDS[:1000]) and set(evaluation) <= set(EVAL_SEEDS[:1000])
    assert not set(train) & set(evaluation)
    assert TRAIN_SEEDS[-1] < EVAL_SEEDS[0]
    assert list(vqa_seeds("eval", 3, start=10)) == [
        EVAL_SEEDS[10],
        EVAL_SEEDS[11],
        EVAL_SEEDS[12],
    ]
    with pytest.raises(ValueError, match="split"):
        vqa_seeds("test", 10)
    with pytest.raises(ValueError, match="outside"):
        vqa_seeds("train", len(TRAIN_SEEDS) + 1)


def test_dataset_items():
    dataset = VQADataset(vqa_seeds("eval", 4), VQAConfig(image_size=120))
    assert len(dataset) == 4
    row = dataset[2]
    item = dataset.item(2)
    assert row["image"].size == (120, 120) and row["image"].mode == "RGB"
    assert (row["question"], row["answer"], row["kind"], row["cell"], row["seed"]) == (
        item.question, item.answer, item.kind, item.cell, EVAL_SEEDS[2],
    )  # fmt: skip


def test_dataset_takes_one_config_per_item():
    configs = [VQAConfig(grid=2, image_size=64), VQAConfig(grid=6, image_size=64)]
    dataset = VQADataset(vqa_seeds("eval", 2), configs)
    assert [dataset.item(i).scene.grid for i in range(2)] == [2, 6]
    with pytest.raises(ValueError, match="one config per seed"):
        VQADataset(vqa_seeds("eval", 3), configs)
