"""One readable training loop for every recipe: AdamW, warm-up + cosine, checkpoints, resume, torchrun.

A recipe gives the model, the parameters to train and a `step_fn(step) -> dict of losses` that builds its own
batch from the step number (ShapeScenes batches are a pure function of their seeds, so resuming needs no data
loader state). Under torchrun each rank computes its local loss (with negatives gathered with gradients) and
gradients are averaged over ranks after backward, which is what DDP does.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from vision_long.checkpoints import load_native, save_native
from vision_long.distributed import all_reduce_mean, is_distributed, is_main, world_size

CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = "model"
TRAINER_STATE = "trainer_state.pt"
AUX_STATE = "aux.safetensors"


@dataclass
class OptimConfig:
    """Optimizer and schedule: AdamW with linear warm-up then cosine decay to 0 (Long-CLIP's schedule)."""

    steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 100
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    checkpoint_every: int = 250
    log_every: int = 10

    def lr_at(self, step: int) -> float:
        """Learning rate of `step` (0-based): `lr * (step + 1) / warmup`, then cosine to 0."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return 0.5 * self.lr * (1 + math.cos(math.pi * progress))


def make_optimizer(
    params: list[nn.Parameter], cfg: OptimConfig, scaled_params: Sequence[tuple[list[nn.Parameter], float]] = ()
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on gains, biases, embeddings of scale or the temperature).

    Each (parameters, scale) of `scaled_params` trains at `scale` times the schedule's learning rate (its groups
    carry "lr_scale", which `train` applies every step), e.g. a pretrained text tower tuned gently beside a new
    UNet."""
    groups = []
    for group_params, scale in [(params, 1.0), *scaled_params]:
        groups += [{"params": [p for p in group_params if p.ndim >= 2], "weight_decay": cfg.weight_decay,
                    "lr_scale": scale},
                   {"params": [p for p in group_params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def _average_gradients(params: list[nn.Parameter]) -> None:
    if not is_distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def _save_checkpoint(
    model: nn.Module, optimizer, step: int, out_dir: Path, extra: dict, aux: dict[str, nn.Module]
) -> None:
    """Write `out_dir/checkpoint` atomically (a half-written checkpoint never replaces a good one)."""
    tmp = out_dir / f"{CHECKPOINT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_native(model, tmp)
    if aux:
        state = {f"{name}.{k}": v.detach().contiguous().cpu() for name, m in aux.items() for k, v in m.state_dict().items()}
        save_file(state, str(tmp / AUX_STATE))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "extra": extra}, tmp / TRAINER_STATE)
    final = out_dir / CHECKPOINT_DIR
    old = out_dir / f"{CHECKPOINT_DIR}.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def resume_state(out_dir: Path, model: nn.Module, optimizer, aux: dict[str, nn.Module] | None = None) -> int:
    """Load `out_dir/checkpoint` into `model`, `optimizer` and `aux` when it exists; returns the step to start at."""
    ckpt = out_dir / CHECKPOINT_DIR
    if not (ckpt / TRAINER_STATE).is_file():
        return 0
    saved = load_native(ckpt, device=next(model.parameters()).device)
    model.load_state_dict(saved.state_dict())
    if aux:
        state = load_file(str(ckpt / AUX_STATE))
        for name, module in aux.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    state = torch.load(ckpt / TRAINER_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def train(
    model: nn.Module,
    params: list[nn.Parameter],
    step_fn: Callable[[int], dict[str, torch.Tensor]],
    cfg: OptimConfig,
    out_dir: str | Path,
    after_step: Callable[[], None] | None = None,
    resume: bool = True,
    run_info: dict | None = None,
    aux: dict[str, nn.Module] | None = None,
    scaled_params: Sequence[tuple[list[nn.Parameter], float]] = (),
) -> nn.Module:
    """Run `cfg.steps` optimizer steps of `step_fn` and save the final model to `out_dir/model`.

    `step_fn(step)` returns a dict with at least "loss" (a scalar tensor with gradients) and any other parts
    to log. `after_step` runs after each optimizer step (e.g. clamping the temperature, an EMA update); `aux`
    names further modules to checkpoint and restore with the model: ones that change outside the optimizer (an EMA
    teacher) or that `scaled_params` trains (parameters at a multiple of the learning rate, see `make_optimizer`,
    e.g. a text encoder tuned beside `model`). Progress goes to a
    tqdm bar and to `out_dir/log.jsonl`; a checkpoint is written every `cfg.checkpoint_every` steps and
    training resumes from it when `resume` is set.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    optimizer = make_optimizer(params, cfg, scaled_params)
    params = [*params, *(p for group_params, _ in scaled_params for p in group_params)]
    start = resume_state(out_dir, model, optimizer, aux) if resume else 0
    if is_main():
        (out_dir / "run.json").write_text(json.dumps({"optim": asdict(cfg), **(run_info or {})}, indent=2) + "\n")
    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=not is_main())
    log = (out_dir / "log.jsonl").open("a") if is_main() else None
    t0 = time.perf_counter()
    for step in bar:
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints from before scaled groups lack it
        parts = step_fn(step)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        _average_gradients(params)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            logged = {k: round(all_reduce_mean(v.detach()).item(), 5) for k, v in parts.items()}
            bar.set_postfix(logged)
            if log:
                log.write(json.dumps({"step": done, "lr": lr, "elapsed_s": round(time.perf_counter() - t0, 1), **logged}) + "\n")
                log.flush()
        if done % cfg.checkpoint_every == 0 and done < cfg.steps and is_main():
            _save_checkpoint(model, optimizer, done, out_dir, run_info or {}, aux or {})
    if log:
        log.close()
    model.eval()
    if is_main():
        save_native(model, out_dir / FINAL_DIR)
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    if is_distributed():
        dist.barrier()
    return model
