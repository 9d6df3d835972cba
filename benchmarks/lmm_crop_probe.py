"""What does a zoomed crop's pooled feature grid carry? Linear probes of the asked object's color and shape.

For ShapeScenes VQA items (6 x 6 scenes of small objects at 384 px, one cell per 64 px high crop), the high crop
holding the asked object goes through the LMM's frozen vision tower (penultimate layer, standardized as the LMM
does); its 8 x 8 patch grid is mean-pooled to P x P (`pool_patch_grid`, CLS kept) and the concatenated tokens feed
a multinomial logistic regression (full-batch L-BFGS, L2 weight `--l2`) trained on training items and scored on
evaluation items. "cls" is the CLS token alone. Accuracy shows how much of the object's color and shape the LM can
read from the tokens of one crop at each `--pooled-grid`: the LMM's shape answers depend on it.

    python -m benchmarks.lmm_crop_probe --n-train 1500 --n-eval 400 --write
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from benchmarks.results import machine, update_section
from vision_long.lmm.ask import resolve_lmm
from vision_long.lmm.processing import multi_resolution_crops, pool_patch_grid
from vision_long.lmm.vqa import VQAConfig, vqa_item, vqa_seeds

TARGETS = ("color", "shape")
BATCH = 64


@torch.no_grad()
def crop_features(model, split: str, n: int) -> tuple[torch.Tensor, dict[str, list[str]]]:
    """Standardized tower features Tensor[N, 1 + G*G, W_v] of the asked object's high crop for the first `n` color
    or shape items of `split`, and their objects' colors and shapes."""
    config = VQAConfig(kinds=TARGETS)
    crops, labels = [], {target: [] for target in TARGETS}
    for seed in vqa_seeds(split, n):
        item = vqa_item(seed, config)
        crops.append(multi_resolution_crops(item.image(), model.config.resolution).high.crops[item.cell])
        for target in TARGETS:
            labels[target].append(getattr(item.scene.objects[item.cell], target))
    features = torch.cat([model.vision_features(crops[i : i + BATCH]) for i in range(0, len(crops), BATCH)])
    return (features - model.feature_mean) / model.feature_std, labels


def probe_accuracy(train_x: torch.Tensor, train_y: list[str], test_x: torch.Tensor, test_y: list[str],
                   l2: float) -> float:
    """Accuracy on (test_x, test_y) of a logistic regression fitted on (train_x, train_y): Tensor[N, D] inputs."""
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in train_y])
    probe = nn.Linear(train_x.shape[1], len(classes))
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(probe(train_x), y) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = probe(test_x).argmax(dim=1).tolist()
    return sum(classes[p] == t for p, t in zip(predicted, test_y, strict=True)) / len(test_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an LMM directory whose tower and standardization are probed "
                                        "(default: the embedded default LMM)")
    parser.add_argument("--n-train", type=int, default=1500, help="training items (default: %(default)s)")
    parser.add_argument("--n-eval", type=int, default=400, help="evaluation items (default: %(default)s)")
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 weight of the probe (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help="write the section lmm_crop_probe of RESULTS.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resolve_lmm(args.model)
    train_x, train_labels = crop_features(model, "train", args.n_train)
    test_x, test_labels = crop_features(model, "eval", args.n_eval)
    patch_grid = round((train_x.shape[1] - 1) ** 0.5)
    views = {"cls": lambda f: f[:, :1]}
    views.update({f"{p} x {p}": (lambda f, p=p: pool_patch_grid(f, p)) for p in (1, 2, 4, patch_grid)})
    rows = []
    for name, view in views.items():
        train_v, test_v = view(train_x).flatten(1), view(test_x).flatten(1)
        scores = [probe_accuracy(train_v, train_labels[t], test_v, test_labels[t], args.l2) for t in TARGETS]
        rows.append(f"| {name} | {train_v.shape[1]} | " + " | ".join(f"{100 * s:.1f}" for s in scores) + " |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "## What one zoomed crop's tokens carry: linear probes (multi-resolution LMM issue)",
        "",
        f"Command: `python -m benchmarks.lmm_crop_probe --n-train {args.n_train} --n-eval {args.n_eval} --write`",
        (f"Model: {args.model or 'the embedded default'} (its frozen tower and feature standardization). "
         f"Machine: {machine()}."),
        (f"The asked object's 64 px high crop from {args.n_train} training / {args.n_eval} evaluation color and "
         "shape VQA items (6 x 6 scenes of small objects); its penultimate-layer patch grid mean-pooled to P x P "
         f"plus the CLS token (`cls`: CLS alone), concatenated; a logistic regression (L2 {args.l2}) fitted on "
         "the training crops, accuracy in % on the evaluation crops (8 colors: chance 12.5; 7 shapes: 14.3)."),
        "",
        "| tokens | inputs | color | shape |",
        "|---|---|---|---|",
        *rows,
    ])
    print(body)
    if args.write:
        update_section("lmm_crop_probe", body)


if __name__ == "__main__":
    main()
