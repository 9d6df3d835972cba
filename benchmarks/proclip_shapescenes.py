"""ProCLIP on ShapeScenes: long captions past Long-CLIP's 248 tokens (5x5 and 6x6 grids), and what CLIP keeps.

Evaluates ProCLIP after stage 1 only and after stages 1+2 (the shipped `default-proclip`) and the shipped Long-CLIP (`default`, which truncates at 248 tokens) on the same
evaluation scenes of each grid; on 3x3 scenes (the CLIP's own world) the 77-token CLIP joins, as the
knowledge-retention reference (ProCLIP's claim is about what CLIP knows, measured there by zero-shot).

    bash scripts/build_default_proclip.sh runs/default
    python -m benchmarks.proclip_shapescenes --runs runs/default --write
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vision_long.encoders.loading import load_encoder
from vision_long.eval.long_retrieval import evaluate_long_retrieval

KEYS = ("t2i_r1_long", "i2t_r1_long", "t2i_r1_short", "i2t_r1_short", "t2i_r1_hard")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/default", help="run directory of build_default_proclip.sh")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", type=int, nargs="+", default=[5, 6, 3])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    models = {
        "ProCLIP stage 1 only": f"{args.runs}/proclip-stage1/model",
        "ProCLIP stages 1+2, lambda 1 (default-proclip)": "default-proclip",
        "Long-CLIP (default, truncates at 248)": "default",
        "77-token CLIP (default-77)": "default-77",
    }
    tables, results = [], {}
    for grid in args.grids:
        rows = [f"| model ({grid}x{grid}) | tokens (mean) | cut | " + " | ".join(KEYS) + " |",
                "|---" * (len(KEYS) + 3) + "|"]
        for name, spec in models.items():
            if spec.startswith(args.runs) and not Path(spec).is_dir():
                print(f"skipping {name}: {spec} not found")
                continue
            if spec == "default-77" and grid != 3:
                continue
            model = load_encoder(spec)
            if hasattr(model, "llm"):
                model.llm.use_cache(f"{args.runs}/llm-cache")
            m = evaluate_long_retrieval(model, n=args.n, seed=args.seed, grid=grid).metrics
            results[grid, name] = m
            print(grid, name, m)
            rows.append(f"| {name} | {m['tokens_mean']:.0f} | {100 * m['truncated_long']:.0f}% | "
                        + " | ".join(f"{100 * m[k]:.1f}" for k in KEYS) + " |")
        tables.append("\n".join(rows))
    body = f"""## ProCLIP on ShapeScenes (ProCLIP issue)

Command: `python -m benchmarks.proclip_shapescenes --runs {args.runs} --n {args.n} --seed {args.seed} --grids {' '.join(map(str, args.grids))} --write`
(models from `bash scripts/build_default_proclip.sh {args.runs}`; `default-proclip` is its stage-2 run in fp16)
Evaluation: {args.n} scenes per grid from the evaluation seed range and {args.n // 4} hard-negative groups of 4
(differing in one object described after token 77); R@1 in %. "cut": long captions longer than the model's context.

{chr(10).join(chr(10) + t for t in tables)}
"""
    print(body)
    if args.write:
        from benchmarks.results import update_section

        update_section("proclip_shapescenes", body)


if __name__ == "__main__":
    main()
