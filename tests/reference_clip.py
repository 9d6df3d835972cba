"""An independent OpenAI-CLIP / Long-CLIP forward written from the formulas, for parity tests.

It reads a plain OpenAI-layout state dict (plus `positional_embedding_res` for Long-CLIP) and uses only
torch primitives: no vision_long, open_clip or transformers code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LONGCLIP_KEEP = 20


def kps_loop(pe: torch.Tensor, keep: int = 20, ratio: int = 4) -> torch.Tensor:
    """Long-CLIP's `load_from_clip` stretching written as its loops (in float64)."""
    p = pe.double()
    length, width = p.shape
    new = torch.zeros(ratio * length - (ratio - 1) * keep, width, dtype=torch.float64)
    new[:keep] = p[:keep]
    for i in range(length - 1 - keep):
        for r in range(ratio):
            new[keep + ratio * i + r] = (ratio - r) / ratio * p[keep + i] + r / ratio * p[keep + i + 1]
    for r in range(ratio):
        new[ratio * length - ratio * keep - ratio + keep + r] = p[length - 1] + r / ratio * (p[length - 1] - p[length - 2])
    return new.to(pe.dtype)


def _ln(x, sd, name):
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], 1e-5)


def _attention(x, sd, prefix, heads, causal):
    n, length, width = x.shape
    qkv = x @ sd[prefix + "in_proj_weight"].T + sd[prefix + "in_proj_bias"]
    q, k, v = (t.reshape(n, length, heads, -1).transpose(1, 2) for t in qkv.split(width, -1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if causal:
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
    return out @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]


def _blocks(x, sd, prefix, heads, causal, act):
    layers = len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})
    for i in range(layers):
        p = f"{prefix}{i}."
        x = x + _attention(_ln(x, sd, p + "ln_1"), sd, p + "attn.", heads, causal)
        h = _ln(x, sd, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h) if act == "quick_gelu" else F.gelu(h)
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return x


def effective_table(sd, keep=LONGCLIP_KEEP):
    """Long-CLIP's `positional_embedding * mask1 + positional_embedding_res * mask2`."""
    pe = sd["positional_embedding"]
    if "positional_embedding_res" not in sd:
        return pe
    mask1 = torch.zeros(pe.shape[0], 1)
    mask1[:keep] = 1
    return pe * mask1 + sd["positional_embedding_res"] * (1 - mask1)


def text_hidden(sd, ids, heads, act="quick_gelu", keep=LONGCLIP_KEEP):
    """`encode_text_full`: ln_final outputs Tensor[N, L, W] for ids padded to the full context."""
    x = sd["token_embedding.weight"][ids] + effective_table(sd, keep)[: ids.shape[1]]
    return _ln(_blocks(x, sd, "transformer.resblocks.", heads, True, act), sd, "ln_final")


def encode_text(sd, ids, heads, act="quick_gelu", keep=LONGCLIP_KEEP):
    """Projected, unnormalized text features Tensor[N, D] (EOT pooling by argmax)."""
    x = text_hidden(sd, ids, heads, act, keep)
    return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ sd["text_projection"]


def encode_image(sd, pixels, heads, act="quick_gelu"):
    """Projected, unnormalized image features Tensor[N, D]."""
    w = sd["visual.conv1.weight"]
    x = F.conv2d(pixels, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = _blocks(_ln(x, sd, "visual.ln_pre"), sd, "visual.transformer.resblocks.", heads, False, act)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def random_openai_state_dict(
    *, text_width=128, text_layers=2, vision_width=128, vision_layers=2, patch=8, grid=4, embed_dim=64,
    vocab_size=1002, context=77, long_clip=False, seed=0,
) -> dict[str, torch.Tensor]:
    """A random state dict in OpenAI CLIP's key layout (Long-CLIP's when `long_clip`: 248 rows, two tables)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    sd = {}

    def tower(prefix, width, layers):
        for i in range(layers):
            p = f"{prefix}{i}."
            for ln in ("ln_1", "ln_2"):
                sd[p + ln + ".weight"], sd[p + ln + ".bias"] = rnd(width, mean=1.0), rnd(width)
            sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"] = rnd(3 * width, width, std=0.1), rnd(3 * width)
            sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"] = rnd(width, width, std=0.1), rnd(width)
            sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = rnd(4 * width, width, std=0.1), rnd(4 * width)
            sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = rnd(width, 4 * width, std=0.05), rnd(width)

    sd["visual.conv1.weight"] = rnd(vision_width, 3, patch, patch)
    sd["visual.class_embedding"] = rnd(vision_width, std=0.5)
    sd["visual.positional_embedding"] = rnd(grid * grid + 1, vision_width, std=0.5)
    sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"] = rnd(vision_width, mean=1.0), rnd(vision_width)
    tower("visual.transformer.resblocks.", vision_width, vision_layers)
    sd["visual.ln_post.weight"], sd["visual.ln_post.bias"] = rnd(vision_width, mean=1.0), rnd(vision_width)
    sd["visual.proj"] = rnd(vision_width, embed_dim, std=0.1)
    sd["token_embedding.weight"] = rnd(vocab_size, text_width, std=0.5)
    rows = 4 * context - 60 if long_clip else context
    sd["positional_embedding"] = rnd(rows, text_width, std=0.5)
    if long_clip:
        sd["positional_embedding_res"] = rnd(rows, text_width, std=0.5)
    tower("transformer.resblocks.", text_width, text_layers)
    sd["ln_final.weight"], sd["ln_final.bias"] = rnd(text_width, mean=1.0), rnd(text_width)
    sd["text_projection"] = rnd(text_width, embed_dim, std=0.1)
    sd["logit_scale"] = torch.tensor(math.log(100.0))
    return sd
