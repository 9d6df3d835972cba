"""Multi-resolution crops, pooling and both zoom-in selections (vision_long.lmm.processing)."""

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vision_long.data.scenes import Scene, SceneObject, random_scene
from vision_long.lmm import (
    MultiResolutionConfig,
    multi_resolution_crops,
    pool_patch_grid,
    select_best_resolution,
    select_zoom_text,
    select_zoom_v1,
)
from vision_long.lmm.processing import crop_grid

SE = 336
REFERENCE_MEDIUM = [(2 * SE, 2 * SE), (SE, 4 * SE), (4 * SE, SE)]


@pytest.mark.parametrize(
    "size, expected",
    [
        ((1000, 1000), (672, 672)),
        ((300, 1200), (336, 1344)),
        ((1200, 300), (1344, 336)),
        ((640, 480), (672, 672)),
    ],
)
def test_select_best_resolution_on_dragonfly_candidates(size, expected):
    assert select_best_resolution(size, REFERENCE_MEDIUM) == expected


def test_select_best_resolution_prefers_less_waste_then_the_earlier_candidate():
    # Both fit a 100 x 100 image fully; the smaller canvas wastes less.
    assert select_best_resolution((100, 100), [(400, 400), (200, 200)]) == (200, 200)
    assert select_best_resolution((100, 100), [(200, 200), (200, 200)]) == (200, 200)
    with pytest.raises(ValueError, match="at least one"):
        select_best_resolution((100, 100), [])
    with pytest.raises(ValueError, match="original_size"):
        select_best_resolution((0, 100), REFERENCE_MEDIUM)


@pytest.mark.parametrize(
    "size, medium, high",
    [
        ((500, 500), (2, 2), (6, 6)),
        ((150, 620), (1, 4), (3, 12)),
        ((620, 150), (4, 1), (12, 3)),
    ],
    ids=["2x2", "1x4", "4x1"],
)
def test_crop_geometry_and_counts(size, medium, high):
    config = MultiResolutionConfig(crop_size=16)
    crops = multi_resolution_crops(Image.new("RGB", size), config)
    assert crops.original_size == size and crops.global_view.size == (16, 16)
    for grid, (columns, rows) in ((crops.medium, medium), (crops.high, high)):
        assert (grid.columns, grid.rows) == (columns, rows)
        assert len(grid) == len(grid.boxes) == columns * rows
        assert all(crop.size == (16, 16) for crop in grid.crops)
        # Boxes tile the original exactly, row-major: equal cells, no gaps, no overlap.
        for index, (left, top, right, bottom) in enumerate(grid.boxes):
            row, column = divmod(index, columns)
            assert math.isclose(left, column * size[0] / columns) and math.isclose(
                right, (column + 1) * size[0] / columns
            )
            assert math.isclose(top, row * size[1] / rows) and math.isclose(bottom, (row + 1) * size[1] / rows)
        assert math.isclose(sum((r - l) * (b - t) for l, t, r, b in grid.boxes), size[0] * size[1])
    assert len(crops.medium) == 4 and len(crops.high) == 36  # high = 3x the medium grid per side
    # Each high crop lies inside the medium crop `high_regions` assigns it to, 9 per medium crop.
    regions = crops.high_regions()
    assert torch.bincount(regions).tolist() == [9] * 4
    for box, region in zip(crops.high.boxes, regions.tolist()):
        outer = crops.medium.boxes[region]
        assert outer[0] - 1e-9 <= box[0] and box[2] <= outer[2] + 1e-9
        assert outer[1] - 1e-9 <= box[1] and box[3] <= outer[3] + 1e-9


def test_crops_show_the_region_of_their_box():
    image = Image.new("RGB", (400, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 100, 100))  # the left quarter is red
    crops = multi_resolution_crops(image, MultiResolutionConfig(crop_size=20))
    assert (crops.medium.columns, crops.medium.rows) == (4, 1)
    assert crops.medium.boxes[0] == (0.0, 0.0, 100.0, 100.0)
    # Away from the red/blue edge (bicubic resampling blends a pixel or two there).
    assert crops.medium.crops[0].getpixel((10, 10)) == (255, 0, 0)
    assert crops.medium.crops[2].getpixel((10, 10)) == (0, 0, 255)
    assert crops.high.crops[crops.high.columns].getpixel((10, 10)) == (
        255,
        0,
        0,
    )  # second row, first column


def test_crops_reject_non_images():
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        multi_resolution_crops(torch.zeros(3, 64, 64), MultiResolutionConfig(crop_size=16))
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        crop_grid("image.png", 2, 2, 16)
    with pytest.raises(ValueError, match="crop_size"):
        MultiResolutionConfig(crop_size=0)


@pytest.mark.parametrize("grid, pooled", [(24, 6), (4, 2), (16, 4), (7, 7)])
def test_pooling_equals_avg_pool2d_and_keeps_cls(grid, pooled):
    tokens = torch.randn(3, 1 + grid * grid, 10)
    out = pool_patch_grid(tokens, pooled)
    assert out.shape == (3, 1 + pooled * pooled, 10)
    assert torch.equal(out[:, 0], tokens[:, 0])
    window = grid // pooled
    as_image = tokens[:, 1:].reshape(3, grid, grid, 10).permute(0, 3, 1, 2)  # [N, D, G, G]
    expected = F.avg_pool2d(as_image, kernel_size=window, stride=window)  # [N, D, P, P]
    assert torch.equal(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(3, pooled * pooled, 10))


def test_pooling_reference_sizes_are_dragonflys_37_tokens_per_crop():
    assert pool_patch_grid(torch.randn(2, 577, 8), 6).shape == (2, 37, 8)


def test_pooling_rejects_bad_grids():
    with pytest.raises(ValueError, match="divide"):
        pool_patch_grid(torch.randn(1, 1 + 24 * 24, 4), 5)
    with pytest.raises(ValueError, match="square patch grid"):
        pool_patch_grid(torch.randn(1, 20, 4), 2)
    with pytest.raises(ValueError, match="Tensor"):
        pool_patch_grid(torch.randn(20, 4), 2)


def test_v1_selection_picks_the_planted_crop_in_each_region():
    crops = multi_resolution_crops(Image.new("RGB", (96, 96)), MultiResolutionConfig(crop_size=16))
    generator = torch.Generator().manual_seed(0)
    medium = torch.randn(4, 5, 12, generator=generator)
    high = 0.1 * torch.randn(36, 5, 12, generator=generator)
    regions = crops.high_regions()
    planted = [int((regions == r).nonzero()[4 if r % 2 else 0]) for r in range(4)]  # one crop per medium crop
    for region, index in enumerate(planted):
        high[index] = medium[region] * 3  # token means align with the medium crop's summary
    selection = select_zoom_v1(crops, medium, high, k=2)
    assert selection.method == "v1" and len(selection.indices) == 8
    assert list(selection.indices[::2]) == planted  # best first, region by region
    assert [regions[i].item() for i in selection.indices] == [0, 0, 1, 1, 2, 2, 3, 3]
    summaries = (high.mean(1) * medium.mean(1)[regions]).sum(-1)
    assert torch.allclose(selection.all_scores, summaries)
    assert selection.scores == tuple(summaries[list(selection.indices)].tolist())
    assert selection.boxes == tuple(crops.high.boxes[i] for i in selection.indices)


def test_v1_selection_rejects_bad_inputs():
    crops = multi_resolution_crops(Image.new("RGB", (96, 96)), MultiResolutionConfig(crop_size=16))
    with pytest.raises(ValueError, match="k must be in"):
        select_zoom_v1(crops, torch.randn(4, 5, 8), torch.randn(36, 5, 8), k=10)
    with pytest.raises(ValueError, match="high_features"):
        select_zoom_v1(crops, torch.randn(4, 5, 8), torch.randn(24, 5, 8))


def _scene_with_red_star(seed: int, cell: int) -> Scene:
    """A 6 x 6 scene of small objects, none red, plus one small red star in `cell`."""
    base = random_scene(seed, 6, fill=0.6)
    objects = [None if obj is None or obj.color == "red" else obj for obj in base.objects]
    objects = [obj and SceneObject(obj.shape, obj.color, "small", obj.pattern, obj.outline) for obj in objects]
    objects[cell] = SceneObject("star", "red", "small")
    return Scene(6, tuple(objects), (), seed)


@pytest.mark.parametrize("seed, cell", [(1, 8), (2, 27), (3, 35)])
def test_text_selection_ranks_the_named_objects_crop_first(default_encoder, seed, cell):
    # 384 pixels = 6 x 64: each high crop is one cell, at the default Long-CLIP's own 64-pixel input size.
    image = _scene_with_red_star(seed, cell).render(384)
    crops = multi_resolution_crops(image, MultiResolutionConfig(crop_size=64))
    selection = select_zoom_text(crops, "Is there a red star in the image?", default_encoder, k=3)
    assert selection.method == "text" and len(selection.indices) == 3
    assert selection.indices[0] == cell
    row, column = divmod(cell, 6)
    assert selection.boxes[0] == (
        column * 64.0,
        row * 64.0,
        (column + 1) * 64.0,
        (row + 1) * 64.0,
    )
    assert list(selection.scores) == sorted(selection.scores, reverse=True)
    assert selection.all_scores.shape == (36,) and selection.all_scores.argmax().item() == cell
    assert all(-1.0 <= s <= 1.0 for s in selection.scores)  # cosine similarities


def test_text_selection_rejects_bad_inputs(default_encoder):
    crops = multi_resolution_crops(Image.new("RGB", (96, 96)), MultiResolutionConfig(crop_size=16))
    with pytest.raises(ValueError, match="empty"):
        select_zoom_text(crops, "   ", default_encoder)
    with pytest.raises(TypeError, match="str"):
        select_zoom_text(crops, None, default_encoder)
    with pytest.raises(TypeError, match="Encoder protocol"):
        select_zoom_text(crops, "a red star", object())
    with pytest.raises(ValueError, match="k must be in"):
        select_zoom_text(crops, "a red star", default_encoder, k=37)
