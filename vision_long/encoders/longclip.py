"""Long-CLIP: OpenAI-CLIP architecture with knowledge-preserved stretching of the text positions.

Reference: Zhang et al., "Long-CLIP: Unlocking the Long-Text Capability of CLIP" (ECCV 2024), and the
upstream code digest in the project's reference notes (section 1). The model keeps two text position
tables like upstream: `positional_embedding` (the frozen, stretched table) supplies rows `[0, keep)` and
`positional_embedding_res` (trainable) supplies rows `[keep, context)`. With `keep_positions=None` the
model is a plain CLIP with one table, which is what a 77-token checkpoint loads as before stretching.

This module holds the math only; files and foreign formats live in `loading.py` and `hf_format.py`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from open_clip.transform import image_transform
from open_clip.transformer import LayerNorm, VisionTransformer
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from vision_long.encoders.batching import encode_image_batches, ids_to_lists, length_sorted_batches
from vision_long.encoders.clip_text import KEEP_POSITIONS, CLIPTextTower, TextConfig
from vision_long.encoders.text_transformer import ACTIVATIONS
from vision_long.tokenization import LONGCLIP_CONTEXT, CLIPTokenizer, TokenizerConfig
STRETCH_RATIO = 4  # Long-CLIP: the remaining rows are interpolated 4x (77 -> 4*77 - 3*20 = 248)
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial temperature


def stretch_positions(pe: torch.Tensor, keep: int = KEEP_POSITIONS, ratio: int = STRETCH_RATIO) -> torch.Tensor:
    """Knowledge-preserved stretching of a position table, exactly as Long-CLIP's `load_from_clip`.

    pe: Tensor[L, W] -> Tensor[ratio * L - (ratio - 1) * keep, W] (77 -> 248 with the defaults).
    Rows `[0, keep)` are copied. Output row `p >= keep` is the linear interpolation of `pe` at source
    position `s = keep + (p - keep) / ratio`; the last `ratio - 1` rows (s > L - 1) extrapolate linearly
    with the slope of the last two input rows, as upstream does. Computed in float64 and cast back
    (upstream stretches in fp16 on GPU, which differs by about 2e-5 per entry).
    """
    if pe.dim() != 2:
        raise ValueError(f"expected a position table Tensor[L, W], got shape {tuple(pe.shape)}")
    length = pe.shape[0]
    if not 0 <= keep <= length - 2:
        raise ValueError(f"keep must be in [0, {length - 2}] for a {length}-row table, got {keep}")
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    new_length = ratio * length - (ratio - 1) * keep
    src = pe.detach().to(torch.float64)
    p = torch.arange(keep, new_length, dtype=torch.float64, device=pe.device)
    s = keep + (p - keep) / ratio
    lo = s.floor().long().clamp(max=length - 2)
    frac = (s - lo).unsqueeze(1)
    stretched = (1 - frac) * src[lo] + frac * src[lo + 1]
    return torch.cat([src[:keep], stretched]).to(pe.dtype)


def interpolate_positions(pe: torch.Tensor, length: int = LONGCLIP_CONTEXT) -> torch.Tensor:
    """Naive stretching, the Long-CLIP paper's ablation: Tensor[L, W] -> Tensor[length, W] by linear
    interpolation of every row (align_corners=True), so no position keeps its trained embedding."""
    if pe.dim() != 2:
        raise ValueError(f"expected a position table Tensor[L, W], got shape {tuple(pe.shape)}")
    stretched = F.interpolate(pe.detach().T[None].double(), size=length, mode="linear", align_corners=True)
    return stretched[0].T.to(pe.dtype)


@dataclass
class VisionConfig:
    """ViT image tower hyper-parameters (OpenAI layout, built with open_clip's `VisionTransformer`)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    act: str = "quick_gelu"


@dataclass
class CLIPConfig:
    """A whole CLIP / Long-CLIP model. `num_merges` selects a reduced BPE vocabulary (None: full CLIP)."""

    embed_dim: int = 512
    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    num_merges: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        return cls(
            embed_dim=d["embed_dim"],
            text=TextConfig(**d["text"]),
            vision=VisionConfig(**d["vision"]),
            num_merges=d.get("num_merges"),
        )


class LongCLIP(CLIPTextTower):
    """CLIP with Long-CLIP's two text position tables; satisfies the `Encoder` protocol.

    The text tower (`CLIPTextTower`) holds the differentiable text math (`text_hidden_states`,
    `encode_text_tokens`, packed variants); this class adds the ViT image tower (open_clip's
    `VisionTransformer`), the temperature, the tokenizer and the user-facing, no-grad `encode_text`
    (length-sorted and packed, never padded to the context) and `encode_image`.
    """

    family = "longclip"
    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__(config.text, config.embed_dim)
        self.config = config
        vc = config.vision
        self.tokenizer = CLIPTokenizer(TokenizerConfig(config.text.context_length, config.num_merges))
        if self.tokenizer.vocab_size != config.text.vocab_size:
            raise ValueError(
                f"text vocab_size {config.text.vocab_size} does not match the tokenizer's "
                f"{self.tokenizer.vocab_size} (num_merges={config.num_merges})"
            )
        self.visual = VisionTransformer(
            image_size=vc.image_size,
            patch_size=vc.patch_size,
            width=vc.width,
            layers=vc.layers,
            heads=vc.heads,
            mlp_ratio=vc.mlp_ratio,
            output_dim=config.embed_dim,
            act_layer=ACTIVATIONS[vc.act],
            norm_layer=LayerNorm,
        )
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.preprocess = image_transform(vc.image_size, is_train=False)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image features (not normalized): Tensor[N, 3, H, W] -> Tensor[N, D]."""
        return self.visual(pixels)

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized image and text features and the logit scale exp(s), as contrastive training uses them."""
        image = F.normalize(self.encode_pixels(pixels), dim=-1)
        text = F.normalize(self.encode_text_tokens(ids), dim=-1)
        return image, text, self.logit_scale.exp()

    # --- user-facing encoding (the Encoder protocol) -------------------------------------------------
    @torch.inference_mode()
    def encode_text(
        self,
        texts: str | list[str] | torch.Tensor,
        normalize: bool = True,
        batch_size: int = 64,
        truncate: bool = False,
        progress: bool = False,
        packed: bool = True,
    ) -> torch.Tensor:
        """Embed texts (or token ids LongTensor[N, L]) into Tensor[N, D] on the model's device.

        Texts are sorted by token length and batched; each batch runs packed (a stream of real tokens,
        attention within each text through `kernels.varlen_attention`) or, with `packed=False`, padded to its
        own longest text. Either way no text is padded to the context, and results equal the padded-to-context
        forward. Texts longer than the context raise `ValueError` unless `truncate=True` (then cut, EOT last).
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, torch.Tensor):
            self._check_ids(texts)
            lists = ids_to_lists(texts)
        else:
            lists, _ = self.tokenizer.tokenize_to_lists(list(texts), self.context_length, truncate)
        out = torch.empty(len(lists), self.embed_dim, device=self.device, dtype=self.dtype)
        batches = length_sorted_batches([len(x) for x in lists], batch_size)
        for rows in tqdm(batches, desc="encode text", unit="batch", disable=not progress):
            out[torch.as_tensor(rows, device=self.device)] = self.encode_id_lists([lists[i] for i in rows], packed)
        return F.normalize(out, dim=-1) if normalize else out

    @torch.inference_mode()
    def encode_image(
        self,
        images: list[Image.Image] | torch.Tensor,
        normalize: bool = True,
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed PIL images (preprocessed here) or an already preprocessed Tensor[N, 3, H, W] into Tensor[N, D]."""
        out = encode_image_batches(images, self.encode_pixels, self.preprocess, self.image_size, self.device,
                                   self.dtype, batch_size, progress).reshape(len(images), self.embed_dim)
        return F.normalize(out, dim=-1) if normalize else out

    # --- conversions -------------------------------------------------------------------------------
    def stretched(self, keep: int = KEEP_POSITIONS, ratio: int = STRETCH_RATIO, method: str = "kps") -> "LongCLIP":
        """A Long-CLIP initialised from this plain CLIP by knowledge-preserved stretching (`load_from_clip`).

        Both tables start as the stretched table; `positional_embedding` is frozen and supplies rows
        `[0, keep)`, `positional_embedding_res` is trainable and supplies the rest. `method="interpolate"` is
        the paper's naive ablation: every row interpolated to the same length, none kept (keep = 0).
        """
        if self.positional_embedding_res is not None:
            raise ValueError("this model is already stretched (it has two position tables)")
        if method == "kps":
            table = stretch_positions(self.positional_embedding, keep, ratio)
        elif method == "interpolate":
            length, keep = ratio * self.context_length - (ratio - 1) * keep, 0
            table = interpolate_positions(self.positional_embedding, length)
        else:
            raise ValueError(f"unknown stretching method {method!r}; expected 'kps' or 'interpolate'")
        text = replace(self.config.text, context_length=table.shape[0], keep_positions=keep)
        model = LongCLIP(replace(self.config, text=text)).to(self.device, self.dtype)
        state = {k: v for k, v in self.state_dict().items() if k != "positional_embedding"}
        state["positional_embedding"] = table
        state["positional_embedding_res"] = table.clone()
        model.load_state_dict(state)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
