"""Asking about an image, for `vision-long ask` and the demo: the answer, the crops and the zoom scores, drawn.

`ask_image` answers with a `ZoomLMM` (default: the embedded `vision_long/assets/lmm-shapescenes`) and returns the
`LMMAnswer` (text, every crop's box, the zoom selection with its scores); `draw_crops` outlines on the image what
reached the LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vision_long.checkpoints import CONFIG_FILE
from vision_long.encoders.base import Encoder
from vision_long.encoders.loading import ASSETS
from vision_long.lmm.loading import load_lmm
from vision_long.lmm.model import LMMAnswer, ZoomLMM
from vision_long.lmm.processing import Box, open_image

DEFAULT_LMM = ASSETS / "lmm-shapescenes"
BUILD_HINT = (
    "build it with 'bash scripts/build_default_lmm.sh' (trains and installs it), or train one with "
    "'vision-long train lmm --out runs/lmm' and pass --model runs/lmm/model"
)
MEDIUM_COLOR = (0, 200, 255)  # medium crops: thin cyan
HIGH_COLOR = (255, 230, 0)  # high crops that reached the LM: thick yellow
GLOBAL_COLOR = (255, 255, 255)  # the global view (zoom "none"): the whole image


def default_lmm_path() -> Path:
    """The embedded default LMM's directory; FileNotFoundError saying how to build it when it is missing."""
    if not (DEFAULT_LMM / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"the default LMM is not installed at {DEFAULT_LMM}: {BUILD_HINT}")
    return DEFAULT_LMM


def resolve_lmm(model: ZoomLMM | str | Path | None = None, device: str | None = None) -> ZoomLMM:
    """`model` itself, or the LMM saved at a directory, or (None / "default") the embedded default LMM."""
    if isinstance(model, ZoomLMM):
        return model
    if model is None or model == "default":
        return load_lmm(default_lmm_path(), device=device)
    if not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a ZoomLMM, a directory or None, got {type(model).__name__}")
    return load_lmm(model, device=device)


def ask_image(
    image: Image.Image | str | Path,
    question: str,
    zoom: str = "text",
    model: ZoomLMM | str | Path | None = None,
    text_encoder: Encoder | None = None,
    **generate_kwargs: Any,
) -> LMMAnswer:
    """Answer `question` about `image` (PIL or path) under `zoom` ("text", "v1", "multires" or "none").

    `model`: a loaded `ZoomLMM` (reuse one across calls), a directory written by `save_lmm`, or None for the
    embedded default. The returned `LMMAnswer` holds `text`, `crops` (every crop with its box in the image's
    pixels), `selection` (for v1 / text: the chosen high crops' indices, boxes and scores, and `all_scores`
    Tensor[H] over every high crop) and `image_tokens`.
    """
    return resolve_lmm(model).ask(image, question, zoom=zoom, text_encoder=text_encoder, **generate_kwargs)


def crops_used(answer: LMMAnswer) -> tuple[list[Box], list[Box]]:
    """The boxes of the medium crops and of the high crops that reached the LM under `answer.zoom`."""
    if answer.zoom == "none":
        return [], []
    high = list(answer.crops.high.boxes) if answer.selection is None else list(answer.selection.boxes)
    return list(answer.crops.medium.boxes), high


def draw_crops(image: Image.Image | str | Path, answer: LMMAnswer, width: int = 3) -> Image.Image:
    """A copy of `image` with what reached the LM outlined: medium crops thin cyan, high crops thick yellow (each
    selected one labelled with its rank and zoom score), or for zoom "none" the whole image in white."""
    canvas = open_image(image)
    if canvas.size != answer.crops.original_size:
        raise ValueError(f"the image is {canvas.size}, the answer's crops are of a {answer.crops.original_size} image")
    draw = ImageDraw.Draw(canvas)
    medium, high = crops_used(answer)
    if answer.zoom == "none":
        draw.rectangle((0, 0, canvas.width - 1, canvas.height - 1), outline=GLOBAL_COLOR, width=width)
    for box in medium:
        draw.rectangle(_inside(box), outline=MEDIUM_COLOR, width=1)
    for box in high:
        draw.rectangle(_inside(box), outline=HIGH_COLOR, width=width)
    if answer.selection is not None:
        for rank, (box, score) in enumerate(zip(answer.selection.boxes, answer.selection.scores, strict=True), 1):
            draw.text((box[0] + width + 1, box[1] + width), f"{rank}:{score:.2f}", fill=HIGH_COLOR)
    return canvas


def _inside(box: Box) -> tuple[float, float, float, float]:
    """`box` as PIL's inclusive rectangle, kept inside its crop (right and bottom are exclusive edges)."""
    left, top, right, bottom = box
    return left, top, max(left, right - 1), max(top, bottom - 1)
