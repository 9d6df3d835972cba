"""Every loader against the independent reference forward (fp32, atol 1e-5)."""

import pytest
import torch
from conftest import padded_ids
from reference_clip import encode_image, encode_text, kps_loop, random_openai_state_dict

from vision_long import load_encoder

ATOL = 1e-5
HEADS = 2  # width 128 // 64


def _stretched_state_dict(sd):
    """What `load_from_clip` makes of a 77-token state dict: both tables = the stretched table."""
    out = dict(sd)
    out["positional_embedding"] = kps_loop(sd["positional_embedding"])
    out["positional_embedding_res"] = out["positional_embedding"].clone()
    return out


@pytest.fixture(scope="module")
def longclip_file(tmp_path_factory):
    sd = random_openai_state_dict(long_clip=True, vocab_size=49408, seed=3)
    assert not torch.allclose(sd["positional_embedding"], sd["positional_embedding_res"])
    path = tmp_path_factory.mktemp("ckpt") / "longclip-tiny.pt"
    torch.save(sd, path)
    return path, sd


def test_longclip_checkpoint_matches_reference(longclip_file, texts, images):
    path, sd = longclip_file
    model = load_encoder(f"longclip:{path}")
    assert model.context_length == 248 and model.config.text.keep_positions == 20
    ids = padded_ids(texts, 248, num_merges=None)  # upstream: always padded to 248
    ref = encode_text(sd, ids, HEADS)
    ours = model.encode_text(texts, normalize=False)
    assert (ours - ref).abs().max() <= ATOL
    pixels = torch.stack([model.preprocess(im) for im in images])
    assert (model.encode_image(images, normalize=False) - encode_image(sd, pixels, HEADS)).abs().max() <= ATOL


def test_longclip_reads_both_tables(longclip_file, texts):
    """Using either table alone changes the features by O(1): the parity test above can fail."""
    path, sd = longclip_file
    model = load_encoder(f"longclip:{path}")
    ids = padded_ids(texts, 248, num_merges=None)
    for wrong in ("positional_embedding", "positional_embedding_res"):
        one_table = {k: v for k, v in sd.items() if k != "positional_embedding_res"}
        one_table["positional_embedding"] = sd[wrong]
        assert (model.encode_text(ids, normalize=False) - encode_text(one_table, ids, HEADS)).abs().max() > 1e-2


def test_any_length_equals_padded_248(longclip_file, texts):
    path, _ = longclip_file
    model = load_encoder(f"longclip:{path}")
    padded = padded_ids(texts, 248, num_merges=None)
    full = model.encode_text_tokens(padded)
    lengths = padded.argmax(-1) + 1
    for length in (11, 100, 247, 248):
        fits = lengths <= length
        cut = model.encode_text_tokens(padded[fits, :length])
        assert (cut - full[fits]).abs().max() <= ATOL
    assert (model.encode_text(padded, normalize=False) - full).abs().max() <= ATOL
    with pytest.raises(ValueError, match="context length is 248"):
        model.encode_text_tokens(torch.zeros(1, 249, dtype=torch.long))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_openai_state_dict_plain_and_stretched(tmp_path, texts, images, suffix):
    sd = random_openai_state_dict(seed=4)
    path = tmp_path / f"openai-tiny{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)  # DDP-style wrapper
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    plain = load_encoder(f"openai:{path}", stretch=False)
    assert plain.context_length == 77 and plain.positional_embedding_res is None
    ids77 = padded_ids(texts[:2] + texts[3:], 77)
    assert (plain.encode_text(ids77, normalize=False) - encode_text(sd, ids77, HEADS)).abs().max() <= ATOL

    stretched = load_encoder(f"openai:{path}")
    assert stretched.context_length == 248
    ids248 = padded_ids(texts, 248)
    ref = encode_text(_stretched_state_dict(sd), ids248, HEADS)
    assert (stretched.encode_text(texts, normalize=False) - ref).abs().max() <= ATOL
    pixels = torch.stack([stretched.preprocess(im) for im in images])
    assert (stretched.encode_image(pixels, normalize=False) - encode_image(sd, pixels, HEADS)).abs().max() <= ATOL


def test_openai_torchscript_archive(tmp_path, texts):
    """OpenAI released CLIP as TorchScript archives; their state dict is read with torch.jit.load."""
    sd = random_openai_state_dict(seed=5)
    holder = torch.nn.Module()
    for key, value in sd.items():
        *path, name = key.split(".")
        module = holder
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(name, torch.nn.Parameter(value))
    file = tmp_path / "ViT-tiny.pt"
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(holder), str(file))
    model = load_encoder(f"openai:{file}", stretch=False)
    ids = padded_ids(texts[:2], 77)
    assert (model.encode_text(ids, normalize=False) - encode_text(sd, ids, HEADS)).abs().max() <= ATOL


@pytest.fixture(scope="module")
def open_clip_tiny(tmp_path_factory):
    import json

    import open_clip

    root = tmp_path_factory.mktemp("open_clip")
    cfg = {
        "embed_dim": 64,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 1002, "width": 128, "heads": 2, "layers": 2},
    }
    (root / "VL-Tiny-GELU.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "VL-Tiny-GELU.json")
    oc = open_clip.create_model("VL-Tiny-GELU").eval()
    weights = root / "tiny.pt"
    torch.save(oc.state_dict(), weights)
    return oc, weights


def test_open_clip_plain_matches_open_clip(open_clip_tiny, texts, images):
    oc, weights = open_clip_tiny
    model = load_encoder(f"open_clip:VL-Tiny-GELU@{weights}", stretch=False)
    assert model.config.text.act == "gelu"
    ids = padded_ids(texts[:2], 77)
    with torch.no_grad():
        ref_text = oc.encode_text(ids)
        pixels = torch.stack([model.preprocess(im) for im in images])
        ref_image = oc.encode_image(pixels)
    assert (model.encode_text(texts[:2], normalize=False) - ref_text).abs().max() <= ATOL
    assert (model.encode_image(images, normalize=False) - ref_image).abs().max() <= ATOL


def test_open_clip_stretched_matches_reference(open_clip_tiny, texts):
    oc, weights = open_clip_tiny
    model = load_encoder(f"open_clip:VL-Tiny-GELU@{weights}")
    sd = _stretched_state_dict({k: v for k, v in oc.state_dict().items()})
    ids = padded_ids(texts, 248)
    ref = encode_text(sd, ids, HEADS, act="gelu")
    assert (model.encode_text(texts, normalize=False) - ref).abs().max() <= ATOL


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=1002, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=1000, eos_token_id=1001),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=64,
    )
    torch.manual_seed(6)
    hf = CLIPModel(config).eval()
    path = tmp_path_factory.mktemp("hf") / "clip-tiny"
    hf.save_pretrained(path)
    return hf, path


def test_hf_plain_matches_transformers(hf_tiny, texts, images):
    hf, path = hf_tiny
    model = load_encoder(f"hf:{path}", stretch=False)
    ids = padded_ids(texts[:2], 77)
    pixels = torch.stack([model.preprocess(im) for im in images])
    with torch.no_grad():
        ref_text = hf.get_text_features(input_ids=ids).pooler_output
        ref_image = hf.get_image_features(pixel_values=pixels).pooler_output
    assert (model.encode_text(texts[:2], normalize=False) - ref_text).abs().max() <= ATOL
    assert (model.encode_image(pixels, normalize=False) - ref_image).abs().max() <= ATOL


def test_hf_stretched_matches_reference(hf_tiny, texts):
    from vision_long.encoders.hf_format import hf_to_openai_state_dict

    hf, path = hf_tiny
    model = load_encoder(f"hf:{path}")
    sd = _stretched_state_dict(hf_to_openai_state_dict(hf.state_dict()))
    ids = padded_ids(texts, 248)
    assert (model.encode_text(texts, normalize=False) - encode_text(sd, ids, HEADS)).abs().max() <= ATOL
