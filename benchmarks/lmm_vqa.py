"""The zoom-in LMM on ShapeScenes VQA: accuracy and image tokens per zoom mode, one model, the same items.

Each row is `vision-long eval --suite vqa --model MODEL --zoom Z --n N --seed S --json` (the same function,
`evaluate_vqa`). Modes: global view only (`none`), every crop pooled (`multires`, Dragonfly v2), Dragonfly v1's
zoom-in (`v1`), text-conditioned zoom-in (`text`, ours). When the model has a learned text zoom head, one more row
runs `text` with the head removed, so crops are ranked by the long-text CLIP similarity alone: what the head adds.
`zoom_found`: of the questions about an object, the share whose selected high crops include the one holding it.

    python -m benchmarks.lmm_vqa --n 500 --seed 0 --write
"""

from __future__ import annotations

import argparse

from benchmarks.results import machine, update_section
from vision_long.eval.vqa import evaluate_vqa
from vision_long.lmm.ask import resolve_lmm
from vision_long.lmm.model import ZOOM_MODES

SECTION = "lmm_vqa_modes"
CLIP_ONLY = "text, CLIP similarity only"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="an LMM directory (default: the embedded default LMM)")
    parser.add_argument("--n", type=int, default=500, help="evaluation items per mode (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help=f"write the section {SECTION} of RESULTS.md")
    args = parser.parse_args()

    model = resolve_lmm(args.model)
    rows = {}
    for zoom in ZOOM_MODES:
        rows[zoom] = evaluate_vqa(model, n=args.n, seed=args.seed, zoom=zoom, progress=True)
        print(zoom, rows[zoom])
    if model.zoom_head is not None:
        head, model.zoom_head = model.zoom_head, None
        try:
            rows[CLIP_ONLY] = evaluate_vqa(model, n=args.n, seed=args.seed, zoom="text", progress=True)
        finally:
            model.zoom_head = head
        print(CLIP_ONLY, rows[CLIP_ONLY])

    kinds = sorted({kind for row in rows.values() for kind in row["by_kind"]})
    lines = [
        "| zoom | accuracy | " + " | ".join(kinds) + " | zoom_found | image tokens | seconds |",
        "|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for name, row in rows.items():
        by_kind = " | ".join(percent(row["by_kind"].get(kind)) for kind in kinds)
        lines.append(f"| {name} | {percent(row['accuracy'])} | {by_kind} | {percent(row['zoom_found'])} | "
                     f"{row['image_tokens']:.0f} | {row['seconds']:.0f} |")
    model_name = args.model or "the embedded default (vision_long/assets/lmm-shapescenes)"
    model_option = f" --model {args.model}" if args.model else ""
    body = "\n".join([
        f"## Zoom-in LMM on ShapeScenes VQA, per zoom mode ({SECTION})",
        "",
        f"Command: `python -m benchmarks.lmm_vqa{model_option} --n {args.n} --seed {args.seed} --write`",
        f"Model: {model_name}. Machine: {machine()}.",
        (f"{args.n} evaluation items per mode (6 x 6 scenes of small objects at 384 px, evaluation seeds), greedy "
         "decoding, exact match; per-kind columns are accuracy on that kind; zoom_found: of the questions about "
         "an object, the share whose selected high crops include the one holding it; image tokens: LM positions "
         "of the image block per image."),
        "",
        *lines,
    ])
    print(body)
    if args.write:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
