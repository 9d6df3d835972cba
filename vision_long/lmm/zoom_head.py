"""A learned scorer for text-conditioned zoom: what the question names, and where it points.

`select_zoom_text` ranks high crops by a long-text CLIP's similarity between the question and each crop's image.
That finds a crop by what it shows ("What shape is the purple object?") but not by where it is ("... in the cell
at row 4, column 2?"): a crop's image embedding does not know its place in the image, and on ShapeScenes VQA the
asked cell ranks first for 7-10 % of such questions, near chance (benchmarks/RESULTS.md, lmm_zoom_probe).

`TextZoomHead` adds the missing term. From the same CLIP's embedding of the question it predicts a heat map over
the image (`place_grid` x `place_grid` logits over normalized positions), read at each crop's centre, and how much
the similarity counts for this question (an offset to a learned log-scale):

    score(crop) = exp(log_content_scale + offset(text)) * cos(text, crop image) + heat(text)[crop centre]

On ShapeScenes VQA the shipped LMM's head puts the asked object's crop first for 84 % of evaluation questions about
an object, against 10.5 % for the similarity alone (RESULTS.md, lmm_vqa_modes).

The heat map is resolution-free (any crop layout reads it by its boxes). `fit_zoom_head` fits it before the LM is
trained, by cross-entropy over an image's high crops with the crop holding the asked object as the target, on CLIP
embeddings computed once (`zoom_head_data`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vision_long.encoders.base import Encoder
from vision_long.lmm.processing import MultiResolutionCrops

PLACE_GRID = 12  # heat-map side: 2 x 2 heat cells per high crop of a square image's 6 x 6 grid
HEAD_HIDDEN = 256
CONTENT_SCALE_INIT = 10.0
TEXT_STD_FLOOR = 1e-6  # cosine similarities of one image's crops differ by hundredths; start them at logit scale


class TextZoomHead(nn.Module):
    """Scores high crops for a question: a learned scale on the CLIP similarity plus a learned place term."""

    def __init__(self, text_dim: int, place_grid: int = PLACE_GRID, hidden: int = HEAD_HIDDEN):
        super().__init__()
        if text_dim < 1 or place_grid < 1 or hidden < 1:
            raise ValueError(
                f"text_dim, place_grid and hidden must be positive, got {text_dim}, {place_grid}, {hidden}"
            )
        self.place_grid = place_grid
        # Per question: P*P heat logits and one log-scale offset for the CLIP similarity, so a question that names
        # a place can rely on the heat map and one that names an object on what the crops show.
        self.place = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, place_grid**2 + 1))
        self.log_content_scale = nn.Parameter(torch.tensor(math.log(CONTENT_SCALE_INIT)))
        # The place MLP reads standardized embeddings (`set_text_statistics`): questions that differ only in the
        # cell they name have CLIP embeddings with cosine similarity near 1, so the raw differences are tiny.
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))

    def set_text_statistics(self, text: torch.Tensor) -> None:
        """Standardize the place MLP's input per channel with the mean and std of `text` (Tensor[N, D])."""
        self.text_mean.copy_(text.mean(dim=0))
        self.text_std.copy_(text.std(dim=0).clamp_min(TEXT_STD_FLOOR))

    def heat(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each question points and how much its CLIP similarity counts: Tensor[B, D] normalized text
        embeddings -> (Tensor[B, P, P] heat logits, row-major over the image, top row first; Tensor[B] scales)."""
        out = self.place((text - self.text_mean) / self.text_std)
        heat = out[:, :-1].view(-1, self.place_grid, self.place_grid)
        return heat, (self.log_content_scale + out[:, -1]).exp()

    def forward(self, text: torch.Tensor, images: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Crop scores: text Tensor[B, D] and images Tensor[B, H, D] (normalized CLIP embeddings of each question and
        its image's H high crops), centers Tensor[B, H, 2] (each crop's centre, (x, y) in [0, 1]) -> Tensor[B, H]."""
        heat, scale = self.heat(text)
        content = scale[:, None] * torch.einsum("bhd,bd->bh", images, text)
        grid = (centers * 2 - 1).unsqueeze(2)  # [B, H, 1, 2]: grid_sample's (x, y) in [-1, 1]
        place = F.grid_sample(heat.unsqueeze(1), grid, align_corners=False)  # [B, 1, H, 1]
        return content + place[:, 0, :, 0]


@dataclass
class ZoomHeadData:
    """Cached inputs of `TextZoomHead` for N questions: text Tensor[N, D], images Tensor[N, H, D], centers
    Tensor[N, H, 2] and targets LongTensor[N] (the high crop holding the asked object)."""

    text: torch.Tensor
    images: torch.Tensor
    centers: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def split(self, first: int) -> tuple[ZoomHeadData, ZoomHeadData]:
        """The first `first` questions and the rest."""
        parts = [(t[:first], t[first:]) for t in (self.text, self.images, self.centers, self.targets)]
        return ZoomHeadData(*(p[0] for p in parts)), ZoomHeadData(*(p[1] for p in parts))


@torch.no_grad()
def zoom_head_data(
    crops: Sequence[MultiResolutionCrops],
    questions: Sequence[str],
    points: Sequence[tuple[float, float]],
    encoder: Encoder,
    progress: bool = False,
) -> ZoomHeadData:
    """Encode each question and its image's high crops with `encoder` (the long-text CLIP text zoom uses); the
    target is the crop holding `points[i]` (the asked object, in the image's pixels). Every image must have the
    same number of high crops."""
    if not len(crops) == len(questions) == len(points) > 0:
        raise ValueError(f"need equally many crops, questions and points (at least one), got "
                         f"{len(crops)}, {len(questions)}, {len(points)}")
    counts = {len(c.high) for c in crops}
    if len(counts) != 1:
        raise ValueError(f"every image must have the same number of high crops, got {sorted(counts)}")
    # clone(): encoders may return inference-mode tensors, which `fit_zoom_head`'s autograd cannot use
    text = encoder.encode_text(list(questions), normalize=True).float().cpu().clone()
    images = torch.stack([encoder.encode_image(list(c.high.crops), normalize=True).float().cpu().clone()
                          for c in tqdm(crops, desc="zoom head: crops", disable=not progress)])
    centers = torch.stack([c.high_centers() for c in crops])
    targets = torch.tensor([c.high.index_at(p) for c, p in zip(crops, points, strict=True)])
    return ZoomHeadData(text, images, centers, targets)


def zoom_head_top1(head: TextZoomHead, data: ZoomHeadData) -> float:
    """The share of questions whose target crop `head` scores highest."""
    with torch.no_grad():
        scores = head(data.text, data.images, data.centers)
    return (scores.argmax(dim=1) == data.targets).float().mean().item()


def fit_zoom_head(
    head: TextZoomHead, data: ZoomHeadData, steps: int = 800, lr: float = 3e-3, batch_size: int = 256, seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fit `head` by cross-entropy over each question's crops (AdamW, minibatches drawn with `seed`), after
    setting its text statistics from `data`; returns the loss per step."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    head.set_text_statistics(data.text)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    head.train()
    for _ in tqdm(range(steps), desc="zoom head", disable=not progress):
        batch = torch.randint(len(data), (min(batch_size, len(data)),), generator=generator)
        scores = head(data.text[batch], data.images[batch], data.centers[batch])
        loss = F.cross_entropy(scores, data.targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    head.eval()
    return losses
