"""`vision-long train RECIPE`: the ShapeScenes training recipes, one module per family.

Single process, or unchanged under torchrun.
"""

from __future__ import annotations

from vision_long.commands.common import FORMATTER
from vision_long.commands.train import cell_parser, lmm, preference, retrieval, t2i


def register(sub) -> None:
    """Add `train` and its recipes: clip, longclip, proclip, lmm, t2i, cell-parser, preference."""
    train = sub.add_parser("train", help="train models on ShapeScenes", formatter_class=FORMATTER,
                           description="Training recipes. Every run writes OUT/log.jsonl, checkpoints to OUT/checkpoint\n"
                           "(resumed automatically) and the final model to OUT/model. Multi-process:\n"
                           "  torchrun --nproc_per_node 2 -m vision_long.cli train clip --out runs/clip")
    recipes = train.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    retrieval.add_parsers(recipes)
    lmm.add_parser(recipes)
    t2i.add_parser(recipes)
    cell_parser.add_parser(recipes)
    preference.add_parser(recipes)
