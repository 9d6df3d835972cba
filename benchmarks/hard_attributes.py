"""Which attribute can a model tell apart? Hard-negative T2I R@1 split by what the group changes and where.

A hard-negative group is 4 ShapeScenes scenes that differ in one attribute (color or shape) of one object.
"late" groups change an object described after token 77: the `long-retrieval` suite's own groups (the same seeds
at the same `--n`), which only a model that reads past token 77 can tell apart. "early" groups change an object
described within the first 77 tokens, so a 77-token model can be tested too: they show which attributes its image
and text towers encode at all. R@1 within a group; chance is 25.0. A second table gives, for the late groups, how
far each tower's embedding moves within a group: which tower, if any, encodes the changed attribute. A third
reads the late color groups again with the changed object's sentence moved to another place in the caption
(after `slot` of the other sentences; the images stay): R@1 by where the deciding sentence starts, i.e. how far
into a caption the text tower reads.

    python -m benchmarks.hard_attributes --models default-77 default runs/v4/clip77/model runs/v4/longclip/model
"""

from __future__ import annotations

import argparse

import torch

from vision_long.data.scenes import (
    EVAL_SEED_OFFSET,
    Scene,
    default_tokenizer,
    hard_negative_group,
)
from vision_long.encoders.loading import load_encoder
from vision_long.eval.long_retrieval import (
    HARD_GROUP_SIZE,
    SEEDS_PER_RUN,
    changed_attribute,
    changed_object,
    hard_r1_by_attribute,
    suite_hard_groups,
)

EARLY_OFFSET = 500_000  # early groups start here in the evaluation seed range, clear of the suite's scenes
SLOTS = (0, 2, 4, 6, 8, 10, 12)  # where the moved sentence goes: after this many other sentences (or last)


def early_groups(first: int, count: int, grid: int) -> list:
    """`count` groups changing an object within the first 77 tokens, from seed `first` on (seeds whose scene has
    no such object are skipped)."""
    groups, seed = [], first
    while len(groups) < count:
        try:
            groups.append(hard_negative_group(seed, grid, HARD_GROUP_SIZE, late=False))
        except ValueError:
            pass
        seed += 1
    return groups


def embed_groups(model, groups: list) -> tuple:
    """Unit text embeddings (captions truncated to the model's context) and image embeddings of every scene of
    `groups`, in order: two Tensor[4 * len(groups), D]."""
    scenes = [scene for group in groups for scene in group]
    images = model.encode_image([s.render(model.image_size) for s in scenes])
    texts = model.encode_text([s.caption() for s in scenes], truncate=True)
    return texts, images


def recall_by_attribute(texts, images, groups: list) -> dict[str, float]:
    """R@1 (in %) over all `groups` and over those changing a color / a shape."""
    return {key: 100 * value for key, value in hard_r1_by_attribute(texts, images, groups).items()}


def spread_by_attribute(embeddings, groups: list) -> dict[str, float]:
    """Mean 1000 x (1 - cos) between the members of a group, over the groups changing a color / a shape: how far
    one tower moves when only that attribute of one object changes (near 0: it does not encode it there)."""
    spreads: dict[str, list[float]] = {"color": [], "shape": []}
    off_diagonal = ~torch.eye(HARD_GROUP_SIZE, dtype=torch.bool)
    for g, group in enumerate(groups):
        e = embeddings[g * HARD_GROUP_SIZE:(g + 1) * HARD_GROUP_SIZE].float()
        spreads[changed_attribute(group)].append(1000 * (1 - (e @ e.T)[off_diagonal]).mean().item())
    return {k: sum(v) / len(v) for k, v in spreads.items() if v}


def moved_caption(scene: Scene, index: int, slot: int) -> tuple[str, int]:
    """`scene`'s caption with object `index`'s sentence moved after `slot` of the other sentences (last if there
    are fewer), and the token position where it now starts (SOT is position 0)."""
    sentences = scene.sentences()
    moved = next(text for i, text in sentences if i == index)
    rest = [text for i, text in sentences if i != index]
    before = rest[:slot]
    start = 1 + len(default_tokenizer().encode(" ".join(before))) if before else 1
    return " ".join([*before, moved, *rest[slot:]]), start


def recall_by_position(model, groups: list, images) -> list[tuple[int, float]]:
    """(mean start token, R@1 in %) of the color `groups` for each of `SLOTS`, the changed object's sentence moved
    there; `images`: the groups' image embeddings, Tensor[4 * len(groups), D]."""
    keep = [g for g, group in enumerate(groups) if changed_attribute(group) == "color"]
    rows = torch.tensor([g * HARD_GROUP_SIZE + k for g in keep for k in range(HARD_GROUP_SIZE)])
    out = []
    for slot in SLOTS:
        captions, starts = [], []
        for g in keep:
            index = changed_object(groups[g])
            for scene in groups[g]:
                caption, start = moved_caption(scene, index, slot)
                captions.append(caption)
                starts.append(start)
        texts = model.encode_text(captions, truncate=True)
        recall = hard_r1_by_attribute(texts, images[rows], [groups[g] for g in keep])["color"]
        out.append((round(sum(starts) / len(starts)), 100 * recall))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default-77", "default"], help="encoder specs")
    parser.add_argument("--n", type=int, default=1000, help="the suite's --n: late groups are its n // 4 groups")
    parser.add_argument("--early-groups", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=int, default=3)
    args = parser.parse_args()

    late = suite_hard_groups(args.n, args.seed, args.grid)
    early = early_groups(EVAL_SEED_OFFSET + args.seed * SEEDS_PER_RUN + EARLY_OFFSET, args.early_groups, args.grid)
    print("| model | early: all | early: color | early: shape | late: all | late: color | late: shape |")
    print("|---|---|---|---|---|---|---|")
    spreads, positions = {}, {}
    for spec in args.models:
        model = load_encoder(spec)
        late_texts, late_images = embed_groups(model, late)
        by_early = recall_by_attribute(*embed_groups(model, early), early)
        by_late = recall_by_attribute(late_texts, late_images, late)
        spreads[spec] = (spread_by_attribute(late_texts, late), spread_by_attribute(late_images, late))
        positions[spec] = recall_by_position(model, late, late_images)
        cells = [by_early[k] for k in ("all", "color", "shape")] + [by_late[k] for k in ("all", "color", "shape")]
        print(f"| {spec} | " + " | ".join(f"{v:.1f}" for v in cells) + " |", flush=True)
    print("\nLate groups, spread within a group (1000 x (1 - cos)):\n")
    print("| model | text: color | text: shape | image: color | image: shape |")
    print("|---|---|---|---|---|")
    for spec, (text, image) in spreads.items():
        values = [text["color"], text["shape"], image["color"], image["shape"]]
        print(f"| {spec} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    print("\nLate color groups, T2I R@1 with the changed object's sentence moved to start near token t:\n")
    starts = [start for start, _ in next(iter(positions.values()))]
    print("| model | " + " | ".join(f"t = {t}" for t in starts) + " |")
    print("|---|" + "---|" * len(starts))
    for spec, row in positions.items():
        print(f"| {spec} | " + " | ".join(f"{recall:.1f}" for _, recall in row) + " |")


if __name__ == "__main__":
    main()
