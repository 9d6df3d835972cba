"""Options shared by the ShapeScenes retrieval recipes."""

from __future__ import annotations


def optim_args(
    p, steps: int, lr: float, warmup: int, weight_decay: float, hard_fraction: float, grids: tuple[int, ...] = (3,)
) -> None:
    """The optimizer, data and run options shared by the retrieval recipes (clip, longclip, proclip)."""
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="scenes per step per process (default: %(default)s)")
    p.add_argument("--lr", type=float, default=lr,
                   help="peak learning rate (default: %s)" % (lr if lr else "1e-3 in stage 1, 2e-4 in stage 2"))
    p.add_argument("--warmup", type=int, default=warmup, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=weight_decay, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--grids", type=int, nargs="+", default=list(grids),
                   help=f"grid sizes to train on (default: {' '.join(map(str, grids))})")
    p.add_argument("--seed", type=int, default=0, help="run seed: initialisation and scene order (default: 0)")
    p.add_argument("--hard-fraction", type=float, default=hard_fraction,
                   help="share of each batch made of hard-negative groups of 4 (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.add_argument("--out", required=True, help="run directory: log.jsonl, checkpoint/, and the final model/")


def fill_args(p) -> None:
    """Scene density and the batch compositions of the clip and longclip recipes."""
    p.add_argument("--fill", type=float, nargs=2, default=[0.7, 0.7], metavar=("LO", "HI"),
                   help="each random scene's cell occupancy is drawn uniformly from [LO, HI] (default: 0.7 0.7)")
    p.add_argument("--early-hard-fraction", type=float, default=0.0,
                   help="share of each batch made of groups of 4 differing in one object described within the "
                   "first 77 tokens (in scenes of density --fill) (default: %(default)s)")
    p.add_argument("--prefix-fraction", type=float, default=0.0,
                   help="share of each batch made of groups of 4 sharing their first 77 caption tokens, every "
                   "object described later redrawn (default: %(default)s)")
    p.add_argument("--partial-captions", type=float, metavar="P",
                   help="train on captions naming a random subset of the objects (each kept with probability P) "
                   "instead of the full reading-order caption: how a pretrained CLIP's short captions name any "
                   "part of an image (default: off)")


def scene_recipe(args):
    """(OptimConfig, SceneData) of the options `optim_args` and `fill_args` add."""
    from vision_long.training.shapescenes import SceneData
    from vision_long.training.trainer import OptimConfig

    optim = OptimConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                        checkpoint_every=args.checkpoint_every)
    data = SceneData(grids=tuple(args.grids), batch_size=args.batch_size, seed=args.seed, hard_fraction=args.hard_fraction,
                     fill=tuple(args.fill), early_hard_fraction=args.early_hard_fraction,
                     prefix_fraction=args.prefix_fraction, partial_captions=args.partial_captions)
    return optim, data
