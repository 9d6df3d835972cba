"""The `Encoder` protocol: what retrieval, scoring, the API and the demo need from any encoder family.

Long-CLIP, plain CLIP and ProCLIP all satisfy it, so the code above this layer never asks which one it holds.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch
from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """Texts and images in, one vector each out (L2-normalized by default)."""

    family: str
    tokenizer: object
    preprocess: Callable[[Image.Image], torch.Tensor]  # PIL image -> Tensor[3, H, W]

    @property
    def context_length(self) -> int:
        """Longest text, in tokens including start/end, that `encode_text` accepts without truncation."""
        ...

    @property
    def embed_dim(self) -> int:
        """D, the width of the joint embedding space."""
        ...

    @property
    def image_size(self) -> int:
        """Side of the square images the image tower takes (what `preprocess` produces)."""
        ...

    def encode_text(self, texts: list[str] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Texts (or token ids LongTensor[N, L]) -> Tensor[N, D]."""
        ...

    def encode_image(self, images: list[Image.Image] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """PIL images (or a preprocessed Tensor[N, 3, H, W]) -> Tensor[N, D]."""
        ...
