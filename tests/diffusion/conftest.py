"""Tiny SD-1.5 and SDXL pipelines built offline, like diffusers' own fast tests (`get_dummy_components`).

Tokenizers: the real CLIP BPE with its first 488 merges (vocab 1002, bos 1000, eos 1001; reference §10.2).
SDXL's second tokenizer pads with "!" (id 0) like the real one. Every module is seeded before it is built.
"""

import pytest
import torch

from vision_long.tokenization import CLIPTokenizer, TokenizerConfig

NUM_MERGES = 488  # vocab 512 + 488 + 2 = 1002
WIDTH = 32  # hidden width of each tiny text encoder
WORDS = ["a", "red", "circle", "sits", "left", "of", "the", "blue", "square", "on", "top", "of", "a", "large", "striped", "grid", "near", "the", "green", "star"]


def long_prompt(tokenizer, tokens: int = 400) -> str:
    """Sentences of ShapeScenes words until the prompt has `tokens` content tokens under `tokenizer`."""
    sentences, i = [], 0
    while len(tokenizer(" ".join(sentences), add_special_tokens=False, verbose=False).input_ids) < tokens:
        sentences.append(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + i % 7)).capitalize() + ".")
        i += 1
    return " ".join(sentences)


def tiny_tokenizer(directory, pad_token="<|endoftext|>"):
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    CLIPTokenizer(TokenizerConfig(77, NUM_MERGES)).save_hf(directory, pad_token=pad_token)
    return HFCLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def tiny_text_config(**overrides):
    from transformers import CLIPTextConfig

    config = {
        "vocab_size": 1002, "bos_token_id": 1000, "eos_token_id": 1001, "pad_token_id": 1001, "hidden_size": WIDTH,
        "intermediate_size": 37, "layer_norm_eps": 1e-5, "num_attention_heads": 4, "num_hidden_layers": 3,
        "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": WIDTH,
    }
    return CLIPTextConfig(**{**config, **overrides})


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )


def tiny_sd15(tmp) -> "StableDiffusionPipeline":  # noqa: F821
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=WIDTH,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    vae = tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(tiny_text_config()).eval()
    return StableDiffusionPipeline(
        unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(tmp / "tok"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def tiny_sdxl(tmp) -> "StableDiffusionXLPipeline":  # noqa: F821
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + WIDTH, cross_attention_dim=2 * WIDTH,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    vae = tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(tiny_text_config()).eval()
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(pad_token_id=0)).eval()
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tiny_tokenizer(tmp / "tok"),
        tokenizer_2=tiny_tokenizer(tmp / "tok2", pad_token="!"), unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models gain nothing from intra-op threads, and two threads on a busy 2-core machine spin-wait
    (a 2-step tiny pipeline call goes from ~0.03 s to ~4 s); tests/conftest.py: one_thread."""


@pytest.fixture(scope="session")
def sd15(tmp_path_factory):
    return tiny_sd15(tmp_path_factory.mktemp("sd15-parts"))


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory):
    return tiny_sdxl(tmp_path_factory.mktemp("sdxl-parts"))


@pytest.fixture(scope="session")
def sd15_dir(sd15, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipelines") / "tiny-sd15"
    sd15.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sdxl_dir(sdxl, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipelines") / "tiny-sdxl"
    sdxl.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def longclip():
    """A tiny Long-CLIP (248 positions, text width 32, 488-merge vocabulary): an `Encoder`."""
    from vision_long.encoders.longclip import (
        CLIPConfig,
        LongCLIP,
        TextConfig,
        VisionConfig,
    )

    torch.manual_seed(0)
    return LongCLIP(CLIPConfig(
        embed_dim=WIDTH, num_merges=NUM_MERGES,
        text=TextConfig(vocab_size=1002, context_length=248, width=WIDTH, layers=3, heads=4),
        vision=VisionConfig(image_size=32, patch_size=16, width=32, layers=1, heads=2),
    )).eval()


@pytest.fixture(scope="session")
def longclip_dir(longclip, tmp_path_factory):
    """The tiny Long-CLIP exported as a transformers CLIPModel directory (loadable as a CLIPTextModel)."""
    from vision_long.encoders.hf_format import export_hf

    return export_hf(longclip, tmp_path_factory.mktemp("longclip") / "longclip-hf")


@pytest.fixture(scope="session")
def prompt_400(sd15):
    return long_prompt(sd15.tokenizer, 400)
