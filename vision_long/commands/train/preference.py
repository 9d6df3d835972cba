"""`vision-long train preference`: LongAlign's decomposed preference optimization."""

from __future__ import annotations

from vision_long.commands.common import FORMATTER
from vision_long.distributed import is_main


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


def add_parser(recipes) -> None:
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
