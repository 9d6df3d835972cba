import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision_long.tokenization import CLIPTokenizer, TokenizerConfig

GOLDEN = [49406, 320, 3086, 539, 320, 14004, 4371, 320, 6548, 269, 49407]


@pytest.fixture(scope="module")
def tok248():
    return CLIPTokenizer(TokenizerConfig(248))


def test_golden_vector(tok248):
    batch = tok248("A painting of a squirrel eating a burger.")
    assert batch.ids.shape == (1, 248)
    assert batch.ids[0, :11].tolist() == GOLDEN
    assert batch.ids[0, 11:].eq(0).all()
    assert batch.lengths.tolist() == [11]


def test_pad_longest(tok248):
    batch = tok248(["a cat", "A painting of a squirrel eating a burger."], pad="longest")
    assert batch.ids.shape == (2, 11)
    assert batch.lengths.tolist() == [4, 11]


def test_too_long_raises_with_count_and_limit():
    tok = CLIPTokenizer(TokenizerConfig(77))
    text = "word " * 100
    with pytest.raises(ValueError, match=r"102 tokens long .* context length is 77"):
        tok(text)


def test_truncate_keeps_first_ids_and_puts_eot_last():
    tok = CLIPTokenizer(TokenizerConfig(77))
    text = " ".join(f"w{i}" for i in range(200))
    full = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
    batch = tok(text, truncate=True)
    assert batch.truncated == [True]
    assert batch.lengths.tolist() == [77]
    assert batch.ids[0, :76].tolist() == full[:76]
    assert batch.ids[0, 76].item() == tok.eot_token_id
    assert batch.ids[0].argmax().item() == 76


def test_context_length_override_and_count(tok248):
    assert tok248.count_tokens("a cat") == 4
    assert tok248("word " * 100, context_length=300).ids.shape == (1, 300)


def test_reduced_vocabulary_matches_reference_recipe():
    tok = CLIPTokenizer(TokenizerConfig(77, num_merges=488))
    assert tok.vocab_size == 1002
    assert (tok.sot_token_id, tok.eot_token_id) == (1000, 1001)
    assert tok("a cat", pad="longest").ids[0].tolist() == [1000, 320, 66, 536, 1001]


def test_decode_round_trip(tok248):
    assert tok248.decode(tok248("A painting of a squirrel!").ids[0]) == "a painting of a squirrel !"


def test_non_string_rejected(tok248):
    with pytest.raises(TypeError, match="expected a str"):
        tok248([None])


@pytest.mark.parametrize("text", ["Hello, World! 3.14 café", "naïve  spaces\tand\nlines, UPPER case", ""])
def test_hf_export_gives_same_ids(tmp_path, tok248, text):
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    tok248.save_hf(tmp_path)
    hf = HFCLIPTokenizer.from_pretrained(str(tmp_path))
    assert hf.model_max_length == 248
    assert hf(text).input_ids == tok248(text, pad="longest").ids[0].tolist()


def test_openai_cleaning_unescapes_html_and_keeps_special_strings_as_text(tok248):
    # OpenAI CLIP cleans text with ftfy + html.unescape (transformers' fast tokenizer does not).
    assert tok248.encode("fish &amp; chips") == tok248.encode("fish & chips")
    # A literal special-token string in user text is text, never a control token.
    assert tok248.eot_token_id not in tok248.encode("<|endoftext|>")


TOK77 = CLIPTokenizer(TokenizerConfig(77))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_unicode_tokenizes(text):
    tok = TOK77
    batch = tok(text, truncate=True)
    assert batch.ids.shape == (1, 77)
    length = batch.lengths.item()
    assert 2 <= length <= 77
    assert batch.ids[0, 0].item() == tok.sot_token_id
    assert batch.ids[0, length - 1].item() == tok.eot_token_id
    assert torch.all(batch.ids[0, length:] == 0)
