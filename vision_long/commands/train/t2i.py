"""`vision-long train t2i`: the small text-to-image pipeline (VAE, UNet, LLM adapter)."""

from __future__ import annotations

from vision_long.commands.common import FORMATTER, CLIError
from vision_long.distributed import is_main


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
        snr_gamma=args.snr_gamma, text_lr_scale=args.text_lr_scale, device=args.device, resume=not args.no_resume,
    ))
    if is_main():
        if llm:
            print(f"saved the text adapter and its UNet LoRA to {out} (try: vision-long generate --pipeline "
                  f"{args.pipeline} --adapter {out} --prompt-file PROMPT.txt)")
            return
        then = (f"then: vision-long train t2i --stage unet --vae {args.out} --out RUN_DIR" if stage == "vae"
                else f"try: vision-long generate --pipeline {out} --prompt-file PROMPT.txt")
        print(f"saved the trained {stage} to {out} ({then})")


def add_parser(recipes) -> None:
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
    t2i.add_argument("--text-lr-scale", type=float, default=0.0,
                     help="stage unet: tune the text tower with the UNet at this multiple of --lr, and ship the tuned "
                     "tower in the pipeline; 0 keeps it frozen as LongAlign and SD do (default: %(default)s)")
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
