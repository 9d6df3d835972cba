"""Multi-resolution crops, patch-grid pooling and zoom-in crop selection (Dragonfly, reference notes §1).

An image is seen at three resolutions (Dragonfly v2, §1.2), every crop `crop_size` x `crop_size` pixels:
  low     the whole image stretched to one crop (the global view);
  medium  a 2 x 2, 1 x 4 or 4 x 1 grid (columns x rows), whichever `select_best_resolution` prefers;
  high    the medium grid times `high_factor` per side: 6 x 6, 3 x 12 or 12 x 3 at the default factor 3.
Medium and high crops are mean-pooled from the vision tower's patch grid to `pooled_grid` per side (24 x 24 -> 6 x 6
at the reference sizes), the CLS token kept.

Two ways to keep only some high crops ("zoom in"):
  `select_zoom_v1`    Dragonfly v1 (§1.3): per medium crop, the top-k high crops inside it by the dot product of
                      token-mean projected features. It never looks at the question.
  `select_zoom_text`  ours: the top-k high crops by cosine similarity between a long-text CLIP's embedding of the
                      question and the crops' image embeddings, or by a learned head over the same embeddings
                      that also scores where the question points (`zoom_head.TextZoomHead`).
Both return the chosen crops' boxes in the original image's pixels and their scores, for visualization.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from vision_long.encoders.base import Encoder

REFERENCE_CROP_SIZE = 336  # Dragonfly v2's `shortest_edge` (CLIP ViT-L/14-336)
HIGH_FACTOR = 3  # Dragonfly v2: high resolution = 3 x the medium grid per side
POOLED_GRID = 6  # Dragonfly v2: 4 x 4 average pooling of a 24 x 24 patch grid
V1_TOP_K = 3  # Dragonfly v1 keeps 3 high crops per medium crop
TEXT_TOP_K = 4  # text-conditioned zoom: high crops kept for the whole image
MEDIUM_LAYOUTS: tuple[tuple[int, int], ...] = (
    (2, 2),
    (1, 4),
    (4, 1),
)  # (columns, rows), Dragonfly v2's order

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in the original image's pixels


@dataclass(frozen=True)
class MultiResolutionConfig:
    """Crop geometry: crop side in pixels, high grid per medium grid cell side, and pooled grid side per crop."""

    crop_size: int = REFERENCE_CROP_SIZE
    high_factor: int = HIGH_FACTOR
    pooled_grid: int = POOLED_GRID

    def __post_init__(self) -> None:
        for name in ("crop_size", "high_factor", "pooled_grid"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; `from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiResolutionConfig:
        """The config written by `to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class CropGrid:
    """One resolution's crops: `columns` x `rows` crops in row-major order, each with its box in the original."""

    columns: int
    rows: int
    crops: tuple[Image.Image, ...]
    boxes: tuple[Box, ...]

    def __len__(self) -> int:
        return len(self.crops)

    def index_at(self, point: tuple[float, float]) -> int:
        """The row-major index of the crop whose box holds `point` ((x, y) in the original's pixels)."""
        x, y = point
        for index, (left, top, right, bottom) in enumerate(self.boxes):
            if left <= x < right and top <= y < bottom:
                return index
        raise ValueError(f"no crop of this {self.columns} x {self.rows} grid holds the point {point}")


@dataclass(frozen=True)
class MultiResolutionCrops:
    """An image's global view (one crop), medium grid (4 crops) and high grid (4 x high_factor**2 crops)."""

    original_size: tuple[int, int]  # (width, height)
    global_view: Image.Image
    medium: CropGrid
    high: CropGrid

    def high_regions(self) -> torch.Tensor:
        """LongTensor[H]: the medium crop each high crop lies in (row-major indices in both grids)."""
        factor = self.high.columns // self.medium.columns
        index = torch.arange(len(self.high))
        row, column = index // self.high.columns, index % self.high.columns
        return (row // factor) * self.medium.columns + column // factor

    def high_centers(self) -> torch.Tensor:
        """Tensor[H, 2]: each high crop's centre (x, y) as fractions of the image's width and height."""
        width, height = self.original_size
        return torch.tensor([((left + right) / 2 / width, (top + bottom) / 2 / height)
                             for left, top, right, bottom in self.high.boxes])


@dataclass(frozen=True)
class ZoomSelection:
    """High crops chosen by a zoom-in method, in selection order (best first; v1: region by region).

    indices: positions in the high grid (row-major); scores: their scores (dot products for v1, cosine
    similarities for text, or the text zoom head's logits when one scores); boxes: their boxes in the original
    image; all_scores: Tensor[H], every high crop's score (v1 scores each high crop against the medium crop it lies
    in).
    """

    method: str
    indices: tuple[int, ...]
    scores: tuple[float, ...]
    boxes: tuple[Box, ...]
    all_scores: torch.Tensor


def select_best_resolution(original_size: tuple[int, int], candidates: list[tuple[int, int]]) -> tuple[int, int]:
    """The (width, height) among `candidates` that shows `original_size` (width, height) best (LLaVA's rule).

    Fitting the image inside a candidate with its aspect ratio kept, prefer the largest effective resolution
    (the fitted pixel count, capped at the original's), then the least wasted canvas; ties keep the earlier one.
    """
    width, height = _check_size(original_size, "original_size")
    if not candidates:
        raise ValueError("candidates must hold at least one (width, height)")

    def fit(candidate: tuple[int, int]) -> tuple[int, int]:
        cw, ch = _check_size(candidate, "candidate")
        scale = min(cw / width, ch / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        return effective, -(cw * ch - effective)

    return max(candidates, key=fit)


def crop_grid(image: Image.Image, columns: int, rows: int, crop_size: int) -> CropGrid:
    """Stretch `image` to (columns x rows) crops of `crop_size` pixels and cut it row-major (Dragonfly's resize).

    The boxes are the crops' regions in `image`'s own pixels: (left, top, right, bottom) as floats.
    """
    _check_image(image)
    resized = image.resize((columns * crop_size, rows * crop_size), Image.Resampling.BICUBIC)
    cell_w, cell_h = image.width / columns, image.height / rows
    crops, boxes = [], []
    for row in range(rows):
        for column in range(columns):
            x, y = column * crop_size, row * crop_size
            crops.append(resized.crop((x, y, x + crop_size, y + crop_size)))
            boxes.append(
                (
                    column * cell_w,
                    row * cell_h,
                    (column + 1) * cell_w,
                    (row + 1) * cell_h,
                )
            )
    return CropGrid(columns, rows, tuple(crops), tuple(boxes))


def multi_resolution_crops(image: Image.Image, config: MultiResolutionConfig) -> MultiResolutionCrops:
    """Dragonfly v2's three resolutions of `image` (§1.2): global view, medium grid, high grid (high_factor x)."""
    image = _check_image(image).convert("RGB")
    size = config.crop_size
    candidates = [(columns * size, rows * size) for columns, rows in MEDIUM_LAYOUTS]
    width, height = select_best_resolution(image.size, candidates)
    columns, rows = width // size, height // size
    factor = config.high_factor
    return MultiResolutionCrops(
        original_size=image.size,
        global_view=image.resize((size, size), Image.Resampling.BICUBIC),
        medium=crop_grid(image, columns, rows, size),
        high=crop_grid(image, columns * factor, rows * factor, size),
    )


def pool_patch_grid(tokens: torch.Tensor, pooled_grid: int) -> torch.Tensor:
    """Mean-pool each crop's square patch grid to `pooled_grid` per side, keeping the CLS token first.

    tokens: Tensor[N, 1 + G*G, D] (CLS, then the G x G patches row-major) -> Tensor[N, 1 + P*P, D], P = pooled_grid.
    This is `avg_pool2d(kernel_size=G // P)` over the patch grid (Dragonfly v2: 24 -> 6 with 4 x 4 windows), so
    P must divide G; P = G keeps every patch.
    """
    if tokens.dim() != 3:
        raise ValueError(f"expected tokens Tensor[N, 1 + G*G, D], got shape {tuple(tokens.shape)}")
    n, length, dim = tokens.shape
    grid = round((length - 1) ** 0.5)
    if grid * grid != length - 1:
        raise ValueError(f"{length} tokens are not a CLS token plus a square patch grid")
    if not 1 <= pooled_grid <= grid or grid % pooled_grid:
        raise ValueError(f"pooled_grid must divide the {grid} x {grid} patch grid's side, got {pooled_grid}")
    patches = tokens[:, 1:].transpose(1, 2).reshape(n, dim, grid, grid)
    window = grid // pooled_grid
    pooled = F.avg_pool2d(patches, kernel_size=window, stride=window).flatten(2).transpose(1, 2)
    return torch.cat([tokens[:, :1], pooled], dim=1)


def select_zoom_v1(
    crops: MultiResolutionCrops,
    medium_features: torch.Tensor,
    high_features: torch.Tensor,
    k: int = V1_TOP_K,
) -> ZoomSelection:
    """Dragonfly v1's zoom-in (§1.3): per medium crop, the `k` high crops inside it that match it best.

    medium_features: Tensor[M, T, D], high_features: Tensor[H, T', D] (projected tokens of each crop). A crop's
    summary is its token mean; a high crop's score is the dot product of its summary with its medium crop's.
    Regions are spatial (the high crops a medium crop covers), not Dragonfly's contiguous runs of row-major
    indices, which for wide grids are rows rather than quadrants.
    """
    if medium_features.dim() != 3 or medium_features.shape[0] != len(crops.medium):
        shape = tuple(medium_features.shape)
        raise ValueError(f"medium_features must be Tensor[{len(crops.medium)}, T, D], got {shape}")
    if high_features.dim() != 3 or high_features.shape[0] != len(crops.high):
        raise ValueError(f"high_features must be Tensor[{len(crops.high)}, T, D], got {tuple(high_features.shape)}")
    regions = crops.high_regions()
    per_region = len(crops.high) // len(crops.medium)
    if not 1 <= k <= per_region:
        raise ValueError(f"k must be in [1, {per_region}] (high crops per medium crop), got {k}")
    medium_summary = medium_features.float().mean(dim=1)  # [M, D]
    high_summary = high_features.float().mean(dim=1)  # [H, D]
    scores = (high_summary * medium_summary[regions]).sum(dim=-1)  # [H]
    chosen: list[int] = []
    for region in range(len(crops.medium)):
        members = (regions == region).nonzero().squeeze(1)
        chosen += members[scores[members].topk(k).indices].tolist()
    return _selection("v1", crops, chosen, scores)


def select_zoom_text(
    crops: MultiResolutionCrops,
    question: str,
    encoder: Encoder,
    k: int = TEXT_TOP_K,
    head: torch.nn.Module | None = None,
) -> ZoomSelection:
    """Text-conditioned zoom-in: the `k` high crops that best match the question, best first.

    Scores are cosine similarities between `encoder.encode_text([question])` (Tensor[1, D]) and
    `encoder.encode_image(high crops)` (Tensor[H, D]); a long-text CLIP reads the whole question. With a `head`
    (a `zoom_head.TextZoomHead`) the scores are the head's: a learned scale on those similarities plus where the
    question points, read at each crop's centre.
    """
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder must satisfy vision_long's Encoder protocol, got {type(encoder).__name__}")
    question = check_question(question)
    if not 1 <= k <= len(crops.high):
        raise ValueError(f"k must be in [1, {len(crops.high)}] (the number of high crops), got {k}")
    with torch.inference_mode():
        text = encoder.encode_text([question], normalize=True)  # [1, D]
        images = encoder.encode_image(list(crops.high.crops), normalize=True)  # [H, D]
        if head is None:
            scores = (images.float() @ text.float().T).squeeze(1)  # [H]
        else:
            device = next(head.parameters()).device
            scores = head(text.float().to(device), images.float().to(device)[None],
                          crops.high_centers().to(device)[None])[0]
    return _selection("text", crops, scores.topk(k).indices.tolist(), scores)


def check_question(question: str) -> str:
    """`question` stripped; a TypeError for a non-string and a ValueError for an empty one."""
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question must not be empty")
    return question.strip()


def open_image(image: Image.Image | str | Path) -> Image.Image:
    """`image` as RGB, or the RGB image at a path: what the model accepts; clear errors for a missing file or
    another type."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        with Image.open(path) as opened:
            return opened.convert("RGB")
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image or a path, got {type(image).__name__}")
    return image.convert("RGB")


def _selection(method: str, crops: MultiResolutionCrops, chosen: list[int], scores: torch.Tensor) -> ZoomSelection:
    return ZoomSelection(
        method=method,
        indices=tuple(chosen),
        scores=tuple(scores[chosen].tolist()),
        boxes=tuple(crops.high.boxes[i] for i in chosen),
        all_scores=scores.detach().cpu(),
    )


def _check_image(image: Any) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    _check_size(image.size, "image size")
    return image


def _check_size(size: Any, name: str) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(f"{name} must be a (width, height) pair of positive ints, got {size!r}")
    return size[0], size[1]
