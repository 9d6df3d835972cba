"""ProCLIP's distillation losses and the EMA teacher of stage 2 (reference notes 2.3-2.4).

Both stages use the same pair of terms between a student's and a teacher's normalized features:
  instance alignment   L_ins    = sum_i ||s_i - t_i||^2                    (MSE, sum reduction)
  structure alignment  L_struct = sum_{i<j} smoothL1(|s_i - s_j| - |t_i - t_j|), beta 1  (upstream code)
or, with `form="paper"`, sum_{i<j} (|s_i - s_j|^2 - |t_i - t_j|^2)^2. The paper prints that sum without the
outer square; read literally it is signed and minimized by collapsing the student, so the squared
difference is the only usable reading of it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

STRUCTURE_FORMS = ("code", "paper")


def instance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """sum_i ||s_i - t_i||^2 over Tensor[B, D] pairs (upstream: `mse_loss(..., reduction="sum")`)."""
    return F.mse_loss(student, teacher, reduction="sum")


def structure_loss(student: torch.Tensor, teacher: torch.Tensor, form: str = "code") -> torch.Tensor:
    """Match the B(B-1)/2 pairwise distances of the student's Tensor[B, D] to the teacher's (see module doc)."""
    if form == "code":
        return F.smooth_l1_loss(F.pdist(student), F.pdist(teacher), reduction="sum", beta=1.0)
    if form == "paper":
        return ((F.pdist(student) ** 2 - F.pdist(teacher) ** 2) ** 2).sum()
    raise ValueError(f"unknown structure-loss form {form!r}; expected one of {STRUCTURE_FORMS}")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, form: str = "code") -> dict[str, torch.Tensor]:
    """L_ins + L_struct (weights 1:1, as upstream), with both parts for logging."""
    ins, struct = instance_loss(student, teacher), structure_loss(student, teacher, form)
    return {"loss": ins + struct, "instance": ins.detach(), "structure": struct.detach()}


class EMATeacher(nn.Module):
    """A frozen copy of a module updated as theta_t <- m * theta_t + (1 - m) * theta_s after each step.

    ProCLIP's stage-2 teacher is an EMA of the image encoder; upstream publishes neither the momentum nor the
    update code, so `momentum` is ours to choose (see `training/proclip.py`).
    """

    def __init__(self, student: nn.Module, momentum: float):
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.module = copy.deepcopy(student).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach(), 1 - self.momentum)
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
