"""`vision-long train lmm`: the Dragonfly-style VQA model on ShapeScenes."""

from __future__ import annotations

from vision_long.commands.common import FORMATTER
from vision_long.distributed import is_main


def lmm_recipe_from_args(args):
    """The `LMMRecipe` that `train lmm`'s options describe."""
    from vision_long.lmm.model import ZoomConfig
    from vision_long.lmm.training import LanguageModelConfig, LMMRecipe, VQABatches
    from vision_long.lmm.vqa import VQAConfig
    from vision_long.training.trainer import OptimConfig

    optim = OptimConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                        checkpoint_every=args.checkpoint_every)
    return LMMRecipe(
        out_dir=args.out, vision=args.vision,
        lm=LanguageModelConfig(kind=args.lm, width=args.width, layers=args.layers, heads=args.heads,
                               intermediate=args.intermediate, max_positions=args.max_positions),
        projector=args.projector, pooled_grid=args.pooled_grid, zoom=tuple(args.zoom),
        zoom_config=ZoomConfig(v1_k=args.v1_k, text_k=args.text_k, text_encoder=args.text_encoder),
        zoom_head_items=args.zoom_head_items,
        data=VQABatches(VQAConfig(grid=args.grid, image_size=args.image_size, kinds=tuple(args.kinds)),
                        batch_size=args.batch_size, seed=args.seed, easy_grids=tuple(args.easy_grids),
                        kind_starts=tuple(args.kind_starts)),
        optim=optim, device=args.device, resume=not args.no_resume,
    )


def cmd_train_lmm(args) -> None:
    from vision_long.lmm.training import train_lmm

    train_lmm(lmm_recipe_from_args(args))
    if is_main():
        print(f"saved the trained LMM to {args.out}/model "
              f"(try: vision-long ask IMAGE \"QUESTION\" --model {args.out}/model)")


def add_parser(recipes) -> None:
    from vision_long.commands.lmm import KIND_CHOICES, ZOOM_CHOICES

    lmm = recipes.add_parser(
        "lmm", formatter_class=FORMATTER, help="a tiny multi-resolution VQA model over a frozen CLIP vision tower",
        description="Train a Dragonfly-style LMM on ShapeScenes VQA ('What color is the small shape in the cell at\n"
        "row 4, column 2?'): the frozen image tower of --vision (read at its penultimate layer), a projector and a\n"
        "small causal LM from scratch over a word-level tokenizer of the VQA vocabulary (saved with the model).\n"
        "Each step answers --batch-size items with teacher forcing; with several --zoom modes, step s uses the\n"
        "(s mod count)-th, so one model learns every crop layout it will be evaluated with. About 1.1 s per step\n"
        "on one busy CPU thread at the defaults (multires), so 2000 steps take well under an hour.\n"
        "The defaults are Dragonfly's layout; the recipe that learns to read the crops (the embedded default LMM,\n"
        "scripts/build_default_lmm.sh; 85% with text zoom) is the first example: text zoom only, 4 x 4 pooled\n"
        "crops, and a curriculum over question kinds (benchmarks/RESULTS.md, lmm_curriculum).",
        epilog="examples:\n"
        "  vision-long train lmm --out runs/lmm --steps 3200 --warmup 50 --layers 2 --zoom text --text-k 1 \\\n"
        "      --pooled-grid 4 --kinds color shape exists --kind-starts 500 2000 --easy-grids --seed 0\n"
        "  vision-long train lmm --out runs/lmm-dragonfly\n"
        "  vision-long train lmm --out runs/lmm-all --zoom multires text v1 none --steps 3000\n"
        "  vision-long train lmm --out runs/lmm-gpt2 --lm gpt2 --pooled-grid 4\n"
        "then: vision-long eval --suite vqa --model runs/lmm/model --zoom text --n 500 --json",
    )
    parts = lmm.add_argument_group("model")
    parts.add_argument("--vision", default="default",
                       help="the CLIP whose image tower is used, frozen (a model spec; default: %(default)s)")
    parts.add_argument("--pooled-grid", type=int, default=2,
                       help="medium/high crops' patch grid pooled to this side; must divide the tower's patch grid "
                       "(8 for the default CLIP: 2, 4 or 8) (default: %(default)s)")
    parts.add_argument("--projector", choices=["mlp", "linear"], default="mlp",
                       help="2-layer GELU MLP (LLaVA) or Linear (Dragonfly) (default: %(default)s)")
    parts.add_argument("--lm", choices=["llama", "gpt2"], default="llama",
                       help="LM architecture: llama (RoPE) or gpt2 (learned positions) (default: %(default)s)")
    parts.add_argument("--width", type=int, default=192, help="LM width (default: %(default)s)")
    parts.add_argument("--layers", type=int, default=4, help="LM layers (default: %(default)s)")
    parts.add_argument("--heads", type=int, default=4, help="LM attention heads (default: %(default)s)")
    parts.add_argument("--intermediate", type=int, default=384, help="LM MLP width (default: %(default)s)")
    parts.add_argument("--max-positions", type=int, default=1024, help="LM positions (default: %(default)s)")
    zoom = lmm.add_argument_group("zoom and data")
    zoom.add_argument("--zoom", nargs="+", choices=ZOOM_CHOICES, default=["multires"],
                      help="training zoom mode(s), cycled per step (default: multires, every crop)")
    zoom.add_argument("--text-k", type=int, default=4, help="high crops kept by text zoom (default: %(default)s)")
    zoom.add_argument("--v1-k", type=int, default=3,
                      help="high crops kept per medium crop by v1 zoom (default: %(default)s)")
    zoom.add_argument("--text-encoder", default="default",
                      help="the long-text CLIP that ranks crops for text zoom (default: %(default)s)")
    zoom.add_argument("--zoom-head-items", type=int, default=1000,
                      help="training questions that fit text zoom's learned head before the LM trains: it scores a "
                      "crop by the CLIP similarity and by where the question points ('row 4, column 2'), which a "
                      "crop's own image cannot show; 0 ranks by the CLIP similarity alone (default: %(default)s)")
    zoom.add_argument("--grid", type=int, default=6,
                      help="scene grid of the VQA items; every other item uses one of --easy-grids instead (easier "
                      "scenes for learning to read objects from crops) (default: %(default)s)")
    zoom.add_argument("--kinds", nargs="+", choices=KIND_CHOICES, default=list(KIND_CHOICES),
                      help="question kinds trained on, in curriculum order with --kind-starts (default: all three; "
                      "asked together from step 0 the LM stays at the answer prior, see benchmarks/RESULTS.md "
                      "lmm_curriculum)")
    zoom.add_argument("--kind-starts", type=int, nargs="*", default=[], metavar="STEP",
                      help="curriculum: the first of --kinds is asked from step 0, the i-th from the (i-1)-th STEP "
                      "given (one per further kind); none given: every kind from the start (default)")
    zoom.add_argument("--easy-grids", type=int, nargs="*", default=[2, 3],
                      help="scene grids of every other item, cycled (default: 2 3; none given: every item uses --grid)")
    zoom.add_argument("--image-size", type=int, default=384,
                      help="VQA image side in pixels; 384 = 6 high crops x 64 px, one cell each (default: %(default)s)")
    run = lmm.add_argument_group("optimization")
    run.add_argument("--steps", type=int, default=2000, help="optimizer steps (default: %(default)s)")
    run.add_argument("--batch-size", type=int, default=8, help="VQA items per step per process (default: %(default)s)")
    run.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    run.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default: %(default)s)")
    run.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="run seed: initialisation and item order (default: 0)")
    run.add_argument("--checkpoint-every", type=int, default=250,
                     help="steps between checkpoints (default: %(default)s)")
    run.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    run.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    run.add_argument("--out", required=True, help="run directory: log.jsonl, checkpoint/, and the final model/")
    lmm.set_defaults(func=cmd_train_lmm)
