"""The `long-retrieval` suite: ShapeScenes text<->image retrieval with long, short and hard-negative captions.

Scenes come from the evaluation seed range (disjoint from training). Long captions longer than the model's
context are truncated (that is the point: a 77-token CLIP loses what comes later). Hard-negative groups are
scenes that differ in one object whose sentence starts after token 77, so only a model that reads past 77
tokens can rank its own image first within the group. Half of the groups change that object's color, half its
shape; R@1 is also reported per changed attribute, since a small image tower can resolve one and not the other.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

from vision_long.data.scenes import (
    EVAL_SEED_OFFSET,
    Scene,
    hard_negative_group,
    random_scene,
)
from vision_long.encoders.base import Encoder
from vision_long.eval.retrieval_metrics import (
    cosine_similarity_matrix,
    group_t2i_r1,
    retrieval_metrics,
)

HARD_GROUP_SIZE = 4
SEEDS_PER_RUN = 1_000_000  # eval seed s uses scenes EVAL_SEED_OFFSET + s * SEEDS_PER_RUN + i


@dataclass
class LongRetrievalResult:
    """The suite's metrics plus per-caption detail for the length plot."""

    metrics: dict
    caption_tokens: list[int]  # token count of each long caption (model tokenizer, with start/end)
    t2i_hit: list[bool]  # whether each long caption retrieved its own image at rank 1


def changed_object(group: list[Scene]) -> int:
    """The index (in `Scene.objects`) of the one object in which a `hard_negative_group`'s first two scenes differ."""
    base, other = group[0].objects, group[1].objects
    changed = [i for i, (a, b) in enumerate(zip(base, other)) if a != b]
    if len(changed) != 1:
        raise ValueError(f"expected scenes differing in exactly one object, they differ in {len(changed)}")
    return changed[0]


def changed_attribute(group: list[Scene]) -> str:
    """Which attribute, "color" or "shape", a `hard_negative_group` changes, in its `changed_object`."""
    index = changed_object(group)
    a, b = group[0].objects[index], group[1].objects[index]
    return next(name for name in ("color", "shape") if getattr(a, name) != getattr(b, name))


def suite_hard_groups(n: int, seed: int = 0, grid: int = 3) -> list[list[Scene]]:
    """The suite's `n // 4` hard-negative groups for `n` scenes at evaluation `seed` (they follow its n scenes)."""
    first = EVAL_SEED_OFFSET + seed * SEEDS_PER_RUN + n
    return [hard_negative_group(first + g, grid, HARD_GROUP_SIZE) for g in range(n // HARD_GROUP_SIZE)]


def hard_r1_by_attribute(text_emb: torch.Tensor, image_emb: torch.Tensor, groups: list[list[Scene]]) -> dict:
    """Group T2I R@1 over all hard-negative `groups` ("all") and over those changing a "color" / a "shape" (NaN
    when none does). text_emb, image_emb: Tensor[sum of group sizes, D], rows in the groups' scene order."""
    index, start = [], 0
    for group in groups:
        index.append(list(range(start, start + len(group))))
        start += len(group)
    attributes = [changed_attribute(group) for group in groups]
    out = {"all": group_t2i_r1(text_emb, image_emb, index) if index else float("nan")}
    for name in ("color", "shape"):
        chosen = [g for g, attribute in zip(index, attributes) if attribute == name]
        out[name] = group_t2i_r1(text_emb, image_emb, chosen) if chosen else float("nan")
    return out


def _encode_scenes(model: Encoder, scenes, batch_size: int, progress: bool):
    images = [s.render(model.image_size) for s in scenes]
    image_emb = model.encode_image(images, batch_size=batch_size, progress=progress)
    long_emb = model.encode_text([s.caption() for s in scenes], batch_size=batch_size, truncate=True, progress=progress)
    return image_emb, long_emb


def evaluate_long_retrieval(
    model: Encoder,
    n: int = 1000,
    seed: int = 0,
    grid: int = 3,
    batch_size: int = 128,
    progress: bool = False,
) -> LongRetrievalResult:
    """R@1 of `model` on `n` ShapeScenes scenes and `n // 4` hard-negative groups of 4.

    Keys: t2i_r1_long, i2t_r1_long, t2i_r1_short, i2t_r1_short, t2i_r1_hard (and t2i_r1_hard_color /
    t2i_r1_hard_shape: the groups that change that attribute), n, n_hard_groups, grid, seed,
    tokens_mean (long-caption length in the model's tokens), truncated_long (fraction of long captions cut at the
    model's context), seconds.
    """
    start = time.perf_counter()
    first = EVAL_SEED_OFFSET + seed * SEEDS_PER_RUN
    scenes = [random_scene(first + i, grid) for i in range(n)]
    image_emb, long_emb = _encode_scenes(model, scenes, batch_size, progress)
    short_emb = model.encode_text([s.short_caption() for s in scenes], batch_size=batch_size, truncate=True)
    long_metrics = retrieval_metrics(long_emb, image_emb, ks=(1,))
    short_metrics = retrieval_metrics(short_emb, image_emb, ks=(1,))

    groups = suite_hard_groups(n, seed, grid)
    hard_image, hard_text = _encode_scenes(model, [s for group in groups for s in group], batch_size, progress)
    hard = hard_r1_by_attribute(hard_text, hard_image, groups)

    tokens = [model.tokenizer.count_tokens(s.caption()) for s in scenes]
    sim = cosine_similarity_matrix(long_emb, image_emb)
    own = sim.diagonal().unsqueeze(1)
    hits = ((sim >= own).sum(1) == 1).tolist()  # strictly best: the same tie rule as the metrics
    metrics = {
        "t2i_r1_long": round(long_metrics["t2i_r1"], 4),
        "i2t_r1_long": round(long_metrics["i2t_r1"], 4),
        "t2i_r1_short": round(short_metrics["t2i_r1"], 4),
        "i2t_r1_short": round(short_metrics["i2t_r1"], 4),
        "t2i_r1_hard": round(hard["all"], 4),
        "t2i_r1_hard_color": round(hard["color"], 4),
        "t2i_r1_hard_shape": round(hard["shape"], 4),
        "n": n,
        "n_hard_groups": len(groups),
        "grid": grid,
        "seed": seed,
        "context_length": model.context_length,
        "tokens_mean": round(sum(tokens) / max(1, n), 1),  # long captions, in the model's own tokens
        "truncated_long": round(sum(t > model.context_length for t in tokens) / max(1, n), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return LongRetrievalResult(metrics, tokens, hits)


def plot_recall_by_length(results: dict[str, LongRetrievalResult], out: str, bins: int = 8) -> None:
    """Line plot of long-caption T2I R@1 against caption length (token bins), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = torch.tensor([t for r in results.values() for t in r.caption_tokens], dtype=torch.float)
    edges = torch.quantile(lengths, torch.linspace(0, 1, bins + 1)).round().tolist()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        tok = torch.tensor(r.caption_tokens, dtype=torch.float)
        hit = torch.tensor(r.t2i_hit, dtype=torch.float)
        xs, ys = [], []
        for lo, hi in itertools.pairwise(edges):
            sel = (tok >= lo) & (tok <= hi)
            if sel.any():
                xs.append((lo + hi) / 2)
                ys.append(100 * hit[sel].mean().item())
        ax.plot(xs, ys, marker="o", label=name)
    ax.axvline(77, color="gray", linestyle="--", linewidth=1)
    ax.text(78, ax.get_ylim()[0] + 2, "77 tokens", color="gray", fontsize=8)
    ax.set_xlabel("long caption length (tokens)")
    ax.set_ylabel("text-to-image R@1 (%)")
    ax.set_title("ShapeScenes long-caption retrieval")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
