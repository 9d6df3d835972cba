"""Turning user inputs (texts, token ids, PIL images, pixel tensors) into batches an encoder can run.

Shared by every encoder family so that input validation and length bucketing behave the same everywhere.
"""

from __future__ import annotations

from typing import Callable

from tqdm.auto import tqdm

import torch
from PIL import Image


def ids_to_lists(ids: torch.Tensor) -> list[list[int]]:
    """Rows of a padded LongTensor[N, L] cut after their EOT token (found as the row's argmax, CLIP-style)."""
    ends = ids.argmax(-1) + 1
    return [row[:end].tolist() for row, end in zip(ids, ends.tolist())]


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted by length) so that padding waste is small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def check_pixels(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """Validate an already preprocessed batch Tensor[N, 3, image_size, image_size]."""
    if pixels.dim() != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (image_size, image_size):
        raise ValueError(
            f"expected preprocessed images Tensor[N, 3, {image_size}, {image_size}], got {tuple(pixels.shape)}; "
            "pass PIL images to have them preprocessed"
        )
    if not pixels.is_floating_point():
        raise ValueError(f"preprocessed images must be a floating-point tensor, got {pixels.dtype}")
    return pixels


def preprocess_images(
    images: list[Image.Image], preprocess: Callable[[Image.Image], torch.Tensor], offset: int = 0
) -> torch.Tensor:
    """Preprocess PIL images into Tensor[N, 3, H, W]; a non-image names its position in the input."""
    tensors = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"image {offset + i} is a {type(image).__name__}, expected a PIL.Image.Image")
        tensors.append(preprocess(image))
    return torch.stack(tensors)


def encode_image_batches(
    images: list[Image.Image] | torch.Tensor,
    encode_pixels: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Callable[[Image.Image], torch.Tensor],
    image_size: int,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Image features (not normalized) Tensor[N, D] of PIL images (preprocessed here) or a Tensor[N, 3, H, W].

    The `encode_image` loop every encoder family shares: batches of `batch_size`, inputs validated with their
    position in the input named, pixels moved to the tower's device and dtype.
    """
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="encode images", unit="batch", disable=not progress):
        chunk = images[start : start + batch_size]
        if isinstance(images, torch.Tensor):
            pixels = check_pixels(chunk, image_size)
        else:
            pixels = preprocess_images(chunk, preprocess, offset=start)
        out.append(encode_pixels(pixels.to(device, dtype)))
    return torch.cat(out) if out else torch.empty(0, 0, device=device, dtype=dtype)
