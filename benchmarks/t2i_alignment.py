"""LongAlign's claims on the small ShapeScenes text-to-image pipeline, measured with the exact alignment metric.

(a) prompt encodings: `rendered` (the parser's own accuracy), `reconstructed` (the renders through the pipeline's
    VAE: the ceiling of any generation), `truncate`, `chunks`, `segments` (and `longclip` when the
    pipeline's text encoder has more than 77 positions) on the same evaluation scenes and seeds;
(b, c) decomposed preference optimization: the base pipeline and each `vision-long train preference` LoRA given
    as NAME=RUN_DIR (their log.jsonl gives the training curves of the text-relevant / -irrelevant reward parts).

    python -m benchmarks.t2i_alignment --n 200 --seed 0 --write
    python -m benchmarks.t2i_alignment --methods segments --lora w0.3=runs/pref-w0.3 --lora w1=runs/pref-w1 \\
        --section t2i_preference --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import RESULTS, image_sheet, machine, update_section
from vision_long.diffusion.pipelines import load_pipeline
from vision_long.diffusion.preference import load_lora
from vision_long.eval.alignment import (
    PARSED_SCENES,
    AlignmentSuite,
    evaluate_t2i_alignment,
    evaluation_scenes,
    generate_images,
    load_cell_parser,
    longclip_kwargs,
)

KEYS = ("acc_before_77", "acc_after_77", "acc_all")
ATTRIBUTES = ("presence", "color", "shape", "size", "exact_all")  # over all objects
SHEET_SCENES = 8
BOOTSTRAP_RESAMPLES = 2000


def paired_difference(base: list[list[float]], other: list[list[float]], seed: int = 0) -> tuple[float, float, float]:
    """acc_all of `other` minus `base` (object scores per scene, same scenes) and its 95 % bootstrap interval, in
    points: scenes are resampled with replacement, `BOOTSTRAP_RESAMPLES` times."""
    totals = np.array([[sum(b), sum(o), len(b)] for b, o in zip(base, other, strict=True)])
    draws = np.random.default_rng(seed).integers(0, len(totals), (BOOTSTRAP_RESAMPLES, len(totals)))
    sums = totals[draws].sum(1)
    deltas = 100 * (sums[:, 1] - sums[:, 0]) / sums[:, 2]
    delta = 100 * (totals[:, 1].sum() - totals[:, 0].sum()) / totals[:, 2].sum()
    return float(delta), float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))


def read_log(run: Path) -> list[dict]:
    """The per-step records of a preference run's log.jsonl."""
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def with_lora(pipeline: str | None, run: str):
    """A freshly loaded pipeline with the LoRA of preference run `run` attached."""
    pipe = load_pipeline(pipeline)
    load_lora(pipe, Path(run) / "model")
    return pipe


def sample_sheet(pipeline: str | None, pipe, methods: list[str], loras: dict[str, str], seed: int, grid: int,
                 steps: int, guidance: float, out: Path, encode_kwargs: dict) -> None:
    """Rows of evaluation scenes: ground truth | each of `methods` | each LoRA with `methods[0]` (same seeds)."""
    scenes = evaluation_scenes(SHEET_SCENES, seed, grid)
    captions, seeds = [s.caption() for s in scenes], [s.seed for s in scenes]
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    columns = [[s.render(size) for s in scenes]]
    for name in methods:
        columns.append(generate_images(pipe, captions, seeds, name, steps, guidance, SHEET_SCENES,
                                       encode_kwargs if name == "longclip" else None))
    for run in loras.values():
        columns.append(generate_images(with_lora(pipeline, run), captions, seeds, methods[0], steps, guidance,
                                       SHEET_SCENES))
    cell = 2 * size
    image_sheet(columns, cell).save(out)


def curves_plot(loras: dict[str, str], out: Path) -> None:
    """Reward parts over training steps for each LoRA run: text-relevant and text-irrelevant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, run in loras.items():
        log = [r for r in read_log(Path(run)) if "relevant" in r]
        steps = [r["step"] for r in log]
        for ax, key in zip(axes, ("relevant", "irrelevant"), strict=True):
            ax.plot(steps, [r[key] for r in log], label=name)
    for ax, key in zip(axes, ("text-relevant part", "text-irrelevant part"), strict=True):
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="diffusers directory (default: the embedded ShapeScenes pipeline)")
    parser.add_argument("--methods", default="rendered,reconstructed,truncate,chunks,segments")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="a 'vision-long train preference' run to evaluate with the first generating method")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--section", default="t2i_alignment")
    parser.add_argument("--write", action="store_true", help="write the section and figures next to RESULTS.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = load_pipeline(args.pipeline)
    cell_parser = load_cell_parser()
    methods = tuple(args.methods.split(","))
    loras = dict(item.split("=", 1) for item in args.lora)
    suite = AlignmentSuite(methods=methods, n=args.n, seed=args.seed, grid=args.grid, steps=args.steps,
                           guidance=args.guidance, encode_kwargs=longclip_kwargs(pipe) if "longclip" in methods else {},
                           keep_object_scores=bool(loras))
    rows = [(m["method"], m) for m in evaluate_t2i_alignment(suite, cell_parser, pipe, progress=True)]
    generating = next((m for m in methods if m not in PARSED_SCENES), "segments")
    lora_suite = AlignmentSuite(methods=(generating,), n=args.n, seed=args.seed, grid=args.grid, steps=args.steps,
                                guidance=args.guidance, keep_object_scores=True)
    base = dict(rows)[generating] if loras else None
    for name, run in loras.items():
        result = evaluate_t2i_alignment(lora_suite, cell_parser, with_lora(args.pipeline, run))[0]
        result["delta"] = paired_difference(base["object_scores"], result["object_scores"])
        rows.append((f"{generating} + LoRA {name}", result))
    for name, m in rows:
        print(name, {k: m[k] for k in (*KEYS, "n", "seconds")}, m.get("delta", ""))

    delta_column = f" acc_all - {generating} (95 % CI) |" if loras else ""
    table = ["| method | " + " | ".join(KEYS + ATTRIBUTES) + " | objects before / after 77 |" + delta_column
             + " seconds |", "|---" * (len(KEYS + ATTRIBUTES) + 3 + bool(loras)) + "|"]
    for name, m in rows:
        delta = ""
        if loras:
            delta = " {:+.1f} ({:+.1f} to {:+.1f}) |".format(*m["delta"]) if "delta" in m else " |"
        table.append(f"| {name} | " + " | ".join("-" if m[k] is None else f"{100 * m[k]:.1f}" for k in KEYS + ATTRIBUTES)
                     + f" | {m['n_before_77']} / {m['n_after_77']} |{delta} {m['seconds']} |")
    command = " ".join(["python -m benchmarks.t2i_alignment", f"--methods {args.methods}",
                        *(f"--lora {item}" for item in args.lora), f"--n {args.n} --seed {args.seed}",
                        f"--grid {args.grid} --steps {args.steps} --guidance {args.guidance}",
                        f"--section {args.section} --write"])
    figures = []
    if args.write:
        sheet = RESULTS.parent / f"{args.section}.png"
        shown = [m for m in methods if m not in PARSED_SCENES]
        sample_sheet(args.pipeline, pipe, shown, loras, args.seed, args.grid, args.steps, args.guidance, sheet,
                     suite.encode_kwargs)
        figures.append(f"Samples (`{sheet.name}`): columns ground truth | " + " | ".join(shown)
                       + "".join(f" | LoRA {n}" for n in loras) + f"; the first {SHEET_SCENES} evaluation scenes.")
        if loras:
            curves = RESULTS.parent / f"{args.section}_curves.png"
            curves_plot(loras, curves)
            figures.append(f"Training curves (`{curves.name}`): the text-relevant and text-irrelevant parts of the "
                           "reward per step.")
        body = (f"## Text-to-image alignment on ShapeScenes ({args.section})\n\nCommand: `{command}`\n"
                f"Machine: {machine()}. {args.n} evaluation scenes ({args.grid}x{args.grid}), one image each, "
                f"DDIM {args.steps} steps, guidance {args.guidance}; accuracy = share of objects whose presence, "
                "color, shape and size the cell parser reads back, the mean of the four hits per object (objects whose "
                "sentence starts before / after token 77); presence ... size: each attribute over all objects; "
                "exact_all: objects with all four right" + (f"; acc_all - {generating}: the LoRA's change in points, "
                "paired over the same scenes and seeds, with a 95 % bootstrap interval over scenes" if loras else "")
                + ".\n\n" + "\n".join(table) + "\n\n" + "\n".join(figures) + "\n")
        update_section(args.section, body)
        print(f"wrote section {args.section} of {RESULTS}")


if __name__ == "__main__":
    main()
