"""Tiny offline parts for the LMM tests: a WordLevel tokenizer, a random CLIP vision tower and random causal LMs."""

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from vision_long.data.scenes import COLORS, SHAPES, SIZES
from vision_long.lmm import ZoomConfig, ZoomLMM

SPECIALS = ["[UNK]", "[PAD]", "<s>", "</s>"]
WORDS = [
    "question", "answer", ":", "?", ",", "what", "is", "the", "shape", "object", "in", "cell", "at", "row", "column",
    "there", "a", "image", "yes", "no", "1", "2", "3", "4", "5", "6", *COLORS, *SHAPES, *SIZES,
]  # fmt: skip
CROP_SIZE, PATCH_SIZE, POOLED_GRID = 32, 8, 2  # a 4 x 4 patch grid pooled to 2 x 2
VISION_WIDTH, LM_WIDTH = 32, 48


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing whitespace WordLevel tokenizer over the VQA vocabulary, built offline."""
    vocab = {word: i for i, word in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
    )


def tiny_vision_tower() -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=VISION_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CROP_SIZE,
        patch_size=PATCH_SIZE,
    )
    return CLIPVisionModel(config)


def tiny_language_model(kind: str, vocab_size: int):
    if kind == "gpt2":  # ties its input and output embeddings
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=LM_WIDTH,
            n_layer=2,
            n_head=2,
            n_positions=512,
            bos_token_id=2,
            eos_token_id=3,
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=LM_WIDTH,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
    )
    return LlamaForCausalLM(config)


def tiny_lmm(projector: str = "mlp", lm: str = "llama", seed: int = 0, zoom: ZoomConfig | None = None) -> ZoomLMM:
    """A random ZoomLMM (32-pixel crops, 4 x 4 patches pooled to 2 x 2, LM width 48) in eval mode; `zoom`
    defaults to v1_k 2, text_k 3 and no text zoom head."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = ZoomLMM.from_parts(
        tiny_vision_tower(),
        tiny_language_model(lm, len(tokenizer)),
        tokenizer,
        projector=projector,
        pooled_grid=POOLED_GRID,
        zoom=zoom or ZoomConfig(v1_k=2, text_k=3),
    )
    return model.eval()
