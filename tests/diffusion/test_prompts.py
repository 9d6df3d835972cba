"""encode_long_prompt on tiny SD-1.5 and SDXL pipelines: every method end to end with a 400-token prompt."""

import math

import numpy as np
import pytest
import torch

from vision_long.diffusion.prompts import (
    METHODS,
    PromptError,
    chunk_ids,
    encode_long_prompt,
)
from vision_long.diffusion.segments import pad_embedding

NEGATIVE = "blurry, low quality, watermark"


def _content_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)


LLM_TOKENS = 16  # rows of the tiny LLM branch of method segments+llm


def _expected_length(method, pipe, prompt):
    chunks = math.ceil(_content_tokens(pipe.tokenizer, prompt) / 75)
    return {"segments": 240, "longclip": 248, "chunks": 77 * chunks, "truncate": 77,
            "segments+llm": 240 + LLM_TOKENS}[method]


def _llm_branch(llm_dir, width):
    """The tiny LLM (32 wide) through a random adapter to the UNet's width."""
    from vision_long.diffusion.conditioning import (
        LLMBranch,
        LLMBranchConfig,
        TextAdapter,
    )
    from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder

    embedder = LLMEmbedder(LLMConfig(name=llm_dir))
    return LLMBranch(embedder, TextAdapter(32, 16, width).eval(), LLMBranchConfig(embedder.config, LLM_TOKENS))


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_end_to_end(kind, method, request, prompt_400, longclip_dir, tiny_llm_dir):
    pipe = request.getfixturevalue(kind)
    assert _content_tokens(pipe.tokenizer, prompt_400) >= 400
    width = 32 if kind == "sd15" else 64
    extra = {"longclip_text_encoder": longclip_dir} if method == "longclip" else {}
    if method == "segments+llm":
        extra = {"llm": _llm_branch(tiny_llm_dir, width)}
    with torch.no_grad():
        kwargs = encode_long_prompt(pipe, prompt_400, NEGATIVE, method=method, **extra)
    shape = (1, _expected_length(method, pipe, prompt_400), width)
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape == shape
    if kind == "sdxl":
        assert kwargs["pooled_prompt_embeds"].shape == kwargs["negative_pooled_prompt_embeds"].shape == (1, 32)
    else:
        assert set(kwargs) == {"prompt_embeds", "negative_prompt_embeds"}
    images = pipe(**kwargs, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_lists_negative_lists_and_images_per_prompt(kind, request):
    pipe = request.getfixturevalue(kind)
    prompts = ["A red circle. A blue square.", "A green star on a grid"]
    kwargs = encode_long_prompt(pipe, prompts, ["dark", ""], num_images_per_prompt=2)
    assert kwargs["prompt_embeds"].shape[:2] == kwargs["negative_prompt_embeds"].shape[:2] == (4, 240)
    assert torch.equal(kwargs["prompt_embeds"][0], kwargs["prompt_embeds"][1])
    assert not torch.equal(kwargs["prompt_embeds"][1], kwargs["prompt_embeds"][2])
    single = encode_long_prompt(pipe, prompts[1], "")
    assert torch.allclose(single["prompt_embeds"][0], kwargs["prompt_embeds"][2], atol=1e-5)
    with pytest.raises(PromptError, match="one negative prompt or 2 strings"):
        encode_long_prompt(pipe, prompts, ["a", "b", "c"])


def test_truncate_equals_stock_sd15(sd15, prompt_400):
    stock, stock_neg = sd15.encode_prompt(prompt_400, "cpu", 1, True, NEGATIVE)
    ours = encode_long_prompt(sd15, prompt_400, NEGATIVE, method="truncate")
    assert torch.allclose(ours["prompt_embeds"], stock, atol=1e-6)
    assert torch.allclose(ours["negative_prompt_embeds"], stock_neg, atol=1e-6)


def test_clip_skip_sd15_is_earlier_layer_with_final_norm(sd15, prompt_400):
    # diffusers 0.42.1's own clip_skip path fails with transformers 5 (CLIPTextModel has no .text_model): compare
    # with the formula it implements, hidden_states[-(clip_skip + 1)] followed by the final layer norm.
    ours = encode_long_prompt(sd15, prompt_400, method="truncate", clip_skip=1)["prompt_embeds"]
    ids = sd15.tokenizer(prompt_400, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        te = sd15.text_encoder
        want = te.final_layer_norm(te(ids, output_hidden_states=True).hidden_states[-2])
    assert torch.allclose(ours, want, atol=1e-6)


def test_truncate_equals_stock_sdxl(sdxl, prompt_400):
    keys = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    stock = sdxl.encode_prompt(prompt=prompt_400, device="cpu", negative_prompt=NEGATIVE)
    ours = encode_long_prompt(sdxl, prompt_400, NEGATIVE, method="truncate")
    for key, want in zip(keys, stock):
        assert torch.allclose(ours[key], want, atol=1e-6), key
    # clip_skip: diffusers applies it to the prompt only (its negative path always takes hidden_states[-2]);
    # we apply it to both, so only the positive side is comparable
    stock = sdxl.encode_prompt(prompt=prompt_400, device="cpu", negative_prompt=NEGATIVE, clip_skip=1)
    ours = encode_long_prompt(sdxl, prompt_400, NEGATIVE, method="truncate", clip_skip=1)
    assert torch.allclose(ours["prompt_embeds"], stock[0], atol=1e-6)
    assert not torch.allclose(ours["prompt_embeds"], encode_long_prompt(sdxl, prompt_400, method="truncate")["prompt_embeds"])
    # no negative prompt: SDXL's force_zeros_for_empty_prompt gives zeros, as stock does with negative_prompt=None
    stock = sdxl.encode_prompt(prompt=prompt_400, device="cpu", negative_prompt=None)
    ours = encode_long_prompt(sdxl, prompt_400, "", method="truncate")
    for key, want in zip(keys, stock):
        assert torch.allclose(ours[key], want, atol=1e-6), key
    assert not ours["negative_prompt_embeds"].any() and not ours["negative_pooled_prompt_embeds"].any()


def test_sdxl_segments_use_penultimate_states_and_each_encoders_pad(sdxl):
    kwargs = encode_long_prompt(sdxl, "A red circle. A blue square!", "dull")
    neg = kwargs["negative_prompt_embeds"][0]
    from vision_long.diffusion.segments import HiddenLayer

    layer = HiddenLayer(-2, False)
    pad_1 = pad_embedding(sdxl.text_encoder, sdxl.tokenizer, layer)
    pad_2 = pad_embedding(sdxl.text_encoder_2, sdxl.tokenizer_2, layer)
    assert torch.allclose(neg[-1], torch.cat([pad_1, pad_2]), atol=1e-6)
    ids = sdxl.tokenizer_2(["A red circle.", "A blue square!"], padding="longest", return_tensors="pt").input_ids
    with torch.no_grad():
        pooled = sdxl.text_encoder_2(ids).text_embeds.mean(0)
    assert torch.allclose(kwargs["pooled_prompt_embeds"][0], pooled, atol=1e-5)


def test_chunk_layout(sd15, prompt_400):
    tok = sd15.tokenizer
    ids = chunk_ids(tok, [prompt_400, ""])
    k = math.ceil(_content_tokens(tok, prompt_400) / 75)
    assert ids.shape == (2, k, 77)
    assert (ids[:, :, 0] == tok.bos_token_id).all()
    content = tok(prompt_400, add_special_tokens=False).input_ids
    assert ids[0, :, 1:76].reshape(-1)[: len(content)].tolist() == content
    assert (ids[1, :, 1] == tok.eos_token_id).all()  # the negative is filled with empty-prompt chunks


def test_longclip_sd15_equals_the_exported_encoder(sd15, prompt_400, longclip_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    te = CLIPTextModel.from_pretrained(longclip_dir).eval()
    tok = CLIPTokenizer.from_pretrained(longclip_dir)
    ours = encode_long_prompt(sd15, prompt_400, method="longclip", longclip_text_encoder=te, longclip_tokenizer=tok)
    ids = tok(prompt_400, padding="max_length", max_length=248, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(ours["prompt_embeds"], te(ids).last_hidden_state, atol=1e-6)


def test_longclip_sdxl_restores_the_second_encoder(sdxl, prompt_400, longclip_dir):
    table = sdxl.text_encoder_2.text_model.embeddings.position_embedding
    encode_long_prompt(sdxl, prompt_400, method="longclip", longclip_text_encoder=str(longclip_dir))
    assert sdxl.text_encoder_2.text_model.embeddings.position_embedding is table and table.weight.shape[0] == 77


@pytest.mark.parametrize(
    "prompt,kwargs,message",
    [
        ("", {}, "the prompt is empty"),
        ("   ", {}, "the prompt is empty"),
        ("?! ... ;", {}, "has no words, only punctuation"),
        ([], {}, "non-empty list"),
        ("a cat", {"method": "nope"}, "unknown method 'nope'; expected one of segments, longclip, chunks, truncate"),
        ("a cat", {"method": "longclip"}, "needs longclip_text_encoder="),
        ("a cat", {"num_images_per_prompt": 0}, "num_images_per_prompt must be >= 1"),
    ],
)
def test_prompt_errors(sd15, prompt, kwargs, message):
    with pytest.raises(PromptError, match=message) as info:
        encode_long_prompt(sd15, prompt, **kwargs)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_width_mismatch_is_a_clear_error(sd15, longclip_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    config = CLIPTextModel.from_pretrained(longclip_dir).config
    wide = CLIPTextModel(config.__class__(**{**config.to_dict(), "hidden_size": 48, "intermediate_size": 40})).eval()
    tok = CLIPTokenizer.from_pretrained(longclip_dir)
    with pytest.raises(PromptError, match="48-wide states but the UNet's cross-attention expects 32"):
        encode_long_prompt(sd15, "a cat", method="longclip", longclip_text_encoder=wide, longclip_tokenizer=tok)
