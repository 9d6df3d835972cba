"""`vision-long quickstart`: the main job in one command, on the embedded default model.

Renders a small ShapeScenes gallery that hides a hard-negative group (scenes identical except for one object
described after token 77), embeds it in memory, queries it with the long caption of one of those scenes, and
prints the ranking of the long-text model beside that of the 77-token model it was fine-tuned from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vision_long.commands.common import FORMATTER, MODEL_HELP, load_model

QUICKSTART_SEED = 20_000_000  # a scene seed outside the training range


def _gallery(n: int, grid: int):
    from vision_long.data.scenes import hard_negative_group, random_scene

    group = hard_negative_group(QUICKSTART_SEED, grid)
    others = [random_scene(QUICKSTART_SEED + 1 + i, grid) for i in range(max(0, n - len(group)))]
    scenes = others[: len(others) // 2] + group + others[len(others) // 2 :]
    target = len(others) // 2 + 1  # one of the altered scenes, not the base: nothing to guess from order
    return scenes, target, set(range(len(others) // 2, len(others) // 2 + len(group)))


def _rank(model, scenes, query: str, k: int):
    images = [s.render(model.image_size) for s in scenes]
    image_emb = model.encode_image(images)
    text_emb = model.encode_text([query], truncate=True)
    scores = (text_emb @ image_emb.T)[0]
    top = torch.topk(scores, min(k, len(scenes)))
    return top.indices.tolist(), top.values.tolist()


def cmd_quickstart(args) -> None:
    from vision_long.visualize import contact_sheet

    scenes, target, group = _gallery(args.n, args.grid)
    query = scenes[target].caption()
    long_model = load_model(args.model, args.device)
    count = long_model.tokenizer.count_tokens(query)
    group_sentence = next(s for i, s in scenes[target].sentences() if i is not None and
                          scenes[target].objects[i] != scenes[min(group)].objects[i])
    print(f"Gallery: {len(scenes)} ShapeScenes images; {len(group)} of them differ only in one object.")
    print(f"Query ({count} tokens): {query}\n")
    print(f"The deciding sentence comes after token 77: \"{group_sentence}\"\n")
    rankings = {args.model: _rank(long_model, scenes, query, args.k)}
    if args.compare:
        rankings[args.compare] = _rank(load_model(args.compare, args.device), scenes, query, args.k)
    for spec, (indices, scores) in rankings.items():
        hit = "found the right image first" if indices[0] == target else "ranked another image first"
        print(f"{spec}: {hit}")
        for rank, (i, score) in enumerate(zip(indices, scores), 1):
            mark = "  <- the query's image" if i == target else ("  (hard negative)" if i in group else "")
            print(f"  {rank:2d}. image {i:2d}  score {score:.4f}{mark}")
        print()
    indices, scores = rankings[args.model]
    sheet = contact_sheet([scenes[i].render(128) for i in indices], [f"#{r} img {i} {s:.3f}" for r, (i, s) in
                          enumerate(zip(indices, scores), 1)], highlight=[i == target for i in indices],
                          title=f"{args.model}: top {len(indices)} for a {count}-token query (green = target)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote the ranked results to {out}")


def register(sub) -> None:
    """Add `quickstart`."""
    p = sub.add_parser(
        "quickstart", formatter_class=FORMATTER, help="search a small gallery with a long query (the main job)",
        description=__doc__, epilog="example:\n  vision-long quickstart --out quickstart.png",
    )
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--compare", default="default-77", help="a second model to rank with ('' to skip) (default: %(default)s)")
    p.add_argument("--n", type=int, default=24, help="gallery size (default: %(default)s)")
    p.add_argument("--grid", type=int, default=3, help="scene grid size (default: %(default)s)")
    p.add_argument("-k", type=int, default=5, help="results to show (default: %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="quickstart.png", help="results image (default: %(default)s)")
    p.set_defaults(func=cmd_quickstart)
