"""The public-benchmark suites of `vision-long eval`: urban1k, sharegpt4v-1k, dci, docci, coco, flickr30k, zeroshot.

`add_suites(parser)` adds their options to the `eval` parser; `run_suite(args)` evaluates every --model on
the suite's local dataset and prints a table, or one JSON object per model with --json.
"""

from __future__ import annotations

import argparse
import json
import os

from vision_long.commands.common import CLIError, load_model
from vision_long.eval.suites.registry import SUITES

BENCHMARK_SUITES = tuple(SUITES)
COLUMNS = {  # output key -> the papers' column title
    "i2t_r1": "I2T R@1", "t2i_r1": "T2I R@1", "i2t_r5": "I2T R@5", "t2i_r5": "T2I R@5",
    "i2t_r10": "I2T R@10", "t2i_r10": "T2I R@10", "top1": "Top-1", "top5": "Top-5",
}
MARKS = {"repo": "", "figure": "", "third-party": "†", "recall": "?"}  # printed after a published value


def add_suites(parser: argparse.ArgumentParser) -> None:
    """Describe the benchmark suites in the `eval` help and add --data, --split, --truncate, --compare, --workers."""
    width = max(map(len, SUITES))
    parser.description += "\n" + "\n".join(f"  {s.name:<{width}}  {s.summary}" for s in SUITES.values())
    parser.description += "\nEach reads --data DIR in the dataset's public layout (docs/benchmarks.md)."
    parser.epilog += (
        "\n  vision-long eval --suite urban1k --data ~/data/Urban1k --model longclip:longclip-L.pt --compare"
        "\n  vision-long eval --suite flickr30k --split full --data ~/data/flickr30k --model longclip:longclip-B.pt"
        "\n  vision-long eval --suite zeroshot --data ~/data/imagenet/val --model openai:ViT-B-16.pt --no-stretch"
    )
    group = parser.add_argument_group("public benchmarks (" + ", ".join(SUITES) + ")")
    group.add_argument("--data", metavar="DIR", help="the dataset's folder in its public layout (docs/benchmarks.md)")
    group.add_argument(
        "--split", choices=sorted({split for s in SUITES.values() for split in s.splits}),
        help="flickr30k: karpathy-1k (default; the 1k test images most papers report) or full (all 31,783 "
        "images, Long-CLIP's protocol)",
    )
    group.add_argument(
        "--truncate", choices=("on", "off"), default="on",
        help="cut captions longer than the model's context, as the papers do (Long-CLIP at 248 tokens), or "
        "refuse them (default: %(default)s)",
    )
    group.add_argument(
        "--compare", nargs="?", const="auto", metavar="BACKBONE",
        help="print published numbers for the same backbone (B/32, B/16, L/14; default: read from the model)",
    )
    group.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                       help="processes decoding images (default: %(default)s)")


def run_suite(args: argparse.Namespace) -> None:
    """Evaluate each --model on --suite, print the results (and --compare rows), write --plot."""
    from vision_long.eval.suites.published import backbone_of, published_rows
    from vision_long.eval.suites.runner import run_benchmark

    suite = SUITES[args.suite]
    if not args.data:
        raise CLIError(f"--suite {suite.name} needs --data DIR holding {suite.layout} (see docs/benchmarks.md)")
    results, compared = {}, {}
    for spec in args.model:
        model = load_model(spec, args.device, stretch=not args.no_stretch)
        result = run_benchmark(suite.name, model, args.data, split=args.split, truncate=args.truncate == "on",
                               batch_size=args.batch_size, workers=args.workers, progress=not args.json)
        results[spec] = result
        backbone = backbone_of(model) if args.compare in (None, "auto") else args.compare
        rows = published_rows(suite.name, result.split, result.dataset, backbone) if args.compare else []
        compared.update({(r.model, r.source): r for r in rows})
        if args.json:
            record = {"model": spec, "family": model.family, "backbone": backbone, **result.as_record()}
            if args.compare:
                record["published"] = [_row_record(r) for r in rows]
            print(json.dumps(record))
        else:
            _print_result(spec, model.family, backbone, result, rows, args.compare)
    if args.plot:
        from vision_long.eval.suites.plot import plot_benchmark

        plot_benchmark(results, args.plot, list(compared.values()), COLUMNS)


def _cell(value: float, level: str = "repo") -> str:
    """A 10-character table cell: the percentage and its verification mark."""
    return f"{value:>9.2f}{MARKS[level] or ' '}"


def _row_record(row) -> dict:
    record = {"model": row.model, "backbone": row.backbone, "source": row.source,
              "values": {k: {"value": v, "verified": level} for k, (v, level) in row.values.items()}}
    return {**record, "note": row.note} if row.note else record


def _print_result(spec: str, family: str, backbone: str | None, result, rows, compare: str | None) -> None:
    """The run's settings, then `ours` and any published rows under the papers' column titles."""
    from vision_long.eval.suites.published import load_published

    c = result.counts
    cut = f"{c['n_truncated']} cut at {result.context_length} tokens" if result.truncate else "none longer allowed"
    print(f"{result.suite}{f' --split {result.split}' if result.split else ''}: {spec} "
          f"({family}, context {result.context_length}, backbone {backbone or 'unknown'})")
    print(f"  {result.protocol}")
    classes = f"{c['n_classes']} classes, " if "n_classes" in c else ""
    print(f"  {c['n_images']} images, {classes}{c['n_texts']} texts, truncate {'on' if result.truncate else 'off'} "
          f"({cut}), {result.seconds} s")
    keys = list(result.metrics)
    names = ["ours"] + [f"{r.model} [{r.source}]" for r in rows]
    width = max(map(len, names))
    print("  " + " " * width + "".join(f"{COLUMNS[k]:>9} " for k in keys))
    print(f"  {'ours':<{width}}" + "".join(_cell(result.metrics[k]) for k in keys))
    if not compare:
        return
    if not rows:
        print("  no published numbers for this suite, split and dataset")
        return
    print("  published († quoted second-hand, ? not verified; see vision_long/eval/published.json):")
    for name, row in zip(names[1:], rows, strict=True):
        cells = "".join(_cell(*row.values[k]) if k in row.values else f"{'-':>9} " for k in keys)
        print(f"  {name:<{width}}{cells}" + (f"  ({row.note})" if row.note else ""))
    if backbone and not any(r.backbone == backbone for r in rows):
        print(f"  (nothing published for backbone {backbone}; all backbones shown)")
    sources = load_published()["sources"]
    for key in dict.fromkeys(r.source for r in rows):
        print(f"  [{key}] {sources[key]['cite']}; protocol: {sources[key]['protocol']}")
