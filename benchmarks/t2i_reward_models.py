"""Which reward model can preference optimization trust? The segment-level score of each model, whole and split.

For `n` held-out 3 x 3 ShapeScenes captions, each reward model scores images with LongAlign's reweighted
segment-level score S_w (`vision_long.diffusion.scoring`; w = 1 the plain score, w = 0 the text-relevant part only),
through the same differentiable input path as `vision-long train preference` (`reward_pixels`, one fixed crop):

- t2i_r1: text-to-image R@1 of the captions over the n rendered scenes (LongAlign's Table 1 compares the plain score
  with its text-relevant part this way);
- gt>color, gt>shape: how often the rendered scene outscores the same scene with one random object's color
  (shape) changed, the details a long-prompt reward must see;
- gt>gen: how often the rendered scene outscores the pipeline's own generation (`segments`, DDIM 25 steps);
- rho_gen: Spearman correlation, over the generations, of S_w with the alignment metric's per-image accuracy.

Chance is 50 for the pair columns, 100 / n for t2i_r1 and 0 for rho_gen.

    python -m benchmarks.t2i_reward_models --models default default-77 runs/v4/longclip/model
"""

from __future__ import annotations

import argparse
import dataclasses
import random

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.results import machine, update_section
from vision_long.data.scenes import COLORS, SHAPES, Scene
from vision_long.diffusion.pipelines import load_pipeline
from vision_long.diffusion.preference import reward_pixels
from vision_long.diffusion.scoring import (
    common_direction,
    decompose_scores,
    segment_text_embeddings,
)
from vision_long.encoders.loading import load_encoder
from vision_long.eval.alignment import (
    evaluation_scenes,
    generate_images,
    load_cell_parser,
    object_scores,
    parse_images,
)
from vision_long.training.t2i import pixels

WEIGHTS = (1.0, 0.3, 0.0)
SWAP_SEED = 0


def swapped(scene: Scene, attribute: str, rng: random.Random) -> Scene:
    """`scene` with one random object's `attribute` ("color" or "shape") changed to another valid value."""
    index = rng.choice([i for i, obj in enumerate(scene.objects) if obj is not None])
    obj = scene.objects[index]
    pool = COLORS if attribute == "color" else SHAPES
    choices = [v for v in pool if v not in (getattr(obj, attribute), obj.outline)]
    return scene.with_object(index, dataclasses.replace(obj, **{attribute: rng.choice(choices)}))


@torch.no_grad()
def reward_features(encoder, images: list) -> torch.Tensor:
    """Normalized image embeddings Tensor[B, D] through the training reward's input path (crop seed 0)."""
    inputs = reward_pixels(pixels(images, torch.device("cpu")), encoder, torch.Generator().manual_seed(0))
    return F.normalize(encoder.encode_pixels(inputs).float(), dim=-1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two 1-D arrays (ties broken by order)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


@torch.no_grad()
def reward_model_row(spec: str, captions: list[str], images: dict[str, list], accuracy: np.ndarray) -> list[dict]:
    """One dict per w in WEIGHTS with the model's columns (in %, rho as a fraction) and the parts' means."""
    encoder = load_encoder(spec)
    text = segment_text_embeddings(encoder, captions).clone()
    direction = common_direction(text)
    features = {name: reward_features(encoder, imgs) for name, imgs in images.items()}
    parts = {name: decompose_scores(text, f, direction) for name, f in features.items()}
    eta = text @ direction
    rows = []
    for w in WEIGHTS:
        scores = {name: p.reweighted(w).numpy() for name, p in parts.items()}
        matrix = (text - (1 - w) * eta[:, None] * direction) @ features["rendered"].T  # S_w(caption i, image j)
        r1 = (matrix.argmax(1) == torch.arange(len(captions))).float().mean().item()
        rows.append({
            "model": spec, "w": w, "t2i_r1": 100 * r1,
            **{f"gt>{k}": 100 * float((scores["rendered"] > scores[k]).mean()) for k in ("color", "shape", "gen")},
            "rho_gen": spearman(scores["gen"], accuracy),
            "relevant": float(parts["rendered"].relevant.mean()), "irrelevant": float(parts["rendered"].irrelevant.mean()),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "default-77"], help="reward model specs")
    parser.add_argument("--pipeline", help="diffusers directory for gt>gen (default: the embedded one)")
    parser.add_argument("--n", type=int, default=128, help="evaluation scenes (3 x 3)")
    parser.add_argument("--seed", type=int, default=7, help="evaluation seed (the alignment suite uses 0)")
    parser.add_argument("--section", help="write the table to this RESULTS.md section")
    args = parser.parse_args()

    scenes = evaluation_scenes(args.n, args.seed, 3)
    captions = [s.caption() for s in scenes]
    rng = random.Random(SWAP_SEED)
    pipe = load_pipeline(args.pipeline)
    generated = generate_images(pipe, captions, list(range(args.n)), "segments", 25, 7.5, 16)
    parsed = parse_images(load_cell_parser(), generated, 3)
    accuracy = np.array([np.mean(object_scores(s, cells)) for s, cells in zip(scenes, parsed, strict=True)])
    images = {"rendered": [s.render(64) for s in scenes], "color": [swapped(s, "color", rng).render(64) for s in scenes],
              "shape": [swapped(s, "shape", rng).render(64) for s in scenes], "gen": generated}

    lines = ["| reward model | w | t2i_r1 | gt>color | gt>shape | gt>gen | rho_gen | relevant | irrelevant |",
             "|---|---|---|---|---|---|---|---|---|"]
    for spec in args.models:
        for row in reward_model_row(spec, captions, images, accuracy):
            line = (f"| {row['model']} | {row['w']:g} | {row['t2i_r1']:.1f} | {row['gt>color']:.1f} | "
                    f"{row['gt>shape']:.1f} | {row['gt>gen']:.1f} | {row['rho_gen']:.2f} | {row['relevant']:.4f} | "
                    f"{row['irrelevant']:.4f} |")
            lines.append(line)
            print(line, flush=True)
    command = f"python -m benchmarks.t2i_reward_models --models {' '.join(args.models)} --n {args.n} --seed {args.seed}"
    command += f" --pipeline {args.pipeline}" if args.pipeline else ""
    if args.section:
        setup = (f"Machine: {machine()}. {args.n} evaluation scenes (3x3); the generations' mean accuracy "
                 f"{100 * accuracy.mean():.1f} %. relevant / irrelevant: the two parts' means on the rendered scenes.")
        heading = f"## Reward models for preference optimization ({args.section})"
        update_section(args.section, "\n".join([heading, "", f"Command: `{command} --section {args.section}`", setup,
                                                 "", *lines]))


if __name__ == "__main__":
    main()
