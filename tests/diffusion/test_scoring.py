"""Segment-level CLIP score and its text-relevant / text-irrelevant decomposition (reference §3, §4.1)."""

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vision_long.diffusion.scoring import (
    common_direction,
    decompose_scores,
    reweighted_score,
    segment_clip_score,
    segment_text_embeddings,
)

PROMPTS = [
    "A red circle in the top left cell. A blue square below it. A green star on the right!",
    "A single striped triangle",
    "Two dotted circles; one large square. The grid is 3 by 3.",
]


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    return [Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()) for _ in PROMPTS]


def test_hand_computed_decomposition():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    parts = decompose_scores(text, image)
    r = 1 / math.sqrt(2)
    assert torch.allclose(parts.direction, torch.tensor([r, r]))
    assert torch.allclose(parts.eta, torch.tensor([r, r]))
    assert torch.allclose(parts.score, torch.tensor([1.0, 0.0]))
    assert torch.allclose(parts.irrelevant, torch.tensor([0.5, 0.5]))
    assert torch.allclose(parts.relevant, torch.tensor([0.5, -0.5]))
    assert torch.allclose(parts.reweighted(), torch.tensor([0.65, -0.35]))  # w = 0.3


def test_segment_embeddings_are_unrenormalized_means(longclip):
    got = segment_text_embeddings(longclip, PROMPTS)
    segments = [["A red circle in the top left cell.", "A blue square below it.", "A green star on the right!"],
                ["A single striped triangle"],
                ["Two dotted circles;", "one large square.", "The grid is 3 by 3."]]
    for row, segs in zip(got, segments):
        want = F.normalize(longclip.encode_text(segs), dim=-1).mean(0)
        assert torch.allclose(row, want, atol=1e-6)
    norms = got.norm(dim=-1)
    assert torch.isclose(norms[1], torch.tensor(1.0)) and (norms[[0, 2]] < 1).all()
    upstream = segment_text_embeddings(longclip, PROMPTS[2:], split_mode="upstream")  # '3.' / ' 3.' pieces
    assert not torch.allclose(upstream[0], got[2])


def test_segment_clip_score_and_identities(longclip, images):
    score = segment_clip_score(longclip, images, PROMPTS)
    text = segment_text_embeddings(longclip, PROMPTS)
    image = longclip.encode_image(images)
    assert torch.allclose(score, (text * image).sum(-1), atol=1e-6)
    parts = decompose_scores(text, image)
    assert torch.allclose(parts.score, score, atol=1e-6)
    assert torch.allclose(parts.relevant + parts.irrelevant, parts.score, atol=1e-6)  # the parts sum to the score
    assert torch.allclose(reweighted_score(text, image, w=1.0), score, atol=1e-6)  # w = 1: undecomposed
    assert torch.allclose(reweighted_score(text, image, w=0.0), parts.relevant, atol=1e-6)
    v = common_direction(text)
    for w in (0.0, 0.3, 0.5):
        formula = ((text - (1 - w) * (text @ v)[:, None] * v) * image).sum(-1)
        assert torch.allclose(reweighted_score(text, image, w=w), formula, atol=1e-6)
    with pytest.raises(ValueError, match="2 images for 3 prompts"):
        segment_clip_score(longclip, images[:2], PROMPTS)


def test_gradient_reaches_image_features(longclip):
    text = segment_text_embeddings(longclip, PROMPTS)
    image = F.normalize(torch.randn(3, text.shape[1]), dim=-1).requires_grad_(True)
    fixed_v = common_direction(torch.randn(8, text.shape[1]))  # e.g. a gathered global batch
    loss = 0.5 * (1 - reweighted_score(text, image, direction=fixed_v).mean())
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
