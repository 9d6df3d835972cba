"""Prompts longer than 77 tokens for Stable Diffusion 1.x and SDXL pipelines: `encode_long_prompt`.

`encode_long_prompt(pipe, prompt, ...)` returns the keyword arguments for `pipe(**kwargs, ...)`:
`prompt_embeds` and `negative_prompt_embeds` of identical shapes, and for SDXL `pooled_prompt_embeds` /
`negative_pooled_prompt_embeds`. SDXL conditioning is the penultimate hidden states of both text encoders without
the final layer norm, concatenated (768 + 1280 for the real model); pooled comes from the second encoder.

Which method to use:

* `segments` (default; LongAlign): each sentence is encoded on its own and the states are merged into 240 rows.
  Nothing within 240 merged tokens is lost and every sentence sees CLIP's trained 77 positions. It is what
  LongAlign's fine-tuned SD-1.5 expects; on a stock UNet it already reads far past 77 tokens, though sentences are
  encoded without each other's context. SDXL pooled: the mean of the segments' pooled embeddings.
* `longclip`: a Long-CLIP text encoder (248 positions, `vision-long convert ... --to hf`) replaces the pipeline's
  (`longclip_text_encoder=`). One pass with full context over 248 tokens; best when a Long-CLIP checkpoint matching
  the pipeline's text encoder exists (Long-CLIP-L for SD-1.5 and for SDXL's first encoder). On SDXL the second
  encoder (bigG) gets its positions stretched to 248 by knowledge-preserved stretching without fine-tuning, as
  Long-CLIP's own SDXL script does.
* `chunks` (the compel / lpw baseline): the token stream is cut into 75-token chunks, each wrapped in start/end
  tokens and padded to 77, encoded separately and concatenated (`[B, 77k, W]`; the shorter of prompt and negative
  is filled with empty-prompt chunks). Works with any checkpoint, no length limit; chunk boundaries fall mid-sentence.
  SDXL pooled: the first chunk's, as compel does.
* `truncate`: the stock behaviour, cut at 77 tokens; the baseline to compare against.
* `segments+llm` (LongAlign's released LongSD, generalized): the 240 `segments` rows followed by an LLM's
  per-token states passed through a trained text adapter (`conditioning.LLMBranch`, `llm=` or the one attached to
  the pipeline by `conditioning.load_llm_conditioning` / `longsd.load_longsd`). Needs a UNet trained to read the
  extra rows (the LoRA saved with the adapter); the LLM reads the whole prompt, past what 240 CLIP rows hold.

On SDXL with `force_zeros_for_empty_prompt` (the base model's setting) an empty negative prompt gives zero negative
embeddings, as diffusers does when no negative prompt is passed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from vision_long.diffusion.pipelines import SDXL, load_text_encoder, pipeline_kind
from vision_long.diffusion.segments import (
    SEGMENT_CONTEXT,
    SEGMENT_TOKENS,
    HiddenLayer,
    SegmentOptions,
    encode_segments,
    text_encoder_states,
    text_transformer,
)

LLM_METHOD = "segments+llm"
METHODS = ("segments", "longclip", "chunks", "truncate", LLM_METHOD)


class PromptError(ValueError):
    """A prompt, negative prompt or method that cannot be encoded; the message is one line."""


@dataclass
class _Branch:
    """One text encoder as a method uses it; `length` > the encoder's positions means stretched positions."""

    text_encoder: object
    tokenizer: object
    layer: HiddenLayer
    length: int


def check_prompts(prompt: str | list[str]) -> list[str]:
    """The prompt(s) as a list, or PromptError for no prompt, an empty one, or one without any word."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise PromptError(f"expected a prompt string or a non-empty list of strings, got {prompt!r:.60}")
    for p in prompts:
        if not p.strip():
            raise PromptError("the prompt is empty")
        if not any(c.isalnum() for c in p):
            raise PromptError(f"the prompt {p.strip()!r:.60} has no words, only punctuation")
    return prompts


def _negatives(negative_prompt: str | list[str] | None, count: int) -> list[str]:
    if negative_prompt is None:
        return [""] * count
    if isinstance(negative_prompt, str):
        return [negative_prompt] * count
    negatives = list(negative_prompt)
    if len(negatives) != count or not all(isinstance(n, str) for n in negatives):
        raise PromptError(f"expected one negative prompt or {count} strings, got {len(negatives)} items")
    return negatives


def _layer(kind: str, clip_skip: int | None) -> HiddenLayer:
    """SD-1.x: last layer (or `clip_skip` layers before it) after the final norm; SDXL: penultimate, no norm."""
    skip = clip_skip or 0
    if skip < 0:
        raise PromptError(f"clip_skip must be >= 0, got {clip_skip}")
    return HiddenLayer(-(skip + 2), False) if kind == SDXL else HiddenLayer(-(skip + 1), True)


def _positions(text_encoder) -> int:
    return text_transformer(text_encoder).embeddings.position_embedding.weight.shape[0]


def _branches(pipe, kind: str, method: str, clip_skip: int | None, longclip, longclip_tokenizer) -> list[_Branch]:
    layer = _layer(kind, clip_skip)
    pairs = [(pipe.text_encoder, pipe.tokenizer)] + ([(pipe.text_encoder_2, pipe.tokenizer_2)] if kind == SDXL else [])
    if method != "longclip":
        return [_Branch(te, tok, layer, tok.model_max_length) for te, tok in pairs]
    if longclip is None:
        raise PromptError("method 'longclip' needs longclip_text_encoder= (a Long-CLIP CLIPTextModel or its directory)")
    te, tok = load_text_encoder(longclip, longclip_tokenizer, pipe._execution_device, pipe.unet.dtype)
    length = _positions(te)
    branches = [_Branch(te, tok, layer, length)]
    if kind == SDXL:
        from vision_long.encoders.longclip import LONGCLIP_CONTEXT

        if length != LONGCLIP_CONTEXT or _positions(pipe.text_encoder_2) != SEGMENT_CONTEXT:
            raise PromptError(f"SDXL 'longclip' needs a {LONGCLIP_CONTEXT}-position encoder and a 77-position text_encoder_2")
        branches.append(_Branch(pipe.text_encoder_2, pipe.tokenizer_2, layer, length))
    return branches


@contextmanager
def _stretched(text_encoder, length: int):
    """Temporarily give a 77-position encoder a knowledge-preserved-stretched 248-row position table."""
    embeddings = text_transformer(text_encoder).embeddings
    original = embeddings.position_embedding
    if original.weight.shape[0] >= length:
        yield
        return
    from vision_long.encoders.longclip import stretch_positions

    embeddings.position_embedding = torch.nn.Embedding.from_pretrained(stretch_positions(original.weight), freeze=True)
    try:
        yield
    finally:
        embeddings.position_embedding = original


def _encode_padded(branch: _Branch, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stock encoding: each text cut and padded to `branch.length` ids. -> ([N, length, W], [N, P])."""
    ids = branch.tokenizer(
        texts, padding="max_length", max_length=branch.length, truncation=True, return_tensors="pt", verbose=False
    ).input_ids
    positions = torch.arange(branch.length)[None].expand(len(texts), -1)
    with _stretched(branch.text_encoder, branch.length):
        return text_encoder_states(branch.text_encoder, ids, branch.layer, positions)


def chunk_ids(tokenizer, texts: list[str], chunk_tokens: int = SEGMENT_TOKENS) -> torch.Tensor:
    """compel/lpw chunking: LongTensor[N, k, chunk_tokens + 2], the same k for all texts.

    Each text's tokens are cut into runs of `chunk_tokens`, each run wrapped as `[bos] + run + [eos] + [pad]*`;
    texts with fewer runs get extra empty chunks (`[bos, eos, pad...]`, i.e. encode("")).
    """
    content = tokenizer(texts, add_special_tokens=False, verbose=False).input_ids
    runs = [[ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)] or [[]] for ids in content]
    k = max(len(r) for r in runs)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [
        [[bos, *run, eos] + [pad] * (chunk_tokens - len(run)) for run in text_runs + [[]] * (k - len(text_runs))]
        for text_runs in runs
    ]
    return torch.tensor(rows, dtype=torch.long)


def _encode_chunks(branch: _Branch, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ([N, 77k, W], pooled of each text's first chunk [N, P])."""
    ids = chunk_ids(branch.tokenizer, texts)
    n, k, length = ids.shape
    hidden, pooled = text_encoder_states(branch.text_encoder, ids.reshape(n * k, length), branch.layer)
    return hidden.reshape(n, k * length, hidden.shape[-1]), pooled.reshape(n, k, -1)[:, 0]


def _encode(method: str, branch: _Branch, texts: list[str], options: SegmentOptions):
    if method in ("segments", LLM_METHOD):
        return encode_segments(branch.text_encoder, branch.tokenizer, texts, branch.layer, options)
    if method == "chunks":
        return _encode_chunks(branch, texts)
    return _encode_padded(branch, texts)


def encode_long_prompt(
    pipe,
    prompt: str | list[str],
    negative_prompt: str | list[str] | None = "",
    method: str = "segments",
    num_images_per_prompt: int = 1,
    clip_skip: int | None = None,
    longclip_text_encoder=None,
    longclip_tokenizer=None,
    options: SegmentOptions | None = None,
    llm=None,
    text_grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Encode B prompts (and their negatives) for an SD-1.x or SDXL pipeline, past 77 tokens.

    Returns `prompt_embeds` / `negative_prompt_embeds` Tensor[B * num_images_per_prompt, N, D] (N: 240 for
    segments, 248 for longclip, 77k for chunks, 77 for truncate, 240 + the branch's rows for segments+llm; D: the
    UNet's cross-attention width) and for SDXL `pooled_prompt_embeds` / `negative_pooled_prompt_embeds`
    Tensor[B * num_images_per_prompt, P], on the pipeline's device in the UNet's dtype. `clip_skip` counts layers as
    diffusers does. `longclip_text_encoder`: a Long-CLIP `CLIPTextModel` or its directory (method "longclip" only).
    `options`: splitting and merging for "segments" and "segments+llm". `llm`: the `conditioning.LLMBranch` of
    "segments+llm" (default: the one attached to the pipeline).

    The text encoders run without gradients unless `text_grad` is set (then in the caller's grad mode: a text tower
    tuned with the UNet, `train t2i --text-lr-scale`); the LLM branch's adapter always runs in the caller's grad
    mode, so training either goes through this same function. Raises PromptError (a ValueError) for empty or
    word-less prompts, unknown methods, a missing LLM branch and mismatched encoders.
    """
    if method not in METHODS:
        raise PromptError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if num_images_per_prompt < 1:
        raise PromptError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
    kind = pipeline_kind(pipe)
    prompts = check_prompts(prompt)
    negatives = _negatives(negative_prompt, len(prompts))
    if method == LLM_METHOD:
        from vision_long.diffusion.conditioning import pipeline_llm_branch

        llm = llm or pipeline_llm_branch(pipe)
        if llm is None:
            raise PromptError("method 'segments+llm' needs an LLM adapter: llm=, or a pipeline loaded with "
                              "load_llm_conditioning (--adapter DIR) or load_longsd (--longsd DIR)")
    with torch.set_grad_enabled(torch.is_grad_enabled() and text_grad):
        branches = _branches(pipe, kind, method, clip_skip, longclip_text_encoder, longclip_tokenizer)
        outputs = [_encode(method, b, prompts + negatives, options or SegmentOptions()) for b in branches]
    if len({tuple(h.shape[:2]) for h, _ in outputs}) != 1:
        raise PromptError("the pipeline's two tokenizers disagree on the prompt's length in tokens")
    embeds = torch.cat([h for h, _ in outputs], dim=-1)
    pooled = outputs[-1][1]
    if method == LLM_METHOD:
        if llm.width != embeds.shape[-1]:
            raise PromptError(f"the LLM adapter gives {llm.width}-wide rows but the text encoder "
                              f"{embeds.shape[-1]}-wide ones")
        embeds = torch.cat([embeds, llm(prompts + negatives).to(embeds)], dim=1)
    width = pipe.unet.config.cross_attention_dim
    if embeds.shape[-1] != width:
        raise PromptError(
            f"the text encoder gives {embeds.shape[-1]}-wide states but the UNet's cross-attention expects {width}"
        )
    count = len(prompts)
    if kind == SDXL and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        empty = torch.tensor([not n.strip() for n in negatives], device=embeds.device)
        embeds[count:][empty] = 0
        pooled[count:][empty] = 0

    def out(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(num_images_per_prompt, dim=0).to(device=pipe._execution_device, dtype=pipe.unet.dtype)

    result = {"prompt_embeds": out(embeds[:count]), "negative_prompt_embeds": out(embeds[count:])}
    if kind == SDXL:
        result["pooled_prompt_embeds"] = out(pooled[:count])
        result["negative_pooled_prompt_embeds"] = out(pooled[count:])
    return result
