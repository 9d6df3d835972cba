"""transformers `CLIPModel` layout <-> OpenAI layout, and export of Long-CLIP to transformers / diffusers.

The export writes one position table, the *effective* one (`cat(pe[:keep], pe_res[keep:])`), with
`max_position_embeddings = context_length`. Community conversions that copy only `positional_embedding`
export the untrained stretched table for rows >= 20 (reference notes 1.9); this one does not.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vision_long.encoders.clip_text import CLIPTextTower, TextConfig
from vision_long.encoders.longclip import CLIPConfig, LongCLIP, VisionConfig

# Per-layer renames inside one transformer block: HF name -> OpenAI name (q/k/v are handled apart).
_BLOCK_RENAMES = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
# Whole-model renames: HF name -> OpenAI name.
_RENAMES = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
_TOWERS = {"text_model.encoder.layers": "transformer.resblocks", "vision_model.encoder.layers": "visual.transformer.resblocks"}
_LAYER = re.compile(r"^(text_model\.encoder\.layers|vision_model\.encoder\.layers)\.(\d+)\.(.+)\.(weight|bias)$")


def hf_to_openai_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers `CLIPModel` state dict to OpenAI CLIP keys (q, k, v fused into in_proj)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key in _RENAMES:
            out[_RENAMES[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T.contiguous()
        elif m := _LAYER.match(key):
            tower, layer, name, kind = m.groups()
            prefix = f"{_TOWERS[tower]}.{layer}"
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((prefix, kind), {})[name[10]] = value
            elif name in _BLOCK_RENAMES:
                out[f"{prefix}.{_BLOCK_RENAMES[name]}.{kind}"] = value
            else:
                raise KeyError(f"unexpected transformers CLIP key {key!r}")
        elif key.endswith("position_ids"):
            continue  # a buffer in older transformers versions
        else:
            raise KeyError(f"unexpected transformers CLIP key {key!r}")
    for (prefix, kind), parts in qkv.items():
        out[f"{prefix}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def openai_to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `hf_to_openai_state_dict` for a single-table model (OpenAI keys -> transformers keys)."""
    inverse = {v: k for k, v in _RENAMES.items()}
    inverse_t = {v: k for k, v in _TRANSPOSED.items()}
    inverse_blocks = {v: k for k, v in _BLOCK_RENAMES.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in inverse:
            out[inverse[key]] = value
        elif key in inverse_t:
            out[inverse_t[key]] = value.T.contiguous()
        else:
            tower = next((t for t, o in _TOWERS.items() if key.startswith(o + ".")), None)
            if tower is None:
                raise KeyError(f"no transformers name for {key!r}")
            layer, rest = key[len(_TOWERS[tower]) + 1 :].split(".", 1)
            name, kind = rest.rsplit(".", 1)
            prefix = f"{tower}.{layer}"
            if name == "attn" and kind in ("in_proj_weight", "in_proj_bias"):
                suffix = kind.removeprefix("in_proj_")
                for part, chunk in zip("qkv", value.chunk(3)):
                    out[f"{prefix}.self_attn.{part}_proj.{suffix}"] = chunk.contiguous()
            elif name in inverse_blocks:
                out[f"{prefix}.{inverse_blocks[name]}.{kind}"] = value
            else:
                raise KeyError(f"no transformers name for {key!r}")
    return out


def _check_hf_tower(name: str, cfg) -> None:
    if cfg.hidden_act not in ("quick_gelu", "gelu"):
        raise ValueError(f"unsupported {name} activation {cfg.hidden_act!r} (expected quick_gelu or gelu)")
    if abs(cfg.layer_norm_eps - 1e-5) > 1e-12:
        raise ValueError(f"unsupported {name} layer_norm_eps {cfg.layer_norm_eps} (CLIP uses 1e-5)")


def _text_config_from_hf(t) -> TextConfig:
    """Our `TextConfig` (one position table) from a transformers `CLIPTextConfig`."""
    _check_hf_tower("text", t)
    return TextConfig(
        vocab_size=t.vocab_size,
        context_length=t.max_position_embeddings,
        width=t.hidden_size,
        layers=t.num_hidden_layers,
        heads=t.num_attention_heads,
        mlp_ratio=t.intermediate_size / t.hidden_size,
        act=t.hidden_act,
        keep_positions=None,
    )


def config_from_hf(hf_config, num_merges: int | None) -> CLIPConfig:
    """Our `CLIPConfig` (one position table) from a transformers `CLIPConfig`."""
    v = hf_config.vision_config
    _check_hf_tower("vision", v)
    return CLIPConfig(
        embed_dim=hf_config.projection_dim,
        text=_text_config_from_hf(hf_config.text_config),
        vision=VisionConfig(
            image_size=v.image_size,
            patch_size=v.patch_size,
            width=v.hidden_size,
            layers=v.num_hidden_layers,
            heads=v.num_attention_heads,
            mlp_ratio=v.intermediate_size / v.hidden_size,
            act=v.hidden_act,
        ),
        num_merges=num_merges,
    )


def text_tower_from_hf(text_model) -> CLIPTextTower:
    """Our packed-capable `CLIPTextTower` holding the weights of a transformers `CLIPTextModel`.

    Works for `CLIPTextModel` (no projection; SD 1.x, SDXL's first encoder) and `CLIPTextModelWithProjection`
    (SDXL's second encoder). Hidden states, `stop_at_layer=-1` (= `hidden_states[-2]`) and projected EOT
    features equal the transformers model's; device and dtype follow it.
    """
    projection = getattr(text_model, "text_projection", None)
    config = _text_config_from_hf(text_model.config)
    tower = CLIPTextTower(config, projection.out_features if projection is not None else None)
    # transformers 5 stores CLIPTextModel's keys without the "text_model." prefix; version 4 had it
    state = {
        k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v
        for k, v in text_model.state_dict().items()
    }
    from vision_long.checkpoints import load_state_dict_checked

    load_state_dict_checked(tower, hf_to_openai_state_dict(state), source=type(text_model).__name__)
    weight = next(text_model.parameters())
    return tower.to(weight.device, weight.dtype).eval()


def hf_config_from(model: LongCLIP):
    """The transformers `CLIPConfig` for `model`, with `max_position_embeddings = context_length`."""
    from transformers import CLIPConfig as HFCLIPConfig

    c, tok = model.config, model.tokenizer
    text = dict(
        vocab_size=c.text.vocab_size,
        hidden_size=c.text.width,
        intermediate_size=int(c.text.width * c.text.mlp_ratio),
        num_hidden_layers=c.text.layers,
        num_attention_heads=c.text.heads,
        max_position_embeddings=c.text.context_length,
        hidden_act=c.text.act,
        projection_dim=c.embed_dim,
        bos_token_id=tok.sot_token_id,
        eos_token_id=tok.eot_token_id,
        pad_token_id=tok.eot_token_id,
    )
    vision = dict(
        hidden_size=c.vision.width,
        intermediate_size=int(c.vision.width * c.vision.mlp_ratio),
        num_hidden_layers=c.vision.layers,
        num_attention_heads=c.vision.heads,
        image_size=c.vision.image_size,
        patch_size=c.vision.patch_size,
        hidden_act=c.vision.act,
        projection_dim=c.embed_dim,
    )
    return HFCLIPConfig(text_config=text, vision_config=vision, projection_dim=c.embed_dim)


def export_hf(model: LongCLIP, out_dir: str | Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write a transformers `CLIPModel` directory (weights, config, tokenizer, image processor).

    The single position table is the effective one, so `CLIPModel.from_pretrained(out_dir)` and
    `CLIPTextModel.from_pretrained(out_dir)` reproduce this model's hidden states and projected embeddings,
    and the directory can serve as a diffusers pipeline's `text_encoder` / `tokenizer`.
    """
    from transformers import CLIPImageProcessor, CLIPModel

    from vision_long.checkpoints import load_state_dict_checked

    out_dir = Path(out_dir)
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items() if k != "positional_embedding_res"}
    sd["positional_embedding"] = model.effective_positional_embedding().detach().float().cpu()
    hf_model = CLIPModel(hf_config_from(model))
    load_state_dict_checked(hf_model, openai_to_hf_state_dict(sd), source="export_hf")
    hf_model.save_pretrained(str(out_dir))
    model.tokenizer.save_hf(out_dir, pad_token=pad_token)
    size = model.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(str(out_dir))
    return out_dir
