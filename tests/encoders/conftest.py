import pytest
import torch
from PIL import Image

from vision_long.tokenization import CLIPTokenizer, TokenizerConfig

TEXTS = [
    "a cat",
    "A painting of a squirrel eating a burger.",
    " ".join(f"a {c} shape next to a blue square number {i}." for i, c in enumerate(["red", "green", "tiny"] * 3)),
    "the end",
]


@pytest.fixture(scope="session")
def texts():
    return TEXTS


@pytest.fixture(scope="session")
def images():
    g = torch.Generator().manual_seed(1)
    return [Image.fromarray((torch.rand(40 + 7 * i, 50, 3, generator=g) * 255).byte().numpy()) for i in range(3)]


def padded_ids(texts, context, num_merges=488, truncate=True):
    """Token ids padded to the full context, as upstream Long-CLIP feeds them."""
    return CLIPTokenizer(TokenizerConfig(context, num_merges))(texts, truncate=truncate).ids
