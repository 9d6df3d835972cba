"""The CLIP text tower (OpenAI layout) with Long-CLIP's optional second position table.

`CLIPTextTower` is the text half of `LongCLIP` and, on its own, a text encoder for diffusion pipelines (built
from a transformers `CLIPTextModel` in `hf_format.text_tower_from_hf`). Parameter names are OpenAI CLIP's, so
checkpoints load without renaming. Every forward accepts any length up to the context: causal attention makes
each position independent of what follows, so results equal the padded-to-context forward; the packed methods
run a stream of real tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.transformer import LayerNorm
from torch import nn

from vision_long.encoders.text_transformer import PackedTokens, TextTransformer
from vision_long.kernels.packing import cu_seqlens_from_lengths, position_ids
from vision_long.tokenization import LONGCLIP_CONTEXT, pad_id_lists

KEEP_POSITIONS = 20  # Long-CLIP: rows 0..19 of the 77-row table are kept verbatim


@dataclass
class TextConfig:
    """Text tower hyper-parameters (OpenAI layout)."""

    vocab_size: int = 49408
    context_length: int = LONGCLIP_CONTEXT
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    act: str = "quick_gelu"
    keep_positions: int | None = KEEP_POSITIONS  # None: one position table (a plain CLIP)


class CLIPTextTower(nn.Module):
    """Token embedding, position table(s), causal transformer, final LayerNorm and (optional) projection.

    With `keep_positions` set there are two tables like upstream Long-CLIP: `positional_embedding` (frozen)
    supplies rows `[0, keep)`, `positional_embedding_res` (trainable) the rest.
    """

    def __init__(self, text: TextConfig, embed_dim: int | None):
        super().__init__()
        if text.keep_positions is not None and not 0 <= text.keep_positions <= text.context_length:
            raise ValueError(f"keep_positions must be in [0, {text.context_length}], got {text.keep_positions}")
        self.text_config = text
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        if text.keep_positions is None:
            self.positional_embedding_res = None
        else:
            self.positional_embedding_res = nn.Parameter(torch.empty(text.context_length, text.width))
            self.positional_embedding.requires_grad_(False)  # Long-CLIP trains only the residual table
        self.transformer = TextTransformer(text.width, text.layers, text.heads, text.mlp_ratio, text.act)
        self.ln_final = LayerNorm(text.width)
        self.text_projection = nn.Parameter(torch.empty(text.width, embed_dim)) if embed_dim else None
        self._init_text_parameters()

    @property
    def context_length(self) -> int:
        return self.text_config.context_length

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def _init_text_parameters(self) -> None:
        """CLIP's initialisation of the text tower (the vision tower initialises itself)."""
        width = self.text_config.width
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if self.positional_embedding_res is not None:
            self.positional_embedding_res.data.copy_(self.positional_embedding.data)
        if self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=width**-0.5)

    def effective_positional_embedding(self) -> torch.Tensor:
        """The position table the text tower actually uses: Tensor[context_length, W].

        `cat(positional_embedding[:keep], positional_embedding_res[keep:])` (upstream's mask1/mask2).
        """
        if self.positional_embedding_res is None:
            return self.positional_embedding
        keep = self.text_config.keep_positions
        return torch.cat([self.positional_embedding[:keep], self.positional_embedding_res[keep:]])

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"token ids must be an integer Tensor[N, L], got {ids.dtype} {tuple(ids.shape)}")
        if ids.shape[1] > self.context_length:
            raise ValueError(f"token ids are {ids.shape[1]} long but the context length is {self.context_length}")

    def text_hidden_states(self, ids: torch.Tensor, stop_at_layer: int | None = None) -> torch.Tensor:
        """Per-token hidden states after `ln_final`: LongTensor[N, L] -> Tensor[N, L, W].

        Any L <= context_length: causal attention makes each position independent of what follows, so the
        result equals the first L rows of the padded-to-context forward. `stop_at_layer=-1` gives the
        penultimate layer's output without the final LayerNorm (what SDXL conditions on).
        """
        self._check_ids(ids)
        x = self.token_embedding(ids) + self.effective_positional_embedding()[: ids.shape[1]]
        x = self.transformer(x, stop_at_layer=stop_at_layer)
        return x if stop_at_layer is not None else self.ln_final(x)

    def encode_text_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Projected text features (not normalized): LongTensor[N, L] -> Tensor[N, D].

        Pooled at the EOT token, found as `ids.argmax(-1)` like upstream (EOT has the largest id).
        """
        hidden = self.text_hidden_states(ids)
        pooled = hidden[torch.arange(ids.shape[0], device=ids.device), ids.argmax(-1)]
        return pooled @ self.text_projection

    def encode_packed_tokens(self, ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        """Projected text features from a packed stream: LongTensor[T] (+ cu_seqlens IntTensor[N+1]) -> Tensor[N, D].

        Each sequence is `[SOT, ..., EOT]` with no padding; only real tokens are computed.
        """
        positions = position_ids(cu_seqlens)
        x = self.token_embedding(ids) + self.effective_positional_embedding()[positions]
        x = self.transformer(x, packed=PackedTokens(cu_seqlens, max_seqlen))
        eot = cu_seqlens[1:].long() - 1
        return self.ln_final(x[eot]) @ self.text_projection

    def packed_states(
        self, seqs: list[list[int]], hidden_layer: int = -1, final_norm: bool = True
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states and pooled features of unpadded `[SOT, ..., EOT]` id lists, computed packed.

        hidden_layer indexes the states like transformers' `hidden_states` (0 = embeddings, -1 = after the
        last block, -2 = the penultimate, SDXL's choice); `final_norm` applies `ln_final` to them.
        Returns one Tensor[L_i, W] per list, equal to the rows of the padded forward, and the pooled
        Tensor[S, D] (`ln_final` of the last block at EOT, projected when the tower has a projection: what
        transformers calls `text_embeds`, or `pooler_output` without a projection).
        """
        blocks = self.transformer.resblocks
        keep_after = len(blocks) + 1 + hidden_layer if hidden_layer < 0 else hidden_layer
        if not 0 <= keep_after <= len(blocks):
            raise ValueError(f"hidden_layer {hidden_layer} is out of range for {len(blocks)} blocks")
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long, device=self.device)
        cu_seqlens = cu_seqlens_from_lengths(lengths).to(self.device)
        packed = PackedTokens(cu_seqlens, int(lengths.max()))
        x = self.token_embedding(ids) + self.effective_positional_embedding()[position_ids(cu_seqlens)]
        chosen = x
        for i, block in enumerate(blocks, 1):
            x = block(x, packed)
            if i == keep_after:
                chosen = x
        pooled = self.ln_final(x[cu_seqlens[1:].long() - 1])
        if self.text_projection is not None:
            pooled = pooled @ self.text_projection
        chosen = self.ln_final(chosen) if final_norm else chosen
        return list(chosen.split(lengths.tolist())), pooled

    def encode_id_lists(self, seqs: list[list[int]], packed: bool = True) -> torch.Tensor:
        """Projected text features (not normalized, differentiable) of unpadded `[SOT, ..., EOT]` id lists.

        packed=True runs one stream of real tokens; packed=False pads to the longest list. -> Tensor[N, D]
        """
        if not packed:
            return self.encode_text_tokens(pad_id_lists(seqs, max(len(s) for s in seqs)).to(self.device))
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long, device=self.device)
        return self.encode_packed_tokens(ids, cu_seqlens_from_lengths(lengths).to(self.device), int(lengths.max()))

