"""Text zoom's learned head: its score formula by hand, fitting a planted place, crop geometry, selection."""

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vision_long.lmm import (
    MultiResolutionConfig,
    TextZoomHead,
    multi_resolution_crops,
    select_zoom_text,
    vqa_item,
)
from vision_long.lmm.vqa import VQAConfig
from vision_long.lmm.zoom_head import (
    ZoomHeadData,
    fit_zoom_head,
    zoom_head_data,
    zoom_head_top1,
)


def _head_with_output(text_dim: int, place_grid: int, heat: list[float], log_scale_offset: float) -> TextZoomHead:
    """A head whose MLP outputs `heat` (row-major) and `log_scale_offset` for every question."""
    head = TextZoomHead(text_dim, place_grid=place_grid, hidden=3)
    with torch.no_grad():
        head.place[2].weight.zero_()
        head.place[2].bias.copy_(torch.tensor([*heat, log_scale_offset]))
    return head


def test_scores_are_the_scaled_similarity_plus_the_heat_at_each_crop_centre():
    head = _head_with_output(2, 2, [1.0, 2.0, 3.0, 4.0], math.log(0.5))  # content scale 10 x 0.5 = 5
    text = torch.tensor([[1.0, 0.0]])
    images = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0], [0.0, 1.0]]])
    # Four centres on the heat cells' centres, one halfway between the top two cells (bilinear: 1.5).
    centers = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75], [0.5, 0.25]]])
    scores = head(text, images, centers)
    expected = torch.tensor([[5 * 1 + 1, 5 * 0 + 2, 5 * 0.6 + 3, 5 * -1 + 4, 5 * 0 + 1.5]])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    heat, scale = head.heat(text)
    assert heat.tolist() == [[[1.0, 2.0], [3.0, 4.0]]] and scale.item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="must be positive"):
        TextZoomHead(0)


def test_the_place_mlp_reads_standardized_text():
    head = TextZoomHead(3, place_grid=2)
    text = torch.randn(10, 3) * torch.tensor([1.0, 1e-3, 5.0]) + 2
    head.set_text_statistics(text)
    torch.testing.assert_close(head.text_mean, text.mean(0))
    torch.testing.assert_close(head.text_std, text.std(0))
    standardized = (text - text.mean(0)) / text.std(0)
    torch.testing.assert_close(head.heat(text)[0].flatten(1), head.place(standardized)[:, :-1])


def test_fitting_learns_where_each_question_points():
    """Four kinds of question, each naming one crop of a 2 x 2 layout; the crops' images carry no hint."""
    generator = torch.Generator().manual_seed(0)
    kinds = torch.arange(200) % 4
    prototypes = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    text = F.normalize(1 + prototypes[kinds] * 0.01 + 1e-4 * torch.randn(200, 8, generator=generator), dim=-1)
    images = F.normalize(torch.randn(200, 4, 8, generator=generator), dim=-1)
    centers = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]).expand(200, 4, 2)
    data = ZoomHeadData(text, images, centers, kinds)
    head = TextZoomHead(8, place_grid=4)
    assert zoom_head_top1(head, data) < 0.5
    losses = fit_zoom_head(head, data, steps=150, lr=1e-2)
    assert zoom_head_top1(head, data) == 1.0 and losses[-1] < 0.1 * losses[0]
    assert not head.training
    with pytest.raises(ValueError, match="positive"):
        fit_zoom_head(head, data, steps=0)


def test_high_crop_centres_and_the_crop_holding_a_point():
    crops = multi_resolution_crops(Image.new("RGB", (768, 96)), MultiResolutionConfig(crop_size=64))
    assert (crops.high.columns, crops.high.rows) == (12, 3)  # 4 x 1 medium crops: high crops of 64 x 32 pixels
    centers = crops.high_centers()
    assert centers.shape == (36, 2)
    torch.testing.assert_close(centers[0], torch.tensor([32 / 768, 16 / 96]))
    torch.testing.assert_close(centers[13], torch.tensor([96 / 768, 48 / 96]))
    assert crops.high.index_at((70.0, 40.0)) == 12 + 1 and crops.high.index_at((0.0, 0.0)) == 0
    with pytest.raises(ValueError, match="holds the point"):
        crops.high.index_at((768.0, 10.0))


def test_a_vqa_item_points_at_its_cell_centre():
    config = VQAConfig(grid=6, image_size=384)
    items = [vqa_item(seed, config) for seed in range(40)]
    asked = next(item for item in items if item.cell is not None)
    row, column = divmod(asked.cell, 6)
    assert asked.point() == (column * 64 + 32, row * 64 + 32)
    assert next(item for item in items if item.cell is None).point() is None


def test_zoom_head_data_targets_the_asked_objects_crop(default_encoder):
    items = [item for item in (vqa_item(seed) for seed in range(12)) if item.cell is not None][:3]
    crops = [multi_resolution_crops(item.image(), MultiResolutionConfig(crop_size=64)) for item in items]
    data = zoom_head_data(crops, [i.question for i in items], [i.point() for i in items], default_encoder)
    assert data.text.shape == (3, 128) and data.images.shape == (3, 36, 128) and data.centers.shape == (3, 36, 2)
    assert data.targets.tolist() == [item.cell for item in items]  # 6 x 6 scenes at 384 px: one cell per crop
    torch.testing.assert_close(data.text, default_encoder.encode_text([i.question for i in items]))
    first, rest = data.split(2)
    assert len(first) == 2 and len(rest) == 1 and torch.equal(rest.targets, data.targets[2:])
    with pytest.raises(ValueError, match="equally many"):
        zoom_head_data(crops[:2], [i.question for i in items], [i.point() for i in items], default_encoder)


def test_text_selection_with_a_head_ranks_by_the_heads_scores(default_encoder):
    crops = multi_resolution_crops(vqa_item(3).image(), MultiResolutionConfig(crop_size=64))
    heat = [0.0] * 144
    row, column = 2, 4  # heat cells of a 12 x 12 map: high crop (row 1, column 2) of the 6 x 6 grid
    heat[row * 12 + column] = heat[row * 12 + column + 1] = heat[(row + 1) * 12 + column] = 8.0
    heat[(row + 1) * 12 + column + 1] = 8.0
    head = _head_with_output(128, 12, heat, -20.0)  # content scale ~0: the heat map decides
    selection = select_zoom_text(crops, "What color is the small shape in the cell at row 2, column 3?",
                                 default_encoder, k=2, head=head)
    assert selection.indices[0] == 1 * 6 + 2
    assert selection.all_scores[8].item() == pytest.approx(8.0, abs=1e-3)
    text = default_encoder.encode_text(["What color is the small shape in the cell at row 2, column 3?"])
    images = default_encoder.encode_image(list(crops.high.crops))
    expected = head(text, images[None], crops.high_centers()[None])[0]
    torch.testing.assert_close(selection.all_scores, expected.detach())
