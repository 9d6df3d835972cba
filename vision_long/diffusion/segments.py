"""LongAlign's segment-level text encoding: split a long prompt into sentences, encode each, merge the states.

LongAlign (Liu et al., "Improving Long-Text Alignment for Text-to-Image Diffusion Models", ICLR 2025) feeds an
SD-1.5 UNet `[B, 240, W]` conditioning built like this (upstream `tools.caption2embed`):

1. split each prompt into sentences (`split_segments`);
2. run all segments of the batch through the CLIP text encoder in one call, each within 77 positions, no attention
   mask (`encode_segment_hidden_states`, the one seam where another encoder can be plugged in);
3. per prompt keep every segment's start token and content tokens, drop its end and pad tokens, concatenate, and
   truncate or fill to 240 rows with `pad*`, the mean hidden state over positions 17..76 of `encode("")`
   (`pad_embedding`, `merge_segments`).

Differences from upstream, on purpose: the default splitter (`mode="fixed"`) repairs upstream's regex quirks (see
`split_segments`; `mode="upstream"` reproduces them); end/pad rows are dropped by position (each segment's true
length) rather than by id, which is identical for SD-1.x tokenizers (pad == eos) and does not delete literal "!"
tokens with tokenizers that pad with "!" (SDXL's second tokenizer); `pad*` is cached per encoder, device, dtype,
layer and weights version instead of once per process.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vision_long.encoders.clip_text import CLIPTextTower
from vision_long.encoders.hf_format import text_tower_from_hf

SEGMENT_CONTEXT = 77  # CLIP: each segment is encoded on its own within 77 positions
SEGMENT_TOKENS = SEGMENT_CONTEXT - 2  # content tokens that fit beside the start and end tokens
MERGED_TOKENS = 240  # LongAlign `token_length`: rows of the merged conditioning
PAD_STAR_POSITIONS = slice(17, 77)  # LongAlign: pad* averages encode("")'s hidden states at positions 17..76
SPLIT_MODES = ("fixed", "upstream")

# LongAlign's regex as shipped: an alternation of the literals `"!`, `.`, `?`, `;"` (the quotes sit inside it).
_UPSTREAM_PATTERN = re.compile(r'"!|\.|\?|;"')
# A sentence end: a run of terminators, optional closing quotes/brackets, then whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?;]+[\"'\u201d\u2019)\]]*(?=\s|$)")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "approx", "fig", "figs", "mt", "no", "nos", "inc",
     "ltd", "co", "cf", "ca"}
)
_DOTTED_ABBREVIATION = re.compile(r"^(?:[a-z]\.)+[a-z]$")  # e.g, i.e, u.s (the final dot is the match itself)


@dataclass(frozen=True)
class SegmentOptions:
    """How `encode_segments` splits and merges.

    split_mode: "fixed" (default) or "upstream" (LongAlign's splitter, quirks included).
    max_tokens: rows of the merged conditioning (LongAlign: 240).
    first_start_only: keep only the first segment's start token (upstream keeps one per segment).
    packed: run the segments as one packed stream of real tokens (`kernels.varlen_attention`) instead of a
        batch padded to the longest segment; the results are equal, the packed path skips the padding.
    """

    split_mode: str = "fixed"
    max_tokens: int = MERGED_TOKENS
    first_start_only: bool = False
    packed: bool = True


def _has_word(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _is_abbreviation(text: str, end: re.Match) -> bool:
    """Whether the single '.' matched at `end` closes an abbreviation or an initial rather than a sentence."""
    if end.group() != ".":
        return False
    before = text[: end.start()]
    if not before or before[-1].isspace():
        return False
    word = before.split()[-1].lstrip("\"'([\u201c\u2018")
    return (
        word.lower() in _ABBREVIATIONS
        or bool(_DOTTED_ABBREVIATION.match(word.lower()))
        or (len(word) == 1 and word.isupper())
    )


def _cut_word(word: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Cut one over-long word into consecutive character runs of at most `max_tokens` tokens each."""
    pieces = []
    while word:
        lo, hi = 1, len(word)  # the longest prefix that fits, by bisection (BPE counts grow with the prefix)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if count_tokens(word[:mid]) <= max_tokens else (lo, mid - 1)
        pieces.append(word[:lo])
        word = word[lo:]
    return pieces


def _fit(segment: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Split `segment` at word boundaries into pieces of at most `max_tokens` tokens (a word's tokens never
    depend on its neighbours in CLIP's BPE, so a piece's count is the sum of its words')."""
    if count_tokens(segment) <= max_tokens:
        return [segment]
    pieces: list[str] = []
    words: list[str] = []
    used = 0
    for word in segment.split():
        n = count_tokens(word)
        if words and used + n > max_tokens:
            pieces.append(" ".join(words))
            words, used = [], 0
        if n > max_tokens:
            pieces.extend(_cut_word(word, count_tokens, max_tokens))
            continue
        words.append(word)
        used += n
    if words:
        pieces.append(" ".join(words))
    return pieces


def split_segments(
    text: str,
    mode: str = "fixed",
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int = SEGMENT_TOKENS,
) -> list[str]:
    """Split a prompt into the sentences that are encoded one by one.

    mode="upstream" reproduces LongAlign exactly: split on "." and "?" only ("!" and ";" only next to a double
    quote), append "." to every non-empty piece, keep leading spaces, and return `[text]` when nothing is left;
    so "A cat. A dog. " gives ['A cat.', ' A dog.', ' .'] and "3.14" is split. Long pieces are left as they are
    (the encoder truncates them at 77 tokens, as upstream does).

    mode="fixed" (default) splits after ".", "!", "?" or ";" (runs such as "?!" or "..." and closing quotes stay
    attached) only where whitespace or the end of the text follows, so decimals ("3.14") are kept, and not after
    common abbreviations ("Dr.", "e.g.", "etc.") or initials ("J."). Pieces are stripped; pieces without a letter or
    digit are dropped (so "" and "?!" give []). A piece longer than `max_tokens` content tokens, as counted by
    `count_tokens` (default: the CLIP BPE), is split at word boundaries, so no text is silently truncated.
    """
    if mode == "upstream":
        pieces = [piece + "." for piece in _UPSTREAM_PATTERN.split(text) if piece]
        return pieces or [text]
    if mode != "fixed":
        raise ValueError(f"unknown split mode {mode!r}; expected one of {', '.join(SPLIT_MODES)}")
    count_tokens = count_tokens or _clip_token_count
    pieces, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        if not _is_abbreviation(text, end):
            pieces.append(text[start : end.end()])
            start = end.end()
    pieces.append(text[start:])
    return [p for piece in pieces if _has_word(piece) for p in _fit(piece.strip(), count_tokens, max_tokens)]


@functools.lru_cache(maxsize=1)
def _clip_tokenizer():
    from vision_long.tokenization import CLIPTokenizer

    return CLIPTokenizer()


def _clip_token_count(text: str) -> int:
    """Content tokens of `text` under the full CLIP BPE (start and end tokens not counted)."""
    return len(_clip_tokenizer().encode(text))


def token_counter(tokenizer) -> Callable[[str], int]:
    """`text -> content tokens` (no start/end tokens) under a transformers tokenizer."""
    return lambda text: len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)


# --- encoding -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HiddenLayer:
    """Which per-token states condition the UNet: `hidden_states[index]`, then the final layer norm or not.

    SD-1.x uses the last layer after the final norm (`HiddenLayer()`); `clip_skip=k` selects `-(k + 1)`, still
    normed. SDXL uses the penultimate layer without the final norm (`HiddenLayer(-2, False)`).
    """

    index: int = -1
    final_norm: bool = True


@dataclass
class SegmentStates:
    """What the text encoder returns for S segments."""

    hidden: torch.Tensor  # Tensor[S, L, W], L <= 77 (padded to the longest segment)
    lengths: torch.Tensor  # LongTensor[S]: ids per segment, start and end tokens included
    pooled: torch.Tensor  # Tensor[S, P]: projected end-token embedding (`text_embeds`) or `pooler_output`


def text_transformer(text_encoder):
    """The module holding `embeddings` and `final_layer_norm` (transformers 4 nests it in `text_model`)."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    return getattr(inner, "text_model", inner)


def text_encoder_states(
    text_encoder, ids: torch.Tensor, layer: HiddenLayer = HiddenLayer(), position_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a transformers CLIP text encoder without attention mask (as SD does).

    ids: LongTensor[N, L] -> (hidden Tensor[N, L, W] chosen by `layer`, pooled Tensor[N, P]).
    """
    device = next(text_encoder.parameters()).device
    ids = ids.to(device)
    if position_ids is not None:
        position_ids = position_ids.to(device)
    wants_all = layer != HiddenLayer()
    out = text_encoder(ids, position_ids=position_ids, output_hidden_states=wants_all)
    if wants_all:
        hidden = out.hidden_states[layer.index]
        if layer.final_norm:
            hidden = text_transformer(text_encoder).final_layer_norm(hidden)
    else:
        hidden = out.last_hidden_state
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled if pooled is not None else out.pooler_output


def encode_segment_hidden_states(
    text_encoder, tokenizer, segments: list[str], layer: HiddenLayer = HiddenLayer()
) -> SegmentStates:
    """Encode S segments in one batched call, each truncated to 77 ids, padded to the longest, no mask.

    Because CLIP's text attention is causal, padding to the longest segment rather than to 77 leaves every
    start/content row unchanged. This is the seam for a packed-attention encoder: anything returning the same
    `SegmentStates` can replace it.
    """
    batch = tokenizer(
        segments, padding="longest", max_length=SEGMENT_CONTEXT, truncation=True, return_tensors="pt", verbose=False
    )
    hidden, pooled = text_encoder_states(text_encoder, batch.input_ids, layer)
    return SegmentStates(hidden=hidden, lengths=batch.attention_mask.sum(-1).cpu(), pooled=pooled)


_TOWER_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, tuple] = weakref.WeakKeyDictionary()


def packed_text_tower(text_encoder) -> CLIPTextTower:
    """The encoder's weights as a packed-capable `CLIPTextTower`, cached per encoder, device, dtype and weights version."""
    param = next(text_encoder.parameters())
    key = (param.device, param.dtype, sum(p._version for p in text_encoder.parameters()))
    cached = _TOWER_CACHE.get(text_encoder)
    if cached is None or cached[0] != key:
        cached = (key, text_tower_from_hf(text_encoder))
        _TOWER_CACHE[text_encoder] = cached
    return cached[1]


def encode_segment_hidden_states_packed(
    text_encoder, tokenizer, segments: list[str], layer: HiddenLayer = HiddenLayer()
) -> SegmentStates:
    """`encode_segment_hidden_states` computed on real tokens only: the segments run as one packed stream.

    Same result (rows past each segment's length are zeros instead of padding states, and merging never
    reads them). The tower holds a copy of the weights, so no gradient reaches `text_encoder`: `encode_segments`
    uses the padded path when the encoder is being trained.
    """
    ids = tokenizer(segments, max_length=SEGMENT_CONTEXT, truncation=True, verbose=False).input_ids
    hidden, pooled = packed_text_tower(text_encoder).packed_states(ids, layer.index, layer.final_norm)
    return SegmentStates(
        hidden=torch.nn.utils.rnn.pad_sequence(hidden, batch_first=True),
        lengths=torch.tensor([len(x) for x in ids]),
        pooled=pooled,
    )


_PAD_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def pad_embedding(text_encoder, tokenizer, layer: HiddenLayer = HiddenLayer()) -> torch.Tensor:
    """LongAlign's `pad*`: the mean of `encode("")` padded to 77 over positions 17..76. Returns Tensor[W].

    Cached per encoder object, device, dtype, layer, pad id and weights version (in-place weight updates,
    e.g. `load_state_dict`, invalidate it), never once per process.
    """
    param = next(text_encoder.parameters())
    version = sum(p._version for p in text_encoder.parameters())
    key = (param.device, param.dtype, layer, tokenizer.pad_token_id, version)
    cache = _PAD_CACHE.setdefault(text_encoder, {})
    if key not in cache:
        cache.clear()
        ids = tokenizer(
            [""], padding="max_length", max_length=SEGMENT_CONTEXT, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            hidden, _ = text_encoder_states(text_encoder, ids, layer)
        cache[key] = hidden[0, PAD_STAR_POSITIONS].mean(0)
    return cache[key]


def merged_length(segment_lengths: list[int], first_start_only: bool = False) -> int:
    """Rows a prompt's segments contribute before truncation: each keeps its start and content tokens."""
    kept = sum(n - 1 for n in segment_lengths)
    return kept - (len(segment_lengths) - 1 if first_start_only else 0)


def merge_segments(
    states: SegmentStates,
    counts: list[int],
    pad: torch.Tensor,
    max_tokens: int = MERGED_TOKENS,
    first_start_only: bool = False,
) -> torch.Tensor:
    """Merge per-segment states into one conditioning per prompt: Tensor[B, max_tokens, W].

    counts: segments per prompt (B entries, summing to S; prompt i owns the next `counts[i]` rows of `states`).
    pad: Tensor[W], the fill row (`pad_embedding`). Each segment keeps rows `[0, length - 1)` (its start token
    and content; the end token and padding are dropped), or `[1, length - 1)` after the first segment when
    `first_start_only`. The concatenation is cut to `max_tokens` rows or filled with `pad`.
    """
    if sum(counts) != states.hidden.shape[0] or min(counts, default=1) < 1:
        raise ValueError(f"counts {counts} do not partition {states.hidden.shape[0]} segments")
    lengths = states.lengths.tolist()
    merged, row = [], 0
    for n in counts:
        parts = [
            states.hidden[j, (1 if first_start_only and j > row else 0) : lengths[j] - 1] for j in range(row, row + n)
        ]
        rows = torch.cat(parts)[:max_tokens]
        fill = pad.to(rows.dtype).expand(max_tokens - rows.shape[0], -1)
        merged.append(torch.cat([rows, fill]))
        row += n
    return torch.stack(merged)


def encode_segments(
    text_encoder, tokenizer, texts: list[str], layer: HiddenLayer = HiddenLayer(), options: SegmentOptions = SegmentOptions()
) -> tuple[torch.Tensor, torch.Tensor]:
    """LongAlign's encoding of B texts: (embeds Tensor[B, max_tokens, W], pooled Tensor[B, P]).

    All segments of all texts go through the encoder in one call. A text with no words (the empty negative
    prompt) is the single segment "" (`[<sot>, pad* x 239]`, like upstream's unconditional embedding). `pooled` is
    the mean of each text's per-segment pooled embeddings (only SDXL uses it).
    """
    count = token_counter(tokenizer)
    per_text = [split_segments(t, options.split_mode, count) or [""] for t in texts]
    training_encoder = torch.is_grad_enabled() and any(p.requires_grad for p in text_encoder.parameters())
    packed = options.packed and not training_encoder
    encode = encode_segment_hidden_states_packed if packed else encode_segment_hidden_states
    states = encode(text_encoder, tokenizer, [s for segs in per_text for s in segs], layer)
    pad = pad_embedding(text_encoder, tokenizer, layer)
    counts = [len(segs) for segs in per_text]
    embeds = merge_segments(states, counts, pad, options.max_tokens, options.first_start_only)
    pooled = torch.stack([chunk.mean(0) for chunk in states.pooled.split(counts)])
    return embeds, pooled
