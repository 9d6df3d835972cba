"""`vision-long train clip | longclip`: the ShapeScenes recipes (single process, or unchanged under torchrun)."""

from __future__ import annotations

from vision_long.commands.common import FORMATTER
from vision_long.distributed import is_main


def _optim_args(p, steps: int, lr: float, warmup: int, weight_decay: float, hard_fraction: float) -> None:
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="scenes per step per process (default: %(default)s)")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=warmup, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=weight_decay, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--grids", type=int, nargs="+", default=[3], help="grid sizes to train on (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="run seed: initialisation and scene order (default: 0)")
    p.add_argument("--hard-fraction", type=float, default=hard_fraction,
                   help="share of each batch made of hard-negative groups of 4 (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.add_argument("--out", required=True, help="run directory: log.jsonl, checkpoint/, and the final model/")


def _common(args):
    from vision_long.training.shapescenes import SceneData
    from vision_long.training.trainer import OptimConfig

    optim = OptimConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                        checkpoint_every=args.checkpoint_every)
    data = SceneData(grids=tuple(args.grids), batch_size=args.batch_size, seed=args.seed, hard_fraction=args.hard_fraction)
    return optim, data


def cmd_train_clip(args) -> None:
    from vision_long.training.shapescenes import ClipRecipe, train_clip

    optim, data = _common(args)
    train_clip(ClipRecipe(out_dir=args.out, model=args.config, data=data, optim=optim, device=args.device,
                          resume=not args.no_resume))
    if is_main():
        print(f"saved the trained model to {args.out}/model")


def cmd_train_longclip(args) -> None:
    from vision_long.encoders.longclip_loss import LongCLIPLoss
    from vision_long.training.shapescenes import LongCLIPRecipe, train_longclip

    optim, data = _common(args)
    loss = LongCLIPLoss(pca_components=args.pca_components, use_pcm=not args.no_pcm, short_weight=args.short_weight)
    train_longclip(LongCLIPRecipe(out_dir=args.out, init=args.init, positions=args.positions, loss=loss, data=data,
                                  optim=optim, device=args.device, resume=not args.no_resume))
    if is_main():
        print(f"saved the fine-tuned Long-CLIP to {args.out}/model")


def register(sub) -> None:
    """Add `train clip` and `train longclip`."""
    train = sub.add_parser("train", help="train models on ShapeScenes", formatter_class=FORMATTER,
                           description="Training recipes. Every run writes OUT/log.jsonl, checkpoints to OUT/checkpoint\n"
                           "(resumed automatically) and the final model to OUT/model. Multi-process:\n"
                           "  torchrun --nproc_per_node 2 -m vision_long.cli train clip --out runs/clip")
    recipes = train.add_subparsers(dest="recipe", required=True, metavar="RECIPE")

    clip = recipes.add_parser(
        "clip", formatter_class=FORMATTER, help="a small CLIP from scratch at context 77",
        description="Train a CLIP from scratch at context 77 on ShapeScenes long captions truncated to 77 tokens:\n"
        "the stand-in for 'a pretrained CLIP' that Long-CLIP fine-tunes.",
        epilog="example:\n  vision-long train clip --out runs/clip77 --steps 3000",
    )
    clip.add_argument("--config", default="shapescenes-small", help="architecture name or JSON file (default: %(default)s)")
    _optim_args(clip, steps=1500, lr=1e-3, warmup=100, weight_decay=0.1, hard_fraction=0.0)
    clip.set_defaults(func=cmd_train_clip)

    long = recipes.add_parser(
        "longclip", formatter_class=FORMATTER, help="Long-CLIP fine-tuning of a 77-token CLIP",
        description="The Long-CLIP recipe: stretch positions 77 -> 248 (keep 20, ratio 4), freeze the stretched\n"
        "table, train the residual table and both towers with L_long + L_short, where short captions\n"
        "(first sentences) match the images' top-k principal components (PCM); label smoothing 0.1,\n"
        "temperature reset to 100.",
        epilog="examples:\n  vision-long train longclip --init runs/clip77/model --out runs/longclip\n"
        "  vision-long train longclip --init runs/clip77/model --positions interpolate --out runs/naive\n"
        "  vision-long train longclip --init runs/clip77/model --no-pcm --out runs/no-pcm",
    )
    long.add_argument("--init", default="default-77", help="the 77-token model to start from (default: %(default)s)")
    long.add_argument("--positions", choices=["kps", "interpolate"], default="kps",
                      help="kps: knowledge-preserved stretching; interpolate: the naive ablation (default: kps)")
    long.add_argument("--no-pcm", action="store_true", help="ablation: match short captions to full image features")
    long.add_argument("--pca-components", type=int, default=32, help="k of primary-component matching (default: 32)")
    long.add_argument("--short-weight", type=float, default=1.0, help="weight of L_short (default: 1.0)")
    _optim_args(long, steps=400, lr=2e-4, warmup=50, weight_decay=0.01, hard_fraction=0.5)
    long.set_defaults(func=cmd_train_longclip)
