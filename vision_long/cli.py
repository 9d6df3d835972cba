"""`vision-long <command>`: a thin layer over the library; no model math lives here."""

from __future__ import annotations

import argparse
import sys

from vision_long.checkpoints import CheckpointError
from vision_long.commands import demo, evaluate, generate, lmm, models, quickstart, retrieval, train
from vision_long.commands.common import FORMATTER, CLIError


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subcommand module per area."""
    parser = argparse.ArgumentParser(
        prog="vision-long",
        formatter_class=FORMATTER,
        description="Long-text CLIP tools: embed paragraphs and images, convert checkpoints, train and evaluate.",
        epilog="Run 'vision-long COMMAND --help' for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quickstart.register(sub)
    models.register(sub)
    train.register(sub)
    evaluate.register(sub)
    generate.register(sub)
    retrieval.register(sub)
    lmm.register(sub)
    demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vision-long` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CLIError, CheckpointError, ValueError, OSError) as e:
        print(f"vision-long {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
