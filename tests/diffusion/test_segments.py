"""Splitting (both modes), the merge rules, pad* and the one batched encoder call."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision_long.diffusion.segments import (
    HiddenLayer,
    SegmentOptions,
    SegmentStates,
    encode_segment_hidden_states,
    encode_segments,
    merge_segments,
    merged_length,
    pad_embedding,
    split_segments,
)

# reference §2.1: LongAlign's splitter as shipped, quirks included
UPSTREAM = [
    ("A cat. A dog.", ["A cat.", " A dog."]),
    ("A cat. A dog. ", ["A cat.", " A dog.", " ."]),
    ("Is it red? Yes! It is 3.14 m tall; wow", ["Is it red.", " Yes! It is 3.", "14 m tall; wow."]),
    ("Dr. Smith walks.", ["Dr.", " Smith walks."]),
    ("", [""]),
    ("...", ["..."]),
    ('He said "! no', ["He said .", " no."]),
    ("Stop; go", ["Stop; go."]),
]

FIXED = [
    ("A cat. A dog.", ["A cat.", "A dog."]),
    ("A cat. A dog. ", ["A cat.", "A dog."]),
    ("Is it red? Yes! It is 3.14 m tall; wow", ["Is it red?", "Yes!", "It is 3.14 m tall;", "wow"]),
    ("Dr. Smith walks.", ["Dr. Smith walks."]),
    ("", []),
    ("?! . ;", []),
    ("  one sentence without an end  ", ["one sentence without an end"]),
    ("Wait... what?! Really.", ["Wait...", "what?!", "Really."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("Shapes, e.g. circles, etc. are drawn by J. Smith. Done", ["Shapes, e.g. circles, etc. are drawn by J. Smith.", "Done"]),
    ("Version 2.0 is out.Next", ["Version 2.0 is out.Next"]),
    ("A cat.\n\nA dog.", ["A cat.", "A dog."]),
    ("First. ! Second.", ["First.", "Second."]),
]


@pytest.mark.parametrize("text,expected", UPSTREAM)
def test_upstream_splitter_reproduces_longalign(text, expected):
    assert split_segments(text, mode="upstream") == expected


@pytest.mark.parametrize("text,expected", FIXED)
def test_fixed_splitter(text, expected):
    assert split_segments(text) == expected


def test_fixed_splits_long_segments_at_word_boundaries():
    words = [f"word{i}" for i in range(200)]
    text = " ".join(words)
    count = lambda s: len(s.split())
    pieces = split_segments(text, count_tokens=count, max_tokens=75)
    assert [len(p.split()) for p in pieces] == [75, 75, 50]
    assert " ".join(pieces).split() == words
    # default counter: the CLIP BPE; every piece fits 75 content tokens
    from vision_long.tokenization import CLIPTokenizer

    tok = CLIPTokenizer()
    pieces = split_segments(text + ".")
    assert len(pieces) > 1 and all(len(tok.encode(p)) <= 75 for p in pieces)
    assert " ".join(pieces).split() == (text + ".").split()


def test_fixed_cuts_a_single_overlong_word():
    pieces = split_segments("x" * 500, count_tokens=len, max_tokens=75)
    assert "".join(pieces) == "x" * 500 and all(len(p) <= 75 for p in pieces)


def test_unknown_split_mode():
    with pytest.raises(ValueError, match="unknown split mode 'nltk'"):
        split_segments("a", mode="nltk")


_WORD = st.text(alphabet=st.sampled_from("abcXYZ019.,!?;:'\"()-"), min_size=1, max_size=8)
_SPACE = st.sampled_from([" ", "  ", "\n", " \t "])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_WORD, _SPACE), max_size=60))
def test_fixed_never_loses_a_word(parts):
    text = "".join(w + s for w, s in parts)
    count = lambda s: len(s.split())
    pieces = split_segments(text, count_tokens=count, max_tokens=7)

    def words(t):
        return [w for w in t.split() if any(c.isalnum() for c in w)]

    assert words(" ".join(pieces)) == words(text)
    assert all(p == p.strip() and p and count(p) <= 7 for p in pieces)


# --- merging ------------------------------------------------------------------------------------------------


def _states(lengths, width=1, max_len=5):
    """Hand-made states: row j, position p holds 100 * j + p."""
    s = len(lengths)
    hidden = (100 * torch.arange(s)[:, None] + torch.arange(max_len)[None]).float()[..., None].expand(s, max_len, width)
    return SegmentStates(hidden=hidden.clone(), lengths=torch.tensor(lengths), pooled=torch.zeros(s, 1))


def test_merge_rules_hand_computed():
    states, pad = _states([4, 3, 5]), torch.tensor([-1.0])
    merged = merge_segments(states, [2, 1], pad, max_tokens=7)
    assert merged.shape == (2, 7, 1)
    assert merged[0, :, 0].tolist() == [0, 1, 2, 100, 101, -1, -1]  # start + content of each, no end/pad
    assert merged[1, :, 0].tolist() == [200, 201, 202, 203, -1, -1, -1]
    first = merge_segments(states, [2, 1], pad, max_tokens=7, first_start_only=True)
    assert first[0, :, 0].tolist() == [0, 1, 2, 101, -1, -1, -1]
    cut = merge_segments(states, [2, 1], pad, max_tokens=3)
    assert cut[:, :, 0].tolist() == [[0, 1, 2], [200, 201, 202]]
    assert merged_length([4, 3]) == 5 and merged_length([4, 3], first_start_only=True) == 4


def test_merge_rejects_bad_counts():
    with pytest.raises(ValueError, match="do not partition"):
        merge_segments(_states([3, 3]), [1], torch.zeros(1))


def test_position_keep_equals_upstream_id_mask(sd15):
    """With pad == eos (SD-1.x), dropping by length equals upstream's `(id != pad) & (id != eos)` mask."""
    tok = sd15.tokenizer
    segments = ["A red circle.", "A blue square on a striped grid.", ""]
    ids = tok(segments, padding="longest", max_length=77, truncation=True, return_tensors="pt").input_ids
    states = encode_segment_hidden_states(sd15.text_encoder, tok, segments)
    by_length = torch.arange(ids.shape[1])[None] < (states.lengths - 1)[:, None]
    assert tok.pad_token_id == tok.eos_token_id
    assert torch.equal(by_length, (ids != tok.pad_token_id) & (ids != tok.eos_token_id))


def test_batched_segments_equal_separate_encodes(sd15):
    te, tok = sd15.text_encoder, sd15.tokenizer
    segments = ["a cat", "A much longer sentence about a striped square on the grid near the star."]
    with torch.no_grad():
        batched = encode_segment_hidden_states(te, tok, segments)
        for j, text in enumerate(segments):
            alone = encode_segment_hidden_states(te, tok, [text])
            n = int(alone.lengths[0])
            assert batched.lengths[j] == n
            assert torch.allclose(batched.hidden[j, :n], alone.hidden[0, :n], atol=1e-5)
            assert torch.allclose(batched.pooled[j], alone.pooled[0], atol=1e-5)


def test_pad_star_is_mean_of_positions_17_to_76(sd15):
    te, tok = sd15.text_encoder, sd15.tokenizer
    ids = torch.tensor([[tok.bos_token_id] + [tok.eos_token_id] * 76])  # encode("") padded with eos (SD-1.x)
    with torch.no_grad():
        want = te(ids).last_hidden_state[0, 17:77].mean(0)
        assert torch.allclose(pad_embedding(te, tok), want, atol=1e-6)
        penultimate = te(ids, output_hidden_states=True).hidden_states[-2][0, 17:77].mean(0)
        assert torch.allclose(pad_embedding(te, tok, HiddenLayer(-2, False)), penultimate, atol=1e-6)


def test_pad_star_cache_follows_encoder_dtype_and_weights(sd15):
    from transformers import CLIPTextModel

    te = CLIPTextModel(sd15.text_encoder.config).eval()
    first = pad_embedding(te, sd15.tokenizer)
    assert pad_embedding(te, sd15.tokenizer) is first  # cached
    te.double()
    assert pad_embedding(te, sd15.tokenizer).dtype == torch.float64
    te.float()
    with torch.no_grad():
        te.final_layer_norm.bias.add_(1.0)  # in-place weight change: recomputed
    assert torch.allclose(pad_embedding(te, sd15.tokenizer), first + 1.0, atol=1e-5)


def test_merged_output_start_tokens_and_padding(sd15):
    te, tok = sd15.text_encoder, sd15.tokenizer
    texts = ["A red circle. A blue square. A green star on the grid.", "One sentence only"]
    with torch.no_grad():
        embeds, pooled = encode_segments(te, tok, texts)
        start = te(torch.tensor([[tok.bos_token_id]])).last_hidden_state[0, 0]
        first_only, _ = encode_segments(te, tok, texts, options=SegmentOptions(first_start_only=True))
    assert embeds.shape == (2, 240, 32) and pooled.shape == (2, 32)
    pad = pad_embedding(te, tok)
    for i, n_segments in enumerate([3, 1]):
        is_start = torch.isclose(embeds[i], start, atol=1e-5).all(-1)
        assert int(is_start.sum()) == n_segments
        assert int(torch.isclose(first_only[i], start, atol=1e-5).all(-1).sum()) == 1
        used = merged_length([len(tok(s).input_ids) for s in split_segments(texts[i])])
        assert torch.allclose(embeds[i, used:], pad.expand(240 - used, -1))
        assert not torch.isclose(embeds[i, used - 1], pad, atol=1e-5).all()


def test_empty_text_is_start_token_then_pad_star(sd15):
    te, tok = sd15.text_encoder, sd15.tokenizer
    with torch.no_grad():
        embeds, _ = encode_segments(te, tok, [""])
        start = te(torch.tensor([[tok.bos_token_id]])).last_hidden_state[0, 0]
    assert torch.allclose(embeds[0, 0], start, atol=1e-5)
    assert torch.allclose(embeds[0, 1:], pad_embedding(te, tok).expand(239, -1))


def test_all_segments_in_one_encoder_call(sd15, monkeypatch):
    from vision_long.encoders.clip_text import CLIPTextTower

    te, tok = sd15.text_encoder, sd15.tokenizer
    texts = ["A cat. A dog. A bird.", "A star. A grid.", ""]
    pad_embedding(te, tok)  # warm the pad* cache
    calls = []
    handle = te.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            encode_segments(te, tok, texts, options=SegmentOptions(packed=False))
    finally:
        handle.remove()
    assert calls == [3 + 2 + 1]

    packed_calls = []
    original = CLIPTextTower.packed_states
    monkeypatch.setattr(CLIPTextTower, "packed_states",
                        lambda self, seqs, *a, **k: packed_calls.append(len(seqs)) or original(self, seqs, *a, **k))
    with torch.no_grad():
        encode_segments(te, tok, texts)
    assert packed_calls == [3 + 2 + 1]
