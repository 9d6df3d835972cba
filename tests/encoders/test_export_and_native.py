"""HF export and native save/load round-trips."""

import pytest
import torch
from conftest import padded_ids
from reference_clip import random_openai_state_dict

from vision_long import export_hf, load_encoder, load_native, save_native

ATOL = 1e-5


@pytest.fixture(scope="module")
def longclip(tmp_path_factory):
    sd = random_openai_state_dict(long_clip=True, seed=7)
    path = tmp_path_factory.mktemp("ckpt") / "longclip-tiny.pt"
    torch.save(sd, path)
    return load_encoder(f"longclip:{path}")


@pytest.fixture(scope="module")
def exported(longclip, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "longclip-hf"
    export_hf(longclip, out)
    return out


def test_export_writes_effective_table(longclip, exported):
    from transformers import CLIPModel

    hf = CLIPModel.from_pretrained(exported)
    assert hf.config.text_config.max_position_embeddings == 248
    table = hf.text_model.embeddings.position_embedding.weight
    assert torch.equal(table, longclip.effective_positional_embedding())
    assert not torch.equal(table[20:], longclip.positional_embedding[20:])


def test_hf_export_round_trip_clipmodel(longclip, exported, texts, images):
    from transformers import CLIPModel, CLIPTokenizer

    hf = CLIPModel.from_pretrained(exported).eval()
    tok = CLIPTokenizer.from_pretrained(exported)
    ids = torch.tensor(tok(texts, padding="max_length", max_length=248).input_ids)
    ours = padded_ids(texts, 248)
    real = ours != 0  # the exported tokenizer pads with EOT (SD-1 convention), ours with 0
    assert torch.equal(ids[real], ours[real])
    with torch.no_grad():
        out = hf.text_model(input_ids=ids)
        hidden = longclip.text_hidden_states(ids)
        assert (out.last_hidden_state - hidden).abs().max() <= ATOL
        text_embeds = hf.get_text_features(input_ids=ids).pooler_output
        assert (text_embeds - longclip.encode_text(texts, normalize=False)).abs().max() <= ATOL
        pixels = torch.stack([longclip.preprocess(im) for im in images])
        image_embeds = hf.get_image_features(pixel_values=pixels).pooler_output
        assert (image_embeds - longclip.encode_image(pixels, normalize=False)).abs().max() <= ATOL


def test_hf_export_loads_as_text_encoder(longclip, exported, texts):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    ids = padded_ids(texts, 248)
    with torch.no_grad():
        hidden = longclip.text_hidden_states(ids)
        text_model = CLIPTextModel.from_pretrained(exported).eval()
        assert (text_model(input_ids=ids).last_hidden_state - hidden).abs().max() <= ATOL
        with_proj = CLIPTextModelWithProjection.from_pretrained(exported).eval()
        embeds = with_proj(input_ids=ids).text_embeds
        assert (embeds - longclip.encode_text(ids, normalize=False)).abs().max() <= ATOL


def test_hf_export_reloads_through_our_loader(longclip, exported, texts):
    again = load_encoder(f"hf:{exported}")  # already 248 positions: not stretched again
    assert again.context_length == 248 and again.positional_embedding_res is None
    assert (again.encode_text(texts) - longclip.encode_text(texts)).abs().max() <= ATOL


def test_hf_export_as_diffusers_text_encoder(exported, longclip):
    """The exported directory drops into a diffusers pipeline as `text_encoder` + `tokenizer`."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128, norm_num_groups=32,
    )
    vae = AutoencoderKL(block_out_channels=(32,), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), norm_num_groups=32)
    pipe = StableDiffusionPipeline(
        vae=vae, unet=unet, scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None,
        text_encoder=CLIPTextModel.from_pretrained(exported), tokenizer=CLIPTokenizer.from_pretrained(exported),
        requires_safety_checker=False,
    )
    prompt = " ".join(["a small red circle in the top left corner of a large grid"] * 12)  # > 77 tokens
    embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    assert embeds.shape == (1, 248, 128)
    ids = torch.tensor(pipe.tokenizer(prompt, padding="max_length", max_length=248, truncation=True).input_ids)[None]
    assert (ids[0] == pipe.tokenizer.eos_token_id).nonzero()[0].item() > 77
    with torch.no_grad():
        assert (embeds - longclip.text_hidden_states(ids)).abs().max() <= ATOL


def test_native_round_trip_is_exact(longclip, tmp_path, texts, images):
    save_native(longclip, tmp_path / "native")
    again = load_native(tmp_path / "native")
    assert again.config == longclip.config
    assert torch.equal(again.encode_text(texts), longclip.encode_text(texts))
    assert torch.equal(again.encode_image(images), longclip.encode_image(images))
    assert not again.positional_embedding.requires_grad and again.positional_embedding_res.requires_grad
    via_spec = load_encoder(str(tmp_path / "native"))
    assert torch.equal(via_spec.encode_text(texts), longclip.encode_text(texts))


def test_load_with_dtype(longclip, tmp_path, texts):
    save_native(longclip, tmp_path / "native")
    half = load_encoder(str(tmp_path / "native"), dtype=torch.float64)
    assert half.encode_text(texts).dtype == torch.float64
    assert (half.encode_text(texts).float() - longclip.encode_text(texts)).abs().max() <= 1e-5
