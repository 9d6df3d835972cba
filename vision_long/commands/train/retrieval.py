"""`vision-long train clip | longclip | proclip`: the ShapeScenes retrieval recipes."""

from __future__ import annotations

from vision_long.commands.common import FORMATTER
from vision_long.commands.train.common import fill_args, optim_args, scene_recipe
from vision_long.distributed import is_main


def cmd_train_clip(args) -> None:
    from vision_long.training.shapescenes import ClipRecipe, train_clip

    optim, data = scene_recipe(args)
    train_clip(ClipRecipe(out_dir=args.out, model=args.config, init=args.init, data=data, optim=optim,
                          device=args.device, resume=not args.no_resume))
    if is_main():
        print(f"saved the trained model to {args.out}/model")


def cmd_train_longclip(args) -> None:
    from vision_long.encoders.longclip_loss import LongCLIPLoss
    from vision_long.training.shapescenes import LongCLIPRecipe, train_longclip

    optim, data = scene_recipe(args)
    loss = LongCLIPLoss(pca_components=args.pca_components, use_pcm=not args.no_pcm, short_weight=args.short_weight)
    train_longclip(LongCLIPRecipe(out_dir=args.out, init=args.init, positions=args.positions, loss=loss, data=data,
                                  optim=optim, device=args.device, resume=not args.no_resume))
    if is_main():
        print(f"saved the fine-tuned Long-CLIP to {args.out}/model")


def cmd_train_proclip(args) -> None:
    from vision_long.encoders.llm_embedder import LLMConfig
    from vision_long.encoders.proclip import AdapterConfig
    from vision_long.training.proclip import ProCLIPRecipe, ScenePool, train_proclip
    from vision_long.training.trainer import OptimConfig

    init = args.init or ("default-77" if args.stage == 1 else None)
    if init is None:
        raise SystemExit("error: stage 2 starts from a stage-1 model: pass --init OUT_OF_STAGE_1/model")
    lr = args.lr or (1e-3 if args.stage == 1 else 2e-4)  # stage 2 fine-tunes a pretrained image tower
    optim = OptimConfig(steps=args.steps, lr=lr, warmup=args.warmup, weight_decay=args.weight_decay,
                        checkpoint_every=args.checkpoint_every)
    recipe = ProCLIPRecipe(
        out_dir=args.out, stage=args.stage, init=init,
        llm=LLMConfig(name=args.llm, max_length=args.llm_max_length, chunk_long=not args.no_chunk),
        adapter=AdapterConfig(variant=args.adapter), structure_form=args.structure_form,
        reg_weight=args.reg_weight, ema_momentum=args.ema_momentum,
        pool=ScenePool(grids=tuple(args.grids), scenes=args.pool_scenes, hard_groups=args.hard_groups, seed=args.seed),
        batch_size=args.batch_size, hard_fraction=args.hard_fraction, optim=optim, llm_cache=args.llm_cache,
        device=args.device, resume=not args.no_resume,
    )
    train_proclip(recipe)
    if is_main():
        print(f"saved the stage-{args.stage} ProCLIP to {args.out}/model")


def add_parsers(recipes) -> None:
    """Add `clip`, `longclip` and `proclip` to the `train` recipes."""
    clip = recipes.add_parser(
        "clip", formatter_class=FORMATTER, help="a small CLIP from scratch at context 77",
        description="Train a CLIP from scratch at context 77 on ShapeScenes long captions truncated to 77 tokens:\n"
        "the stand-in for 'a pretrained CLIP' that Long-CLIP fine-tunes.",
        epilog="examples:\n  vision-long train clip --out runs/clip77 --steps 3000\n"
        "  vision-long train clip --init runs/clip77/model --partial-captions 0.5 --steps 600 --lr 5e-4 \\\n"
        "      --warmup 50 --seed 2 --out runs/clip77-partial       # a second stage on other captions",
    )
    clip.add_argument("--config", default="shapescenes-small", help="architecture name or JSON file (default: %(default)s)")
    clip.add_argument("--init", help="continue training this 77-token model (a directory or a shipped name such as "
                      "default-77) instead of a fresh --config one")
    optim_args(clip, steps=1500, lr=1e-3, warmup=100, weight_decay=0.1, hard_fraction=0.0)
    fill_args(clip)
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
    optim_args(long, steps=400, lr=2e-4, warmup=50, weight_decay=0.01, hard_fraction=0.5)
    fill_args(long)
    long.set_defaults(func=cmd_train_longclip)

    pro = recipes.add_parser(
        "proclip", formatter_class=FORMATTER, help="ProCLIP: align an LLM text embedder to a CLIP (2 stages)",
        description="ProCLIP on ShapeScenes. A frozen LLM (default: the offline all-MiniLM-L6-v2) embeds captions\n"
        "(mean pooling, no 77-token limit); an adapter maps them into the CLIP's space.\n"
        "  stage 1: only the adapter trains, distilled onto the CLIP text tower (L_ins + L_struct)\n"
        "  stage 2: image tower + adapter train with InfoNCE + lambda x (L_ins + L_struct) to an EMA\n"
        "           teacher of the image tower.\n"
        "The LLM embeddings of the fixed scene pool are computed once and cached (OUT/llm-cache).",
        epilog="example:\n  vision-long train proclip --stage 1 --init default-77 --out runs/proclip1\n"
        "  vision-long train proclip --stage 2 --init runs/proclip1/model --out runs/proclip2",
    )
    pro.add_argument("--stage", type=int, choices=[1, 2], required=True)
    pro.add_argument("--init", default=None,
                     help="stage 1: the CLIP to align to (default: default-77); stage 2: the stage-1 model directory")
    pro.add_argument("--llm", default="minilm", help="'minilm', a transformers directory or hub id (default: minilm)")
    pro.add_argument("--llm-max-length", type=int, default=None, help="tokens per LLM forward (default: the model's)")
    pro.add_argument("--no-chunk", action="store_true",
                     help="refuse texts longer than the LLM's positions instead of averaging windows")
    pro.add_argument("--llm-cache", default=None, help="where LLM embeddings are cached (default: OUT/llm-cache)")
    pro.add_argument("--adapter", choices=["proclip", "llm2clip"], default="proclip",
                     help="proclip: 1 residual block x8; llm2clip: 4 blocks x2 (default: proclip)")
    pro.add_argument("--structure-form", choices=["code", "paper"], default="code",
                     help="code: smooth-L1 of pairwise distances (upstream code); paper: squared distances")
    pro.add_argument("--reg-weight", type=float, default=1.0, help="stage 2: lambda of the self-distillation term")
    pro.add_argument("--ema-momentum", type=float, default=0.999, help="stage 2: momentum of the EMA teacher")
    pro.add_argument("--pool-scenes", type=int, default=3000, help="random scenes in the training pool")
    pro.add_argument("--hard-groups", type=int, default=500, help="hard-negative groups of 4 in the pool (stage 2)")
    optim_args(pro, steps=500, lr=None, warmup=50, weight_decay=0.05, hard_fraction=0.5, grids=(3, 4, 5, 6))
    pro.set_defaults(func=cmd_train_proclip)
