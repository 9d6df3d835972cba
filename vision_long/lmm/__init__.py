"""A Dragonfly-style multi-resolution vision-language model with text-conditioned zoom-in (issue #8).

`processing` cuts images into crops at three resolutions, pools patch grids and selects zoom-in crops;
`zoom_head` learns where a question points for text-conditioned zoom;
`model` composes a transformers CLIP vision tower, a projector and a causal LM; `loading` saves and loads it;
`vqa` makes ShapeScenes questions with exact answers; `vision` turns one of our CLIPs' image towers into a
transformers `CLIPVisionModel`; `ask` answers and draws the crops for the command line and demos;
`training` is the `vision-long train lmm` recipe.
"""

from vision_long.lmm.ask import ask_image, draw_crops
from vision_long.lmm.loading import load_lmm, save_lmm
from vision_long.lmm.model import LMMAnswer, LMMConfig, ZoomConfig, ZoomLMM
from vision_long.lmm.processing import (
    MultiResolutionConfig,
    MultiResolutionCrops,
    ZoomSelection,
    multi_resolution_crops,
    pool_patch_grid,
    select_best_resolution,
    select_zoom_text,
    select_zoom_v1,
)
from vision_long.lmm.vision import vision_tower_from_clip
from vision_long.lmm.vqa import (
    VQAConfig,
    VQADataset,
    VQAItem,
    vqa_item,
    vqa_seeds,
    vqa_vocabulary,
)
from vision_long.lmm.zoom_head import TextZoomHead

__all__ = [
    "LMMAnswer",
    "LMMConfig",
    "MultiResolutionConfig",
    "MultiResolutionCrops",
    "TextZoomHead",
    "VQAConfig",
    "VQADataset",
    "VQAItem",
    "ZoomConfig",
    "ZoomLMM",
    "ZoomSelection",
    "ask_image",
    "draw_crops",
    "load_lmm",
    "multi_resolution_crops",
    "pool_patch_grid",
    "save_lmm",
    "select_best_resolution",
    "select_zoom_text",
    "select_zoom_v1",
    "vision_tower_from_clip",
    "vqa_item",
    "vqa_seeds",
    "vqa_vocabulary",
]
