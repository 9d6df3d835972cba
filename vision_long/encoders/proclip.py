"""ProCLIP: a frozen LLM text embedder, an adapter into CLIP's space, and a CLIP image tower.

Reference: Hu et al., "ProCLIP" (arXiv 2510.18795) and LLM2CLIP (arXiv 2411.04997); digest in the project's
reference notes, section 2. Text: LLM -> mean pooling -> `TextAdapter` (input L2-normalized, pre-LN residual
MLP blocks, LayerNorm, Linear to the joint dimension). ProCLIP uses 1 block of expansion 8, LLM2CLIP 4 blocks
of expansion 2. The LLM is frozen and not part of the checkpoint (it loads from its own source), so a
ProCLIP checkpoint holds the adapter, the image tower and the temperature only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from open_clip.transform import image_transform
from open_clip.transformer import LayerNorm, VisionTransformer
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from vision_long.encoders.batching import encode_image_batches
from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder
from vision_long.encoders.longclip import LOGIT_SCALE_INIT, VisionConfig
from vision_long.encoders.text_transformer import ACTIVATIONS

ADAPTER_VARIANTS = {"proclip": (1, 8), "llm2clip": (4, 2)}  # variant -> (residual blocks, MLP expansion)


@dataclass
class AdapterConfig:
    """The text adapter: `variant` picks (blocks, expansion) unless both are given."""

    variant: str = "proclip"
    blocks: int | None = None
    expansion: int | None = None

    def resolved(self) -> tuple[int, int]:
        if self.variant not in ADAPTER_VARIANTS:
            raise ValueError(f"unknown adapter variant {self.variant!r}; expected one of {sorted(ADAPTER_VARIANTS)}")
        blocks, expansion = ADAPTER_VARIANTS[self.variant]
        return self.blocks or blocks, self.expansion or expansion


class ResidualMLP(nn.Module):
    """x + Linear(GELU(Linear(LayerNorm(x)))), the pre-LN block of LLM2CLIP's `TextProj`."""

    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * expansion)
        self.fc2 = nn.Linear(dim * expansion, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class TextAdapter(nn.Module):
    """LLM sentence embedding Tensor[N, H] -> joint-space text feature Tensor[N, D] (not normalized)."""

    def __init__(self, in_dim: int, out_dim: int, blocks: int, expansion: int):
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualMLP(in_dim, expansion) for _ in range(blocks)])
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, llm_embedding: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(self.blocks(F.normalize(llm_embedding, dim=-1))))


@dataclass
class ProCLIPConfig:
    """A whole ProCLIP model: LLM (by reference), adapter, image tower, joint dimension."""

    embed_dim: int = 512
    llm_dim: int = 384
    llm: LLMConfig = field(default_factory=LLMConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ProCLIPConfig:
        return cls(
            embed_dim=d["embed_dim"],
            llm_dim=d["llm_dim"],
            llm=LLMConfig(**d["llm"]),
            adapter=AdapterConfig(**d["adapter"]),
            vision=VisionConfig(**d["vision"]),
        )


class ProCLIPEncoder(nn.Module):
    """ProCLIP as an `Encoder`: texts up to the LLM's context (or any length with `llm.chunk_long`), images.

    `llm` is built from `config.llm` unless an `LLMEmbedder` is passed (tests and training share one).
    """

    family = "proclip"
    config_class = ProCLIPConfig

    def __init__(self, config: ProCLIPConfig, llm: LLMEmbedder | None = None):
        super().__init__()
        self.config = config
        self.llm = llm or LLMEmbedder(config.llm)
        if self.llm.dim != config.llm_dim:
            raise ValueError(f"the LLM {config.llm.name!r} embeds to {self.llm.dim} dims, config says {config.llm_dim}")
        self.tokenizer = self.llm.tokenizer
        blocks, expansion = config.adapter.resolved()
        self.adapter = TextAdapter(config.llm_dim, config.embed_dim, blocks, expansion)
        vc = config.vision
        self.visual = VisionTransformer(
            image_size=vc.image_size, patch_size=vc.patch_size, width=vc.width, layers=vc.layers, heads=vc.heads,
            mlp_ratio=vc.mlp_ratio, output_dim=config.embed_dim, act_layer=ACTIVATIONS[vc.act], norm_layer=LayerNorm,
        )
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.preprocess = image_transform(vc.image_size, is_train=False)

    def _apply(self, fn, recurse: bool = True):
        """Move the (unregistered) LLM along with the module, so `.to(device)` moves the whole model."""
        self.llm.model._apply(fn, recurse)
        return super()._apply(fn, recurse)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    @property
    def context_length(self) -> int:
        return self.tokenizer.context_length

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image features (not normalized): Tensor[N, 3, H, W] -> Tensor[N, D]."""
        return self.visual(pixels)

    def encode_llm_embeddings(self, llm_embedding: torch.Tensor) -> torch.Tensor:
        """Text features (not normalized) from LLM sentence embeddings: Tensor[N, H] -> Tensor[N, D]."""
        return self.adapter(llm_embedding.to(self.device, self.dtype))

    @torch.inference_mode()
    def encode_text(
        self,
        texts: str | list[str] | torch.Tensor,
        normalize: bool = True,
        batch_size: int = 32,
        truncate: bool = False,
        progress: bool = False,
    ) -> torch.Tensor:
        """Texts (or ids LongTensor[N, L] padded with the tokenizer's pad id) -> Tensor[N, D].

        Texts longer than `context_length` raise `ValueError` unless `truncate=True`; with `llm.chunk_long`
        the context is `llm.max_tokens` and texts longer than the LLM's positions are averaged over windows.
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, torch.Tensor):
            pad = self.tokenizer.pad_token_id
            lists = [[i for i in row.tolist() if i != pad] for row in texts]
        else:
            lists = None
        out = []
        rows = range(0, len(texts), batch_size * 8)
        for start in tqdm(rows, desc="encode text", unit="batch", disable=not progress):
            if lists is None:
                emb = self.llm.embed(list(texts[start : start + batch_size * 8]), batch_size, truncate)
            else:
                emb = self.llm.embed_id_lists(lists[start : start + batch_size * 8], batch_size)
            out.append(self.encode_llm_embeddings(emb))
        feats = torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device, dtype=self.dtype)
        return F.normalize(feats, dim=-1) if normalize else feats

    @torch.inference_mode()
    def encode_image(
        self,
        images: list[Image.Image] | torch.Tensor,
        normalize: bool = True,
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed PIL images (preprocessed here) or an already preprocessed Tensor[N, 3, H, W] into Tensor[N, D]."""
        feats = encode_image_batches(images, self.encode_pixels, self.preprocess, self.image_size, self.device,
                                     self.dtype, batch_size, progress).reshape(len(images), self.embed_dim)
        return F.normalize(feats, dim=-1) if normalize else feats

    def num_parameters(self) -> int:
        """Trainable-side parameters (adapter, image tower, temperature); the LLM is not counted."""
        return sum(p.numel() for p in self.parameters())
