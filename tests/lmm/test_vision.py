"""The default CLIP's image tower as a transformers vision tower: same features as our `encode_pixels`."""

import pytest
import torch
from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

from vision_long.lmm import vision_tower_from_clip


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_projected_output_equals_encode_pixels(default_encoder, pixels):
    tower = vision_tower_from_clip(default_encoder, projection=True)
    assert isinstance(tower, CLIPVisionModelWithProjection)
    with torch.no_grad():
        ours = default_encoder.encode_pixels(pixels)
        theirs = tower(pixel_values=pixels).image_embeds
    assert theirs.dtype == torch.float32 and torch.allclose(theirs, ours, atol=1e-5)


def test_plain_tower_pools_the_same_cls_and_cuts_blocks_exactly(default_encoder, pixels):
    tower = vision_tower_from_clip(default_encoder)
    assert type(tower) is CLIPVisionModel and not tower.training
    with torch.no_grad():
        out = tower(pixel_values=pixels, output_hidden_states=True)
        ours = default_encoder.encode_pixels(pixels)
        cut = vision_tower_from_clip(default_encoder, layers=3)(pixel_values=pixels, output_hidden_states=True)
    assert torch.allclose(out.pooler_output @ default_encoder.visual.proj, ours, atol=1e-5)
    assert len(out.hidden_states) == default_encoder.config.vision.layers + 1  # embeddings + one per block
    assert len(cut.hidden_states) == 4 and torch.equal(cut.hidden_states[-1], out.hidden_states[-2])
    assert cut.hidden_states[-1].shape == (3, 1 + 8 * 8, 128)


def test_spec_and_errors(default_encoder, pixels):
    by_spec = vision_tower_from_clip("default", layers=1)
    assert by_spec.config.num_hidden_layers == 1 and by_spec.config.image_size == 64
    with pytest.raises(ValueError, match=r"layers must be an int in \[1, 4\]"):
        vision_tower_from_clip(default_encoder, layers=5)
    with pytest.raises(ValueError, match="layers"):
        vision_tower_from_clip(default_encoder, layers=0)
    with pytest.raises(TypeError, match="expected a LongCLIP"):
        vision_tower_from_clip(torch.nn.Linear(2, 2))
