"""A tiny offline ProCLIP: a random 2-layer BERT (MiniLM's real WordPiece tokenizer, 64 positions) + adapter + ViT."""

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from vision_long.encoders.llm_embedder import MINILM, LLMConfig, resolve_llm_source
from vision_long.encoders.model_configs import model_config
from vision_long.encoders.proclip import AdapterConfig, ProCLIPConfig, ProCLIPEncoder


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny-llm")
    tokenizer = AutoTokenizer.from_pretrained(resolve_llm_source(MINILM))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def tiny_proclip(llm_dir: str, chunk_long: bool = False, variant: str = "proclip") -> ProCLIPEncoder:
    """A random ProCLIP (joint dim 16, 32 px images) over the tiny LLM in `llm_dir`."""
    config = ProCLIPConfig(embed_dim=16, llm_dim=32, llm=LLMConfig(name=llm_dir, chunk_long=chunk_long),
                           adapter=AdapterConfig(variant), vision=model_config("shapescenes-tiny").vision)
    return ProCLIPEncoder(config).eval()
