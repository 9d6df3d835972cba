"""The packed text path (real tokens only, varlen attention) equals the padded-to-context forward."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision_long.encoders.longclip import CLIPConfig, LongCLIP, TextConfig, VisionConfig

CONFIG = CLIPConfig(
    embed_dim=32,
    text=TextConfig(vocab_size=1002, context_length=248, width=64, layers=2, heads=4, keep_positions=20),
    vision=VisionConfig(image_size=16, patch_size=8, width=32, layers=1, heads=2),
    num_merges=488,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LongCLIP(CONFIG).eval()
    with torch.no_grad():
        m.positional_embedding_res.add_(torch.randn_like(m.positional_embedding_res))
    return m


def _random_ids(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), 248, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = 1000
        ids[row, 1 : n - 1] = torch.randint(1, 1000, (n - 2,), generator=g)
        ids[row, n - 1] = 1001
    return ids


@pytest.mark.parametrize("lengths", [[2], [248], [2, 3, 5, 248, 77, 78, 100], [7] * 9, [248, 2] * 4])
def test_packed_equals_padded_248(model, lengths):
    ids = _random_ids(lengths)
    padded = model.encode_text_tokens(ids).detach()
    packed = model.encode_text(ids, normalize=False, packed=True, batch_size=4)
    bucketed = model.encode_text(ids, normalize=False, packed=False, batch_size=4)
    assert (packed - padded).abs().max() <= 1e-5
    assert (bucketed - padded).abs().max() <= 1e-5


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(2, 248), min_size=1, max_size=12), st.integers(1, 8))
def test_packed_any_lengths_and_batch_sizes(model, lengths, batch_size):
    ids = _random_ids(lengths, seed=len(lengths))
    padded = model.encode_text_tokens(ids).detach()
    packed = model.encode_text(ids, normalize=False, batch_size=batch_size)
    assert (packed - padded).abs().max() <= 1e-5


def test_packed_hidden_states_equal_padded_rows(model):
    lengths = [2, 9, 77, 130, 248]
    ids = _random_ids(lengths)
    seqs = [row[:n].tolist() for row, n in zip(ids, lengths)]
    for stop, layer, norm in ((None, -1, True), (-1, -2, False)):
        padded = model.text_hidden_states(ids, stop_at_layer=stop).detach()
        packed, pooled = model.packed_states(seqs, hidden_layer=layer, final_norm=norm)
        for row, (n, hidden) in enumerate(zip(lengths, packed)):
            assert hidden.shape == (n, 64)
            assert (hidden - padded[row, :n]).abs().max() <= 1e-5
        assert (pooled - model.encode_text_tokens(ids)).abs().max() <= 1e-5


@pytest.mark.parametrize("with_projection", [False, True])
def test_text_tower_from_transformers(with_projection):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from vision_long.encoders.hf_format import text_tower_from_hf

    config = CLIPTextConfig(vocab_size=1002, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                            num_attention_heads=4, max_position_embeddings=77, bos_token_id=1000,
                            eos_token_id=1001, projection_dim=16, hidden_act="gelu")
    torch.manual_seed(3)
    hf = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()
    tower = text_tower_from_hf(hf)
    lengths = [2, 20, 77]
    ids = _random_ids(lengths)[:, :77]
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True)
        assert (tower.text_hidden_states(ids) - out.last_hidden_state).abs().max() <= 1e-5
        assert (tower.text_hidden_states(ids, stop_at_layer=-1) - out.hidden_states[-2]).abs().max() <= 1e-5
        seqs = [row[:n].tolist() for row, n in zip(ids, lengths)]
        for layer in (-2, -1, 0):
            packed, pooled = tower.packed_states(seqs, hidden_layer=layer, final_norm=False)
            for row, n in enumerate(lengths):
                assert (packed[row] - out.hidden_states[layer][row, :n]).abs().max() <= 1e-5
        reference = out.text_embeds if with_projection else out.pooler_output
        assert (pooled - reference).abs().max() <= 1e-5
        if with_projection:
            assert (tower.encode_text_tokens(ids) - out.text_embeds).abs().max() <= 1e-5
