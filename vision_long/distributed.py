"""Single-process or `torchrun` (DDP) training, with the same code: rank helpers and gathers with gradients."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str | None = None) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this rank's device.

    gloo on CPU, nccl on CUDA. Without torchrun this is a no-op and returns `device` (default: cuda if available).
    """
    use_cuda = torch.cuda.is_available() and device in (None, "cuda")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device or "cpu")


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate Tensor[b, ...] from every rank into Tensor[b * world, ...]; gradients flow to every rank."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x))


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()
