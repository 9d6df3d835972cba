"""`vision-long train cell-parser`: the classifier behind the t2i-alignment metric."""

from __future__ import annotations

from vision_long.commands.common import FORMATTER


def cmd_train_cell_parser(args) -> None:
    from vision_long.eval.alignment import CellData, CellParserRecipe, train_cell_parser
    from vision_long.training.trainer import OptimConfig

    optim = OptimConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                        checkpoint_every=args.checkpoint_every, log_every=50)
    _, held_out = train_cell_parser(CellParserRecipe(
        out_dir=args.out, data=CellData(batch_size=args.batch_size, seed=args.seed), optim=optim,
        held_out_scenes=args.held_out, device=args.device, resume=not args.no_resume))
    for m in held_out:
        print(f"held-out {m['grid']}x{m['grid']} at {m['image_size']} px ({m['n']} scenes, {m['n_objects']} objects): "
              + ", ".join(f"{k} {100 * m[k]:.2f}"
                          for k in ("presence", "color", "shape", "size", "empty_cells", "exact_all")))
    print(f"saved the cell parser to {args.out}/model (held-out accuracy: {args.out}/held_out.json); "
          f"install it with: cp {args.out}/model/* vision_long/assets/cell-parser/")


def add_parser(recipes) -> None:
    p = recipes.add_parser(
        "cell-parser", formatter_class=FORMATTER, help="the tiny CNN that reads ShapeScenes cells (alignment metric)",
        description="Train the classifier behind 'vision-long eval --suite t2i-alignment': a tiny CNN that reads one\n"
        "grid cell (object or empty; color, shape, size). Cells are cut from rendered training scenes of grids\n"
        "2-6 at random resolutions (cells 10-48 px), with jittered crops and pixel noise. Afterwards the held-out\n"
        "accuracy on rendered evaluation scenes is printed and written to OUT/held_out.json. About 4 minutes on one\n"
        "CPU thread at the defaults.",
        epilog="example:\n  vision-long train cell-parser --out runs/cell-parser\n"
        "  cp runs/cell-parser/model/* vision_long/assets/cell-parser/",
    )
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="cells per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="run seed: initialisation and cell order (default: 0)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--held-out", type=int, default=300,
                   help="evaluation scenes per held-out setting reported after training (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.add_argument("--out", required=True,
                   help="run directory: log.jsonl, checkpoint/, the final model/, held_out.json")
    p.set_defaults(func=cmd_train_cell_parser)
