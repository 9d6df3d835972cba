"""The CLIP text transformer (OpenAI layout) with causal attention that costs only real tokens.

Parameter names match OpenAI CLIP's state dict (`transformer.resblocks.{i}.attn.in_proj_weight`, ...),
so OpenAI, Long-CLIP and open_clip checkpoints load without renaming. Each block runs on a padded
batch `Tensor[N, L, W]` (training, and the reference path) or on a packed token stream `Tensor[T, W]`
with `cu_seqlens` (inference): the linear layers then see only real tokens and attention stays inside
each sequence through `kernels.varlen_attention`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU
from torch import nn

from vision_long.kernels.attention import varlen_attention

ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


@dataclass
class PackedTokens:
    """Where each sequence lives in a packed token stream (the flash-attention varlen convention)."""

    cu_seqlens: torch.Tensor  # IntTensor[N + 1], cumulative lengths starting at 0
    max_seqlen: int


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with `nn.MultiheadAttention`'s parameter names."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, packed: PackedTokens | None = None) -> torch.Tensor:
        """x: Tensor[N, L, W] (padded, causal over each row) or Tensor[T, W] with `packed`."""
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        head_dim = x.shape[-1] // self.heads
        if packed is None:
            n, length, _ = x.shape
            q, k, v = qkv.view(n, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out = out.transpose(1, 2).reshape(n, length, -1)
        else:
            q, k, v = qkv.view(-1, 3, self.heads, head_dim).unbind(1)
            out = varlen_attention(q, k, v, packed.cu_seqlens, packed.max_seqlen, causal=True)
            out = out.reshape(x.shape[0], -1)
        return self.out_proj(out)


class ResidualBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, hidden), gelu=ACTIVATIONS[act](), c_proj=nn.Linear(hidden, width))
        )

    def forward(self, x: torch.Tensor, packed: PackedTokens | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), packed)
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """A stack of causal residual blocks; `resblocks` keeps OpenAI's key names."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, act: str = "quick_gelu"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
        self.resblocks = nn.ModuleList(ResidualBlock(width, heads, mlp_ratio, act) for _ in range(layers))

    def forward(
        self, x: torch.Tensor, packed: PackedTokens | None = None, stop_at_layer: int | None = None
    ) -> torch.Tensor:
        """Run blocks [0, stop_at_layer) (all by default) on padded `[N, L, W]` or packed `[T, W]` tokens."""
        for block in self.resblocks[:stop_at_layer]:
            x = block(x, packed)
        return x
