"""LLM-embedder conditioning for diffusion: LaVi-Bridge's TextAdapter and the `segments+llm` branch.

LongAlign's released model (LongSD) conditions SD-1.5's cross-attention on `[B, 480, 768]`: the 240 segment-merged
CLIP rows of `segments.encode_segments`, followed by 240 rows of T5-large's per-token states passed through
LaVi-Bridge's `TextAdapter` (upstream `modules/adapters.py`). This module generalizes the second half to any
transformers text model (`encoders.llm_embedder.LLMEmbedder`; the default is the offline MiniLM):

    prompt -> LLM per-token states Tensor[B, N, H] -> TextAdapter -> Tensor[B, N, D]
    conditioning = [segment-merged CLIP rows (240) | adapted LLM rows (N)]    Tensor[B, 240 + N, D]

`encode_long_prompt(pipe, prompt, method="segments+llm", llm=branch)` builds it for prompt and negative prompt
(identical shapes); a branch attached to the pipeline (`attach_llm_branch`, done by `load_llm_conditioning` and
`longsd.load_longsd`) is used when `llm` is not given, so `generate` and the t2i-alignment suite need no extra
argument.

An adapter directory (`save_llm_conditioning`; `vision-long train t2i --conditioning segments+llm` writes
OUT/adapter) holds:

    config.json, diffusion_pytorch_model.safetensors   the TextAdapter in diffusers' ModelMixin layout, with
                                                       LaVi-Bridge's parameter names: LongSD's `s28750_adapter/`
                                                       has the same layout and loads with `load_text_adapter`
    llm.json                                           which LLM feeds it: `LLMBranchConfig`
    lora/                                              the UNet LoRA trained with it (vision_long "unet-lora")
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.modeling_utils import ModelMixin
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vision_long.checkpoints import (
    CheckpointError,
    load_state_dict_checked,
    save_native,
)
from vision_long.encoders.llm_embedder import PAD_MODES, LLMConfig, LLMEmbedder

if TYPE_CHECKING:
    from vision_long.diffusion.preference import UNetLoRA

ADAPTER_CONFIG = "config.json"
ADAPTER_WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' name; LongSD's adapter ships it
ADAPTER_WEIGHTS_BIN = "diffusion_pytorch_model.bin"  # older diffusers saves; read with weights_only=True
BRANCH_CONFIG = "llm.json"
LORA_DIR = "lora"
FEEDFORWARD_MULT = 4  # LaVi-Bridge TextAdapter: FeedForward(mult=4)
ADAPTER_DROPOUT = 0.1  # LaVi-Bridge TextAdapter: FeedForward(dropout=0.1)
PIPELINE_ATTRIBUTE = "llm_branch"  # where `attach_llm_branch` keeps the branch on a diffusers pipeline


class TextAdapter(ModelMixin, ConfigMixin):
    """LaVi-Bridge's text adapter: LayerNorm(in) -> GEGLU feed-forward (in -> int) -> LayerNorm(int) -> GEGLU
    feed-forward (int -> out). Each feed-forward is Linear(d, 2 * mult * d) split into value and GELU gate, dropout,
    Linear(mult * d, d_out) (diffusers' `FeedForward`, whose parameter names are LaVi-Bridge's: `ff1.net.0.proj`,
    `ff1.net.2`, `ff2.*`, `norm1`, `norm2`). LongSD: `TextAdapter(1024, 896, 768)`.
    """

    @register_to_config
    def __init__(self, in_dim: int, int_dim: int, out_dim: int, mult: int = FEEDFORWARD_MULT,
                 dropout: float = ADAPTER_DROPOUT):
        super().__init__()
        self.ff1 = FeedForward(in_dim, int_dim, mult=mult, dropout=dropout, activation_fn="geglu")
        self.ff2 = FeedForward(int_dim, out_dim, mult=mult, dropout=dropout, activation_fn="geglu")
        self.norm1 = nn.LayerNorm(in_dim)
        self.norm2 = nn.LayerNorm(int_dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Per-token LLM states Tensor[B, N, in_dim] -> cross-attention rows Tensor[B, N, out_dim]."""
        return self.ff2(self.norm2(self.ff1(self.norm1(states))))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_text_adapter(directory: str | Path) -> TextAdapter:
    """The TextAdapter saved in `directory` (ours, LongSD's `s28750_adapter/` or LaVi-Bridge's `t5_unet/adapter`),
    in fp32, eval mode. Weights from `diffusion_pytorch_model.safetensors`, else `.bin` read with
    `weights_only=True`. CheckpointError names the missing file, config field, or mismatched keys and shapes."""
    directory = Path(directory)
    config_file = directory / ADAPTER_CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{directory}: not a text adapter directory (no {ADAPTER_CONFIG})")
    config = _read_json(config_file)
    dims = {k: config.get(k) for k in ("in_dim", "int_dim", "out_dim")}
    if not all(isinstance(v, int) and v > 0 for v in dims.values()):
        raise CheckpointError(f"{config_file}: a TextAdapter config needs positive integers in_dim, int_dim, out_dim; "
                              f"got {dims}")
    adapter = TextAdapter(**dims, mult=config.get("mult", FEEDFORWARD_MULT),
                          dropout=config.get("dropout", ADAPTER_DROPOUT))
    source = next((f for f in (directory / ADAPTER_WEIGHTS, directory / ADAPTER_WEIGHTS_BIN) if f.is_file()), None)
    if source is None:
        raise CheckpointError(f"{directory}: no adapter weights ({ADAPTER_WEIGHTS} or {ADAPTER_WEIGHTS_BIN})")
    try:
        if source.name == ADAPTER_WEIGHTS:
            state = load_file(str(source))
        else:
            state = torch.load(source, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{source}: unreadable adapter weights ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors")
    load_state_dict_checked(adapter, {k: v.float() for k, v in state.items()}, source=str(source))
    return adapter.eval()


@dataclass
class LLMBranchConfig:
    """Which text model feeds the adapter and how its rows are laid out.

    llm: the text model (`LLMConfig`: "minilm", a local transformers directory, ...).
    tokens: rows of the branch's conditioning (LongSD: 240).
    pad_mode: "zeros" (real tokens read with an attention mask, zero rows after them) or "unmasked" (LongAlign's
        T5: the text padded to `tokens` and read without mask); see `LLMEmbedder.token_states`.
    """

    llm: LLMConfig = field(default_factory=LLMConfig)
    tokens: int = 240
    pad_mode: str = "zeros"

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"the LLM branch needs at least one row, got tokens={self.tokens}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad_mode {self.pad_mode!r}; expected one of {', '.join(PAD_MODES)}")

    def to_dict(self) -> dict:
        return {"llm": self.llm.to_dict(), "tokens": self.tokens, "pad_mode": self.pad_mode}

    @classmethod
    def from_dict(cls, data: dict) -> LLMBranchConfig:
        return cls(llm=LLMConfig(**data["llm"]), tokens=data["tokens"], pad_mode=data["pad_mode"])


class LLMBranch:
    """The LLM half of the `segments+llm` conditioning: texts -> Tensor[B, tokens, out_dim].

    The LLM is frozen and runs without gradients; the adapter runs in the caller's grad mode (training it goes
    through the same call as generation). `lora` is the UNet LoRA trained with the adapter, when it is attached
    to a pipeline's UNet (None for LongSD, whose LoRAs are merged).
    """

    def __init__(self, embedder: LLMEmbedder, adapter: TextAdapter, config: LLMBranchConfig,
                 lora: UNetLoRA | None = None):
        if embedder.dim != adapter.config.in_dim:
            raise CheckpointError(f"the adapter reads {adapter.config.in_dim}-wide LLM states but the LLM "
                                  f"({config.llm.name}) gives {embedder.dim}")
        self.embedder, self.adapter, self.config, self.lora = embedder, adapter, config, lora

    @property
    def width(self) -> int:
        """Width of the rows the branch gives (the UNet's cross-attention width)."""
        return self.adapter.config.out_dim

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LLMBranch:
        """Move the adapter to `device` / `dtype` and the LLM to `device` (it keeps its own dtype)."""
        self.adapter.to(device)
        if dtype is not None and dtype != self.adapter.dtype:  # diffusers warns on every dtype cast
            self.adapter.to(dtype=dtype)
        self.embedder.to(device)
        return self

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """B texts -> Tensor[B, tokens, out_dim] on the adapter's device and dtype.

        The adapter works row by row, so each distinct text is read once (a batch's empty negative prompts are
        one text) and, in pad mode "zeros", only a text's real rows go through it: its fill rows all equal the
        adapter's output for a zero row, computed once. Equal to `adapter(token_states(texts))`, at a fraction
        of the cost when prompts are shorter than `tokens`.
        """
        position = {text: i for i, text in enumerate(dict.fromkeys(texts))}
        unique, tokens = list(position), self.config.tokens
        index = torch.tensor([position[t] for t in texts], device=self.adapter.device)
        cast = {"device": self.adapter.device, "dtype": self.adapter.dtype}
        if self.config.pad_mode != "zeros":
            return self.adapter(self.embedder.token_states(unique, tokens, self.config.pad_mode).to(**cast))[index]
        rows = self.embedder.token_rows(unique, tokens)
        adapted = self.adapter(torch.cat([*rows, rows[0].new_zeros(1, self.embedder.dim)]).to(**cast)[None])[0]
        fill = adapted[-1:]
        parts = adapted[:-1].split([len(r) for r in rows])
        return torch.stack([torch.cat([p, fill.expand(tokens - len(p), -1)]) for p in parts])[index]


def attach_llm_branch(pipe, branch: LLMBranch) -> None:
    """Make `branch` the pipeline's LLM branch: `encode_long_prompt(pipe, ..., method="segments+llm")` uses it."""
    setattr(pipe, PIPELINE_ATTRIBUTE, branch)


def pipeline_llm_branch(pipe) -> LLMBranch | None:
    """The branch attached to `pipe` by `attach_llm_branch`, or None."""
    return getattr(pipe, PIPELINE_ATTRIBUTE, None)


@contextmanager
def branch_lora_enabled(pipe, enabled: bool) -> Iterator[None]:
    """Within the block, the UNet LoRA of the pipeline's LLM branch is on (`enabled`) or off; a pipeline without
    such a LoRA is left as it is. Lets one pipeline run `segments` on its base UNet and `segments+llm` on the
    UNet trained with the adapter."""
    branch = pipeline_llm_branch(pipe)
    if enabled or branch is None or branch.lora is None:
        yield
        return
    pipe.unet.disable_adapters()
    try:
        yield
    finally:
        pipe.unet.enable_adapters()


def save_llm_conditioning(adapter: TextAdapter, config: LLMBranchConfig, lora: UNetLoRA, directory: str | Path) -> Path:
    """Write an adapter directory: the adapter (diffusers layout, safetensors), llm.json and lora/ (native)."""
    directory = Path(directory)
    adapter.save_pretrained(str(directory), safe_serialization=True)
    (directory / BRANCH_CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_native(lora, directory / LORA_DIR)
    return directory


def load_llm_conditioning(pipe, directory: str | Path, device: torch.device | str | None = None) -> LLMBranch:
    """Load an adapter directory onto `pipe` (an SD-1.x pipeline): its LLM (named in llm.json) and adapter
    become the pipeline's LLM branch, and its UNet LoRA is added to `pipe.unet` (so every method then runs on
    the adapted UNet, except in `branch_lora_enabled(pipe, False)` blocks). The adapter takes the UNet's dtype;
    everything goes to `device` (default: the pipeline's). Returns the branch."""
    from vision_long.diffusion.preference import load_lora

    directory = Path(directory)
    branch_file = directory / BRANCH_CONFIG
    if not branch_file.is_file():
        raise CheckpointError(f"{directory}: not an LLM adapter directory (no {BRANCH_CONFIG}; LongSD's release "
                              "loads with --longsd)")
    try:
        config = LLMBranchConfig.from_dict(_read_json(branch_file))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{branch_file}: malformed LLM branch config ({e})") from None
    adapter = load_text_adapter(directory)
    width = pipe.unet.config.cross_attention_dim
    if adapter.config.out_dim != width:
        raise CheckpointError(f"{directory}: the adapter gives {adapter.config.out_dim}-wide rows but the UNet's "
                              f"cross-attention expects {width}")
    if not (directory / LORA_DIR).is_dir():
        raise CheckpointError(f"{directory}: no {LORA_DIR}/ (the UNet LoRA trained with the adapter)")
    branch = LLMBranch(LLMEmbedder(config.llm), adapter.requires_grad_(False), config)
    branch.lora = load_lora(pipe, directory / LORA_DIR)
    branch.to(device or pipe._execution_device, pipe.unet.dtype)
    attach_llm_branch(pipe, branch)
    return branch
