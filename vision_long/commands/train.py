"""`vision-long train clip | longclip | proclip | lmm | t2i`: the ShapeScenes recipes.

Single process, or unchanged under torchrun.
"""

from __future__ import annotations

from vision_long.commands.common import FORMATTER, CLIError
from vision_long.distributed import is_main


def _optim_args(
    p, steps: int, lr: float, warmup: int, weight_decay: float, hard_fraction: float, grids: tuple[int, ...] = (3,)
) -> None:
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


def _fill_arg(p) -> None:
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


def _common(args):
    from vision_long.training.shapescenes import SceneData
    from vision_long.training.trainer import OptimConfig

    optim = OptimConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                        checkpoint_every=args.checkpoint_every)
    data = SceneData(grids=tuple(args.grids), batch_size=args.batch_size, seed=args.seed, hard_fraction=args.hard_fraction,
                     fill=tuple(args.fill), early_hard_fraction=args.early_hard_fraction,
                     prefix_fraction=args.prefix_fraction, partial_captions=args.partial_captions)
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
        data=VQABatches(VQAConfig(grid=args.grid, image_size=args.image_size), batch_size=args.batch_size,
                        seed=args.seed),
        optim=optim, device=args.device, resume=not args.no_resume,
    )


def cmd_train_lmm(args) -> None:
    from vision_long.lmm.training import train_lmm

    train_lmm(lmm_recipe_from_args(args))
    if is_main():
        print(f"saved the trained LMM to {args.out}/model "
              f"(try: vision-long ask IMAGE \"QUESTION\" --model {args.out}/model)")


def _lmm_parser(recipes) -> None:
    from vision_long.commands.lmm import ZOOM_CHOICES

    lmm = recipes.add_parser(
        "lmm", formatter_class=FORMATTER, help="a tiny multi-resolution VQA model over a frozen CLIP vision tower",
        description="Train a Dragonfly-style LMM on ShapeScenes VQA ('What color is the small shape in the cell at\n"
        "row 4, column 2?'): the frozen image tower of --vision (read at its penultimate layer), a projector and a\n"
        "small causal LM from scratch over a word-level tokenizer of the VQA vocabulary (saved with the model).\n"
        "Each step answers --batch-size items with teacher forcing; with several --zoom modes, step s uses the\n"
        "(s mod count)-th, so one model learns every crop layout it will be evaluated with. About 1.1 s per step\n"
        "on one busy CPU thread at the defaults (multires), so 2000 steps take well under an hour.",
        epilog="examples:\n  vision-long train lmm --out runs/lmm\n"
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
    zoom.add_argument("--grid", type=int, default=6,
                      help="scene grid of the VQA items; every other item uses a 2 x 2 or 3 x 3 grid instead (easier "
                      "scenes for learning to read objects from crops) (default: %(default)s)")
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


def cmd_train_t2i(args) -> None:
    from vision_long.training.shapescenes import SceneData
    from vision_long.training.t2i import (
        LLM_GRIDS,
        STAGE_DEFAULTS,
        LLMSettings,
        T2IRecipe,
        train_t2i,
    )
    from vision_long.training.trainer import OptimConfig

    llm = args.conditioning == "segments+llm"
    stage = args.stage or ("unet" if llm else None)
    if stage is None:
        raise CLIError("--stage is required (vae or unet); only --conditioning segments+llm implies unet")
    defaults = STAGE_DEFAULTS[args.conditioning if llm else stage]
    steps = args.steps or defaults.steps
    optim = OptimConfig(steps=steps, lr=args.lr or defaults.lr,
                        warmup=min(defaults.warmup if args.warmup is None else args.warmup, steps),
                        weight_decay=args.weight_decay, checkpoint_every=args.checkpoint_every)
    grids = args.grids or (LLM_GRIDS if llm else [3])
    data = SceneData(grids=tuple(grids), batch_size=args.batch_size or defaults.batch_size, seed=args.seed,
                     fill=tuple(args.fill))
    out = train_t2i(T2IRecipe(
        out_dir=args.out, stage=stage, config=args.config, vae=args.vae, text_encoder=args.text_encoder,
        conditioning=args.conditioning, pipeline=args.pipeline,
        llm=LLMSettings(llm=args.llm, tokens=args.llm_tokens, adapter_width=args.adapter_width, rank=args.rank),
        data=data, optim=optim, kl_weight=args.kl_weight, condition_dropout=args.condition_dropout,
        snr_gamma=args.snr_gamma, device=args.device, resume=not args.no_resume,
    ))
    if is_main():
        if llm:
            print(f"saved the text adapter and its UNet LoRA to {out} (try: vision-long generate --pipeline "
                  f"{args.pipeline} --adapter {out} --prompt-file PROMPT.txt)")
            return
        then = (f"then: vision-long train t2i --stage unet --vae {args.out} --out RUN_DIR" if stage == "vae"
                else f"try: vision-long generate --pipeline {out} --prompt-file PROMPT.txt")
        print(f"saved the trained {stage} to {out} ({then})")


def _t2i_parser(recipes) -> None:
    from vision_long.diffusion.small_sd import CONFIGS, DEFAULT_CONFIG
    from vision_long.training.t2i import (
        CONDITION_DROPOUT,
        CONDITIONINGS,
        KL_WEIGHT,
        LLM_GRIDS,
        MIN_SNR_GAMMA,
        SCENE_FILL,
        STAGE_DEFAULTS,
        STAGES,
        WEIGHT_DECAY,
        LLMSettings,
    )

    def per_stage(name: str) -> str:
        return ", ".join(f"{getattr(d, name)} for {stage}" for stage, d in STAGE_DEFAULTS.items())

    llm = LLMSettings()
    t2i = recipes.add_parser(
        "t2i", formatter_class=FORMATTER, help="the small text-to-image pipeline: VAE, UNet, LLM adapter",
        description="Train the small Stable-Diffusion-1.5-layout pipeline on ShapeScenes in two stages:\n"
        "  vae:  AutoencoderKL, 64 px scenes <-> 16x16x4 latents; L1 + KL; writes OUT/vae\n"
        "  unet: UNet2DConditionModel, noise-prediction MSE on the frozen VAE's latents, conditioned on the\n"
        "        long captions through LongAlign segments of the frozen text encoder (default: the embedded\n"
        "        Long-CLIP's text tower), 10% empty-prompt dropout for guidance; writes OUT/pipeline, a\n"
        "        diffusers directory for 'vision-long generate --pipeline'.\n"
        "scripts/build_default_t2i.sh runs both and installs the result as the embedded default.\n"
        "--conditioning segments+llm (LongAlign's LongSD branch; implies --stage unet) starts from a finished\n"
        "pipeline (--pipeline) and trains a text adapter over a frozen LLM's per-token states (--llm, default the\n"
        "offline MiniLM) together with a UNet LoRA, on conditioning [240 segment rows | --llm-tokens adapted LLM\n"
        "rows] and scenes of grids 3-6 (captions up to ~750 tokens). Writes OUT/adapter (the adapter, llm.json and\n"
        "the LoRA in lora/) for 'vision-long generate --adapter' (the LoRA alone is also OUT/model).",
        epilog="examples:\n  vision-long train t2i --stage vae --out runs/t2i/vae\n"
        "  vision-long train t2i --stage unet --vae runs/t2i/vae --out runs/t2i/unet\n"
        "  vision-long generate --pipeline runs/t2i/unet/pipeline --prompt 'In the top-left cell there is ...'\n"
        "  vision-long train t2i --conditioning segments+llm --pipeline runs/t2i/unet/pipeline --out runs/t2i/llm\n"
        "  vision-long generate --pipeline runs/t2i/unet/pipeline --adapter runs/t2i/llm/adapter --prompt-file scene.txt",
    )
    t2i.add_argument("--stage", choices=STAGES, help="what to train (required unless --conditioning segments+llm)")
    t2i.add_argument("--conditioning", choices=CONDITIONINGS, default="segments",
                     help="stage unet: segments trains a new UNet; segments+llm trains an LLM adapter and a UNet LoRA "
                     "on --pipeline (default: %(default)s)")
    t2i.add_argument("--config", default=DEFAULT_CONFIG,
                     help=f"architecture: {' | '.join(CONFIGS)} or a JSON file of SmallSDConfig fields "
                     "(default: %(default)s)")
    t2i.add_argument("--vae", metavar="RUN_DIR", help="stage unet: the finished stage-vae run directory (required)")
    t2i.add_argument("--text-encoder", default="default",
                     help="stage unet: the CLIP whose text tower conditions the UNet, frozen (default: %(default)s)")
    t2i.add_argument("--pipeline", metavar="DIR",
                     help="segments+llm: the finished pipeline to adapt (OUT/pipeline of --stage unet; required)")
    t2i.add_argument("--llm", default=llm.llm,
                     help="segments+llm: the frozen text model, 'minilm' or a transformers directory (default: %(default)s)")
    t2i.add_argument("--llm-tokens", type=int, default=llm.tokens,
                     help="segments+llm: rows of the LLM branch; longer prompts are cut (default: %(default)s)")
    t2i.add_argument("--adapter-width", type=int, default=llm.adapter_width,
                     help="segments+llm: the adapter's intermediate width (default: %(default)s)")
    t2i.add_argument("--rank", type=int, default=llm.rank, help="segments+llm: UNet LoRA rank (default: %(default)s)")
    t2i.add_argument("--kl-weight", type=float, default=KL_WEIGHT, help="stage vae: KL weight (default: %(default)s)")
    t2i.add_argument("--condition-dropout", type=float, default=CONDITION_DROPOUT,
                     help="stage unet: share of captions replaced by the empty prompt (default: %(default)s)")
    t2i.add_argument("--snr-gamma", type=float, default=MIN_SNR_GAMMA,
                     help="stage unet: Min-SNR loss weighting min(SNR, G) / SNR; 0: plain MSE (default: %(default)s)")
    t2i.add_argument("--steps", type=int, help=f"optimizer steps (default: {per_stage('steps')})")
    t2i.add_argument("--batch-size", type=int,
                     help=f"scenes per step per process (default: {per_stage('batch_size')})")
    t2i.add_argument("--lr", type=float, help=f"peak learning rate (default: {per_stage('lr')})")
    t2i.add_argument("--warmup", type=int, help=f"linear warm-up steps (default: {per_stage('warmup')})")
    t2i.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY, help="AdamW weight decay (default: %(default)s)")
    t2i.add_argument("--grids", type=int, nargs="+",
                     help=f"grid sizes to train on (default: 3; {' '.join(map(str, LLM_GRIDS))} for segments+llm)")
    t2i.add_argument("--fill", type=float, nargs=2, default=list(SCENE_FILL), metavar=("LO", "HI"),
                     help=f"each scene's cell occupancy is drawn uniformly from [LO, HI] (default: {SCENE_FILL[0]} {SCENE_FILL[1]})")
    t2i.add_argument("--seed", type=int, default=0, help="run seed: initialisation, scenes and noise (default: 0)")
    t2i.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default: %(default)s)")
    t2i.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    t2i.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    t2i.add_argument("--out", required=True,
                     help="run directory: log.jsonl, checkpoint/, model/ and vae/, pipeline/ or adapter/")
    t2i.set_defaults(func=cmd_train_t2i)


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


def _cell_parser_parser(recipes) -> None:
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


def cmd_train_preference(args) -> None:
    from vision_long.diffusion.preference import (
        LORA_TARGETS,
        PreferenceRecipe,
        SamplingConfig,
        train_preference,
    )
    from vision_long.training.shapescenes import SceneData
    from vision_long.training.trainer import OptimConfig

    optim = OptimConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay, beta2=0.999,
                        eps=1e-8, grad_clip=0.3, checkpoint_every=args.checkpoint_every, log_every=1)
    sampling = SamplingConfig(steps=args.sample_steps, grad_steps=args.grad_steps, guidance=args.guidance,
                              method=args.method)
    train_preference(PreferenceRecipe(
        out_dir=args.out, pipeline=args.pipeline, reward=args.reward, w=args.w, rank=args.rank, alpha=args.alpha,
        targets=tuple(args.targets or LORA_TARGETS), sampling=sampling,
        data=SceneData(grids=tuple(args.grids), batch_size=args.batch_size, seed=args.seed),
        optim=optim, device=args.device, resume=not args.no_resume))
    if is_main():
        print(f"saved the LoRA to {args.out}/model (log: {args.out}/log.jsonl); evaluate it with:\n"
              f"  vision-long eval --suite t2i-alignment --methods segments --lora {args.out}/model"
              + (f" --pipeline {args.pipeline}" if args.pipeline else ""))


def _preference_parser(recipes) -> None:
    from vision_long.diffusion.prompts import LLM_METHOD, METHODS

    p = recipes.add_parser(
        "preference", formatter_class=FORMATTER, help="LongAlign's decomposed preference optimization (UNet LoRA)",
        description="Reward fine-tuning of a LoRA on an SD-1.x pipeline's UNet (LongAlign, scaled down): DDIM with\n"
        "guidance over ShapeScenes training captions, gradients at --grad-steps of the --sample-steps (one per\n"
        "block, UNet inputs detached), the predicted x0 decoded by the VAE, reward = the segment-level score of\n"
        "--reward with its text-irrelevant part weighted by --w (1: plain score). log.jsonl holds the reward, the\n"
        "plain score and its text-relevant and text-irrelevant parts per step. The LoRA is saved to OUT/model.",
        epilog="examples:\n  vision-long train preference --w 0.3 --out runs/pref-w03\n"
        "  vision-long train preference --w 1 --out runs/pref-w1 --steps 200\n"
        "then: vision-long eval --suite t2i-alignment --methods segments --lora runs/pref-w03/model --n 200",
    )
    p.add_argument("--pipeline", metavar="DIR", help="local SD-1.x diffusers directory (default: the embedded one)")
    p.add_argument("--reward", default="default", help="reward model, a model spec (default: %(default)s)")
    p.add_argument("--w", type=float, default=0.3,
                   help="weight of the text-irrelevant part, 0..1 (default: %(default)s)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank, i.e. scale 1)")
    p.add_argument("--targets", nargs="+", default=None,
                   help="peft target modules (default: to_q to_k to_v to_out.0, the attention projections)")
    p.add_argument("--sample-steps", type=int, default=10, help="DDIM steps per sample (default: %(default)s)")
    p.add_argument("--grad-steps", type=int, default=2,
                   help="steps with gradients, one per block; must divide --sample-steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (default: %(default)s)")
    p.add_argument("--method", choices=[m for m in METHODS if m not in ("longclip", LLM_METHOD)], default="segments",
                   help="prompt encoding for the UNet (default: %(default)s)")
    p.add_argument("--grids", type=int, nargs="+", default=[3], help="scene grid sizes of the prompts (default: 3)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="prompts per step per process (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="run seed: initialisation, prompts and noise (default: 0)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.add_argument("--out", required=True, help="run directory: log.jsonl, checkpoint/, and the LoRA in model/")
    p.set_defaults(func=cmd_train_preference)


def register(sub) -> None:
    """Add `train clip`, `train longclip`, `train proclip`, `train lmm` and `train t2i`."""
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
    _fill_arg(clip)
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
    _fill_arg(long)
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
    _optim_args(pro, steps=500, lr=None, warmup=50, weight_decay=0.05, hard_fraction=0.5, grids=(3, 4, 5, 6))
    pro.set_defaults(func=cmd_train_proclip)

    _lmm_parser(recipes)
    _t2i_parser(recipes)
    _cell_parser_parser(recipes)
    _preference_parser(recipes)
