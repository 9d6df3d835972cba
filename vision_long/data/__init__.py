"""Datasets: ShapeScenes, the synthetic grid world with long captions and exact ground truth."""

from vision_long.data.scenes import (
    COLORS,
    EVAL_SEED_OFFSET,
    EVAL_SEEDS,
    OUTLINE_COLORS,
    PATTERNS,
    SHAPES,
    SIZES,
    TRAIN_SEEDS,
    Distractor,
    Scene,
    SceneObject,
    ShapeScenesDataset,
    hard_negative_group,
    random_scene,
)

__all__ = [
    "COLORS",
    "EVAL_SEEDS",
    "EVAL_SEED_OFFSET",
    "OUTLINE_COLORS",
    "PATTERNS",
    "SHAPES",
    "SIZES",
    "TRAIN_SEEDS",
    "Distractor",
    "Scene",
    "SceneObject",
    "ShapeScenesDataset",
    "hard_negative_group",
    "random_scene",
]
