import pytest
import torch
import torch.nn.functional as F
from reference_clip import kps_loop

from vision_long.encoders.longclip import stretch_positions


@pytest.fixture
def table():
    return torch.randn(77, 8, dtype=torch.float64)


def test_shape_and_kept_rows(table):
    new = stretch_positions(table)
    assert new.shape == (248, 8)
    assert torch.equal(new[:20], table[:20])


def test_anchor_rows_hand_computed(table):
    new = stretch_positions(table)
    for i in range(57):
        assert torch.equal(new[20 + 4 * i], table[20 + i]), i
    assert torch.equal(new[244], table[76])
    # between anchors: new[20 + 4i + r] = (4 - r)/4 P[20+i] + r/4 P[21+i]
    assert torch.allclose(new[21], 0.75 * table[20] + 0.25 * table[21], atol=1e-15)
    assert torch.allclose(new[22], 0.5 * table[20] + 0.5 * table[21], atol=1e-15)
    assert torch.allclose(new[243], 0.25 * table[75] + 0.75 * table[76], atol=1e-15)


def test_last_rows_extrapolate(table):
    new = stretch_positions(table)
    slope = table[76] - table[75]
    for k in (1, 2, 3):
        assert torch.allclose(new[244 + k], table[76] + k / 4 * slope, atol=1e-14)


def test_matches_upstream_loop_and_align_corners_form(table):
    new = stretch_positions(table)
    assert torch.allclose(new, kps_loop(table), atol=1e-14)
    interp = F.interpolate(table[20:].T[None], size=225, mode="linear", align_corners=True)[0].T
    assert torch.allclose(new[20:245], interp, atol=1e-12)


@pytest.mark.parametrize("keep,ratio,length", [(0, 4, 77), (10, 2, 77), (20, 4, 50), (5, 3, 30), (20, 1, 77)])
def test_general_keep_ratio_length(keep, ratio, length):
    table = torch.randn(length, 4, dtype=torch.float64)
    new = stretch_positions(table, keep=keep, ratio=ratio)
    assert new.shape[0] == ratio * length - (ratio - 1) * keep
    assert torch.allclose(new, kps_loop(table, keep, ratio), atol=1e-13)


def test_dtype_preserved_and_fp32_close_to_fp64(table):
    new32 = stretch_positions(table.float())
    assert new32.dtype == torch.float32
    assert torch.allclose(new32.double(), stretch_positions(table), atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(keep=76), dict(keep=-1), dict(ratio=0)])
def test_bad_arguments(table, kwargs):
    with pytest.raises(ValueError):
        stretch_positions(table, **kwargs)


def test_bad_shape():
    with pytest.raises(ValueError, match="Tensor\\[L, W\\]"):
        stretch_positions(torch.randn(77))
