"""`load_encoder(spec)`: every checkpoint format users already have, converted at the edge.

Specs:
  "default", "default-77"          the embedded ShapeScenes models shipped in `vision_long/assets/`
  "default-proclip"                 the embedded ShapeScenes ProCLIP (its MiniLM comes from its own package)
  "proclip:<dir>"                   a vision_long ProCLIP directory (adapter + image tower; the LLM by name)
  "<dir>"                           a vision_long directory (config.json + model.safetensors)
  "longclip:<file.pt>"             a released Long-CLIP checkpoint (OpenAI keys + positional_embedding_res)
  "openai:<file.pt>"               an OpenAI CLIP checkpoint (state dict, or the released TorchScript archive)
  "open_clip:<arch>@<weights>"     an open_clip architecture name and its weights file
  "hf:<dir>"                        a transformers `CLIPModel` directory
77-token sources are stretched to 248 positions on load (Long-CLIP's knowledge-preserved stretching);
pass `stretch=False` for the plain 77-context model. Sources with another context length load as they are.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch

from vision_long.checkpoints import CheckpointError, is_native_dir, load_native, load_state_dict_checked
from vision_long.encoders.base import Encoder
from vision_long.encoders.longclip import CLIPConfig, LongCLIP, TextConfig, VisionConfig
from vision_long.tokenization import BYTE_TOKENS, CLIP_CONTEXT, CLIP_NUM_MERGES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED = {"default": "longclip-shapescenes", "default-77": "clip77-shapescenes", "default-proclip": "proclip-shapescenes"}
SPEC_HELP = (
    "expected 'default', 'default-77', 'default-proclip', a vision_long directory, 'proclip:<dir>', "
    "'longclip:<file.pt>', 'openai:<file.pt>', "
    "'open_clip:<arch>@<weights file>' or 'hf:<transformers CLIPModel dir>'"
)
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def load_encoder(
    spec: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None, stretch: bool = True
) -> Encoder:
    """Load an encoder from `spec` (see the module docstring) onto `device` in `dtype`, in eval mode."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string; {SPEC_HELP}")
    family, _, source = spec.partition(":")
    if spec in EMBEDDED:
        model = _load_embedded(spec)
    elif family == "longclip" and source:
        model = _longclip_from_openai_state_dict(read_state_dict(source), source, two_tables=True)
    elif family == "proclip" and source:
        model = _load_proclip(source)
    elif family == "openai" and source:
        model = _maybe_stretch(_longclip_from_openai_state_dict(read_state_dict(source), source), stretch)
    elif family == "open_clip" and source:
        model = _maybe_stretch(_load_open_clip(source), stretch)
    elif family == "hf" and source:
        model = _maybe_stretch(_load_hf(source), stretch)
    elif Path(spec).is_dir() and is_native_dir(spec):
        model = load_native(spec)
    elif Path(spec).exists():
        raise CheckpointError(f"{spec}: not a vision_long checkpoint directory; {SPEC_HELP}")
    else:
        raise ValueError(f"cannot load {spec!r}: no such file or directory, and not a known spec; {SPEC_HELP}")
    return model.to(device=device, dtype=dtype).eval()


def _maybe_stretch(model: LongCLIP, stretch: bool) -> LongCLIP:
    """Stretch a plain 77-token CLIP to 248 positions; leave already-long models (e.g. our HF export) alone."""
    plain_clip = model.positional_embedding_res is None and model.context_length == CLIP_CONTEXT
    return model.stretched() if stretch and plain_clip else model


def _load_embedded(name: str) -> LongCLIP:
    path = ASSETS / EMBEDDED[name]
    if not is_native_dir(path):
        raise CheckpointError(
            f"the embedded model {name!r} is not installed in this build ({path} is missing); "
            "load a checkpoint of your own, e.g. 'longclip:longclip-L.pt'"
        )
    return load_native(path, dtype=torch.float32)  # shipped in fp16 to stay small; computed in fp32


def _load_proclip(source: str) -> Encoder:
    if not is_native_dir(source):
        raise CheckpointError(f"{source}: not a vision_long ProCLIP directory (config.json + model.safetensors)")
    model = load_native(source)
    if model.family != "proclip":
        raise CheckpointError(f"{source}: holds a {model.family!r} model, not a ProCLIP one")
    return model


def read_state_dict(file: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pt`/`.pth`/`.bin` (loaded with `weights_only=True`) or `.safetensors` file.

    A TorchScript archive (how OpenAI released CLIP) is read with `torch.jit.load`, which deserialises
    TorchScript, not arbitrary pickled Python. `{"state_dict": ...}` wrappers and DDP `module.` prefixes
    are removed.
    """
    path = Path(file)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None
    elif _is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit is deprecated, but it is how OpenAI's files are stored
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for corrupt / unsafe pickles
            raise CheckpointError(f"{path}: not a loadable weights-only torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _OPENAI_EXTRA_KEYS}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _count_layers(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


def _num_merges_for_vocab(vocab_size: int, source: str) -> int | None:
    if vocab_size == BYTE_TOKENS + CLIP_NUM_MERGES + 2:
        return None
    if not BYTE_TOKENS + 2 <= vocab_size < BYTE_TOKENS + CLIP_NUM_MERGES + 2:
        raise CheckpointError(f"{source}: vocabulary of {vocab_size} ids does not fit the CLIP BPE")
    return vocab_size - BYTE_TOKENS - 2  # a reduced CLIP vocabulary: the first N merges


def config_from_openai_state_dict(sd: dict[str, torch.Tensor], source: str, two_tables: bool = False) -> CLIPConfig:
    """Infer the architecture from tensor shapes, as OpenAI's `build_model` does (heads = width // 64)."""
    required = ["visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight",
                "positional_embedding", "ln_final.weight", "text_projection", "transformer.resblocks.0.mlp.c_fc.weight",
                "visual.transformer.resblocks.0.mlp.c_fc.weight"]
    if two_tables:
        required.append("positional_embedding_res")
    if "visual.layer1.0.conv1.weight" in sd:
        raise CheckpointError(f"{source}: ResNet image towers are not supported; use a ViT CLIP")
    missing = [k for k in required if k not in sd]
    if missing:
        raise CheckpointError(f"{source}: not an OpenAI-layout CLIP state dict (missing {missing})")
    width_v, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    width_t = sd["ln_final.weight"].shape[0]
    for name, width in (("text", width_t), ("vision", width_v)):
        if width % 64:
            raise CheckpointError(f"{source}: {name} width {width} is not a multiple of 64 (OpenAI heads = width // 64)")
    vocab_size, context = sd["token_embedding.weight"].shape[0], sd["positional_embedding"].shape[0]
    return CLIPConfig(
        embed_dim=sd["text_projection"].shape[1],
        text=TextConfig(
            vocab_size=vocab_size,
            context_length=context,
            width=width_t,
            layers=_count_layers(sd, "transformer.resblocks."),
            heads=width_t // 64,
            mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width_t,
            keep_positions=20 if two_tables else None,
        ),
        vision=VisionConfig(
            image_size=patch * grid,
            patch_size=patch,
            width=width_v,
            layers=_count_layers(sd, "visual.transformer.resblocks."),
            heads=width_v // 64,
            mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width_v,
        ),
        num_merges=_num_merges_for_vocab(vocab_size, source),
    )


def _longclip_from_openai_state_dict(sd: dict[str, torch.Tensor], source: str, two_tables: bool = False) -> LongCLIP:
    config = config_from_openai_state_dict(sd, source, two_tables)
    model = LongCLIP(config)
    load_state_dict_checked(model, {k: v.float() for k, v in sd.items()}, source)
    return model


def _load_open_clip(source: str) -> LongCLIP:
    """`open_clip:<arch>@<weights>`: build the open_clip model, check it is a standard CLIP, take its weights."""
    import open_clip
    from open_clip.transformer import QuickGELU, VisionTransformer

    arch, sep, weights = source.partition("@")
    if not sep or not arch or not weights:
        raise ValueError(f"open_clip spec must be 'open_clip:<arch>@<weights file>', got 'open_clip:{source}'")
    if not Path(weights).is_file():
        raise CheckpointError(f"{weights}: no such checkpoint file")
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    try:
        oc = open_clip.create_model(arch, pretrained=weights, weights_only=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: does not fit open_clip {arch} ({str(e).splitlines()[0]})") from None
    visual = getattr(oc, "visual", None)
    standard = (
        isinstance(oc, open_clip.model.CLIP)
        and isinstance(visual, VisionTransformer)
        and visual.attn_pool is None
        and visual.pool_type == "tok"
        and getattr(oc, "text_pool_type", "argmax") == "argmax"
        and oc.attn_mask is not None
        and getattr(oc, "logit_bias", None) is None
        and isinstance(oc.text_projection, torch.nn.Parameter)
    )
    if not standard:
        raise CheckpointError(f"open_clip {arch}: only standard OpenAI-layout ViT CLIP models are supported")

    def act(block) -> str:
        return "quick_gelu" if isinstance(block.mlp.gelu, QuickGELU) else "gelu"

    t0, v0 = oc.transformer.resblocks[0], visual.transformer.resblocks[0]
    config = CLIPConfig(
        embed_dim=oc.text_projection.shape[1],
        text=TextConfig(
            vocab_size=oc.vocab_size,
            context_length=oc.context_length,
            width=oc.transformer.width,
            layers=oc.transformer.layers,
            heads=t0.attn.num_heads,
            mlp_ratio=t0.mlp.c_fc.out_features / oc.transformer.width,
            act=act(t0),
            keep_positions=None,
        ),
        vision=VisionConfig(
            image_size=visual.image_size[0],
            patch_size=visual.patch_size[0],
            width=visual.transformer.width,
            layers=visual.transformer.layers,
            heads=v0.attn.num_heads,
            mlp_ratio=v0.mlp.c_fc.out_features / visual.transformer.width,
            act=act(v0),
        ),
        num_merges=_num_merges_for_vocab(oc.vocab_size, f"open_clip:{source}"),
    )
    model = LongCLIP(config)
    load_state_dict_checked(model, oc.state_dict(), f"open_clip:{source}")
    return model


def _load_hf(source: str) -> LongCLIP:
    """`hf:<dir>` (or a hub id for users with a network): a transformers `CLIPModel`, renamed to OpenAI keys."""
    from transformers import CLIPModel

    from vision_long.encoders.hf_format import config_from_hf, hf_to_openai_state_dict

    path = Path(source)
    if path.exists() and not (path / "config.json").is_file():
        raise CheckpointError(f"{source}: not a transformers model directory (no config.json)")
    try:
        hf = CLIPModel.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot load a transformers CLIPModel ({str(e).splitlines()[0]})") from None
    try:
        config = config_from_hf(hf.config, _num_merges_for_vocab(hf.config.text_config.vocab_size, source))
        sd = hf_to_openai_state_dict(hf.state_dict())
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from None
    model = LongCLIP(config)
    load_state_dict_checked(model, sd, source)
    return model
