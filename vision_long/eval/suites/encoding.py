"""Embedding a benchmark through any `Encoder`: image files streamed from disk, captions under an explicit
truncation policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vision_long.encoders.base import Encoder


class ImageFiles(Dataset):
    """Image files decoded to RGB and preprocessed: item i -> Tensor[3, H, W]."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise OSError(f"cannot read image {path}: {e}") from e
        return self.preprocess(rgb)


def encode_image_files(
    model: Encoder, paths: Sequence[Path], batch_size: int = 128, workers: int = 0, progress: bool = False
) -> torch.Tensor:
    """Normalized Tensor[N, D] for N image files, decoded and preprocessed by `workers` processes (0: in this
    one) and encoded `batch_size` at a time, so that memory never holds more than a few batches of pixels."""
    loader = DataLoader(ImageFiles(paths, model.preprocess), batch_size=batch_size, num_workers=workers)
    out = []
    with tqdm(total=len(paths), desc="encode images", unit="img", disable=not progress) as bar:
        for pixels in loader:
            out.append(model.encode_image(pixels, normalize=True, batch_size=batch_size))
            bar.update(len(pixels))
    return torch.cat(out)


def encode_captions(
    model: Encoder, captions: Sequence[str], batch_size: int = 128, truncate: bool = True, progress: bool = False
) -> tuple[torch.Tensor, int]:
    """Normalized Tensor[N, D] for N captions and how many of them are longer than the model's context.

    With `truncate`, those are cut to the context (EOT last), as Long-CLIP's evaluations do at 248 tokens;
    without, any such caption is an error that says how many there are.
    """
    context = model.context_length
    lengths = [model.tokenizer.count_tokens(c) for c in captions]
    too_long = sum(n > context for n in lengths)
    if too_long and not truncate:
        raise ValueError(
            f"{too_long} of {len(captions)} captions are longer than the model's {context}-token context "
            f"(longest: {max(lengths)} tokens); evaluate with truncation on (--truncate on, the papers' protocol)"
        )
    emb = model.encode_text(list(captions), normalize=True, batch_size=batch_size, truncate=truncate,
                            progress=progress)
    return emb, too_long
