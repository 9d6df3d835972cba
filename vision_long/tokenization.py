"""The CLIP byte-pair-encoding tokenizer at any context length, built offline.

The BPE merges ship inside the open_clip wheel (`open_clip/bpe_simple_vocab_16e6.txt.gz`, identical to
OpenAI CLIP's and Long-CLIP's file), so the real tokenizer works with no network. Text is cleaned the way
OpenAI CLIP does it (ftfy, HTML unescape, whitespace collapse, lower case) by open_clip's `SimpleTokenizer`;
this module adds what long-text models need on top: any context length, an explicit truncation policy,
true lengths for length-bucketed batching, reduced vocabularies for tiny models, and export to a
transformers `CLIPTokenizer` directory.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer, default_bpe

CLIP_NUM_MERGES = 48894  # merges used by OpenAI CLIP: lines 1 .. 49152-256-2 of the BPE file
BYTE_TOKENS = 512  # 256 byte symbols, plus the same 256 with the end-of-word marker "</w>"
CLIP_CONTEXT = 77  # OpenAI CLIP's text context
LONGCLIP_CONTEXT = 248  # Long-CLIP: 4 * 77 - 3 * 20


@dataclass(frozen=True)
class TokenizerConfig:
    """How to rebuild a tokenizer: the first `num_merges` CLIP merges and a default context length.

    `num_merges=None` means the full CLIP vocabulary (49,408 ids). A smaller number gives a reduced
    vocabulary of `512 + num_merges + 2` ids whose BPE behaviour (word ends, punctuation, lower-casing)
    is the real one, which keeps tiny models' embedding tables small.
    """

    context_length: int = 77
    num_merges: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerConfig":
        return cls(**d)


@dataclass
class TokenizedBatch:
    """Token ids of a batch of texts, right-padded with 0, and each text's true length (SOT..EOT)."""

    ids: torch.Tensor  # LongTensor[N, L]
    lengths: torch.Tensor  # LongTensor[N]
    truncated: list[bool]


def _bpe_file(num_merges: int | None) -> str:
    """Path of a BPE merges file with the first `num_merges` CLIP merges (the full file when None)."""
    if num_merges is None or num_merges == CLIP_NUM_MERGES:
        return default_bpe()
    if not 0 <= num_merges <= CLIP_NUM_MERGES:
        raise ValueError(f"num_merges must be in [0, {CLIP_NUM_MERGES}], got {num_merges}")
    cache = Path(os.environ.get("VISION_LONG_CACHE", Path.home() / ".cache" / "vision_long")) / "bpe"
    path = cache / f"bpe_clip_first_{num_merges}_merges.txt.gz"
    if not path.exists():
        lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
        # `SimpleTokenizer` reads lines[1 : 1 + CLIP_NUM_MERGES]; a file without a trailing newline and
        # only N merge lines therefore yields exactly N merges.
        text = "\n".join(lines[: 1 + num_merges])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.write(text)
        tmp.replace(path)
    return str(path)


class CLIPTokenizer:
    """OpenAI CLIP BPE at any context length with Long-CLIP's truncation semantics.

    Each text becomes `[SOT] + bpe(text) + [EOT]`, right-padded with 0. With `truncate=False` a text that
    does not fit raises `ValueError`; with `truncate=True` it keeps the first `context_length` ids and
    overwrites the last one with EOT (what Long-CLIP's `tokenize(..., truncate=True)` does).
    """

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        if self.config.context_length < 2:
            raise ValueError(f"context_length must be at least 2 (SOT and EOT), got {self.config.context_length}")
        self._bpe = SimpleTokenizer(bpe_path=_bpe_file(self.config.num_merges), context_length=None)
        self.sot_token_id: int = self._bpe.sot_token_id
        self.eot_token_id: int = self._bpe.eot_token_id
        self.vocab_size: int = self._bpe.vocab_size

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def with_context_length(self, context_length: int) -> "CLIPTokenizer":
        """The same vocabulary at another context length (e.g. 77 -> 248 after stretching)."""
        return CLIPTokenizer(TokenizerConfig(context_length, self.config.num_merges))

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without SOT/EOT and without any length limit."""
        if not isinstance(text, str):
            raise TypeError(f"expected a str, got {type(text).__name__}")
        return self._bpe.encode(text)

    def count_tokens(self, text: str) -> int:
        """Number of ids `text` takes including SOT and EOT."""
        return len(self.encode(text)) + 2

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of `ids`, with SOT, EOT and padding removed."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        special = {self.sot_token_id, self.eot_token_id, 0}
        return self._bpe.decode([i for i in ids if i not in special]).strip()

    def tokenize_to_lists(
        self, texts: str | list[str], context_length: int | None = None, truncate: bool = False
    ) -> tuple[list[list[int]], list[bool]]:
        """Unpadded id lists `[SOT, ..., EOT]` (each at most `context_length` long) and truncation flags."""
        if isinstance(texts, str):
            texts = [texts]
        limit = context_length or self.context_length
        out, cut = [], []
        for i, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            too_long = len(ids) > limit
            if too_long:
                if not truncate:
                    preview = text if len(text) <= 60 else text[:57] + "..."
                    raise ValueError(
                        f"text {i} ({preview!r}) is {len(ids)} tokens long (with start/end tokens) but the "
                        f"context length is {limit}; pass truncate=True to cut it to {limit} tokens"
                    )
                ids = ids[:limit]
                ids[-1] = self.eot_token_id
            out.append(ids)
            cut.append(too_long)
        return out, cut

    def __call__(
        self, texts: str | list[str], context_length: int | None = None, truncate: bool = False, pad: str = "max"
    ) -> TokenizedBatch:
        """Tokenize `texts` into a padded batch.

        pad: "max" pads every row to `context_length` (what upstream Long-CLIP does); "longest" pads only to
        the longest text in the batch (enough for causal encoders, which ignore what follows EOT).
        """
        if pad not in ("max", "longest"):
            raise ValueError(f"pad must be 'max' or 'longest', got {pad!r}")
        lists, cut = self.tokenize_to_lists(texts, context_length, truncate)
        limit = context_length or self.context_length
        width = limit if pad == "max" else max((len(x) for x in lists), default=0)
        return TokenizedBatch(ids=pad_id_lists(lists, width), lengths=torch.tensor([len(x) for x in lists]), truncated=cut)

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Token string -> id, with transformers' names for the special tokens."""
        vocab = dict(self._bpe.encoder)
        vocab.pop("<start_of_text>")
        vocab.pop("<end_of_text>")
        vocab["<|startoftext|>"] = self.sot_token_id
        vocab["<|endoftext|>"] = self.eot_token_id
        return vocab

    def save_hf(self, out_dir: str | Path, pad_token: str = "<|endoftext|>") -> None:
        """Write a transformers `CLIPTokenizer` directory (vocab.json, merges.txt, tokenizer_config.json).

        `pad_token="<|endoftext|>"` is the SD-1.x convention; pass "!" for SD-2-style id-0 padding.
        """
        from transformers import CLIPTokenizer as HFCLIPTokenizer

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        merges = [" ".join(m) for m, _ in sorted(self._bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
        (out_dir / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))
        (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        hf = HFCLIPTokenizer.from_pretrained(str(out_dir), model_max_length=self.context_length, pad_token=pad_token)
        hf.save_pretrained(str(out_dir))


def pad_id_lists(lists: list[list[int]], width: int, pad_id: int = 0) -> torch.Tensor:
    """Stack id lists into a LongTensor[N, width], right-padded with `pad_id`."""
    out = torch.full((len(lists), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(lists):
        out[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return out
