"""LongSD's release in LongAlign's own formats, built tiny: the LoRA layer order (also on SD-1.5's real UNet),
the merge arithmetic against a hand computation and against the LoRA-injected forward, the T5 branch, the
`generate --longsd` command, and every error path."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vision_long.checkpoints import CheckpointError
from vision_long.cli import main
from vision_long.diffusion import load_pipeline
from vision_long.diffusion.conditioning import TextAdapter
from vision_long.diffusion.longsd import (
    SD15_LORA_LAYERS,
    load_longsd,
    longalign_lora_layers,
    merge_longalign_lora,
    read_longalign_lora,
)
from vision_long.diffusion.pipelines import PipelineError
from vision_long.diffusion.preference import UNetLoRA
from vision_long.diffusion.prompts import encode_long_prompt
from vision_long.encoders.llm_embedder import MINILM, resolve_llm_source

RANK = 2
PROMPT = "In the top-left cell there is a small red circle. In the center cell there is a large blue star."


def lora_tensors(unet, seed: int) -> list[torch.Tensor]:
    """A LongAlign LoRA file's content for `unet`: [up, down] per layer in upstream order, fp16 (save_lora_weight)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for _, layer in longalign_lora_layers(unet):
        out_ch, in_ch, *kernel = layer.weight.shape
        up_shape, down_shape = ((out_ch, RANK, 1, 1), (RANK, in_ch, *kernel)) if kernel else ((out_ch, RANK), (RANK, in_ch))
        tensors += [torch.randn(up_shape, generator=generator).half() * 0.1,
                    torch.randn(down_shape, generator=generator).half() * 0.1]
    return tensors


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A random one-layer T5 (16 wide) saved whole, as google-t5/t5-large is (encoder and decoder), with MiniLM's
    WordPiece tokenizer: the T5-large stand-in."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    out = tmp_path_factory.mktemp("t5")
    tokenizer = AutoTokenizer.from_pretrained(resolve_llm_source(MINILM))
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                        num_heads=4)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def release(sd15_dir, tmp_path_factory):
    """A tiny LongSD directory in upstream's formats: s28750_adapter/ (diffusers 0.28 layout, T5 16 -> 8 -> 32),
    s28750_lora_vis.pt and sd15-reward-3750.pt (torch.save of [up, down, ...] lists)."""
    out = tmp_path_factory.mktemp("LongSD")
    unet = load_pipeline(sd15_dir).unet
    torch.save(lora_tensors(unet, 1), out / "s28750_lora_vis.pt")
    torch.save(lora_tensors(unet, 2), out / "sd15-reward-3750.pt")
    adapter_dir = out / "s28750_adapter"
    adapter_dir.mkdir()
    (adapter_dir / "config.json").write_text(json.dumps(
        {"_class_name": "TextAdapter", "_diffusers_version": "0.28.0", "in_dim": 16, "int_dim": 8, "out_dim": 32}))
    torch.manual_seed(3)
    adapter = TextAdapter(16, 8, 32)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(std=0.3)
    save_file(adapter.state_dict(), str(adapter_dir / "diffusion_pytorch_model.safetensors"))
    return out


def test_layer_order_is_upstreams(sd15):
    layers = longalign_lora_layers(sd15.unet)
    paths = [path for path, _ in layers]
    assert len(layers) == 65  # 3 + 13 (down) + 18 + 16 (up) + 9 + 6 (mid): Linear and Conv2d only
    assert paths[:4] == ["down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.0.time_emb_proj",
                         "down_blocks.0.resnets.0.conv2",
                         "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert paths[11] == "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj"  # GEGLU
    assert paths[15] == "down_blocks.1.resnets.0.conv_shortcut"  # a block's attentions come before its resnets
    assert paths.index("mid_block.attentions.0.transformer_blocks.0.attn1.to_q") == 50  # up blocks before mid
    assert not any("downsamplers" in p or "upsamplers" in p or "proj_in" in p or p.endswith("ff.net.2")
                   for p in paths)  # only what sits under ResnetBlock2D / Attention / GEGLU


def test_sd15_has_224_lora_layers():
    """SD-1.5's UNet config (on the meta device): the same count as under diffusers 0.28, upstream's pin."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    layers = longalign_lora_layers(unet)
    assert len(layers) == SD15_LORA_LAYERS == 224
    kinds = {}
    for path, _ in layers:
        kinds[path.rsplit(".", 1)[-1]] = kinds.get(path.rsplit(".", 1)[-1], 0) + 1
    assert kinds == {"to_q": 32, "to_k": 32, "to_v": 32, "0": 32, "proj": 16, "conv1": 22, "time_emb_proj": 22,
                     "conv2": 22, "conv_shortcut": 14}


def test_merge_is_w_plus_up_down_by_hand(sd15_dir, release):
    unet = load_pipeline(sd15_dir).unet
    tensors = read_longalign_lora(release / "s28750_lora_vis.pt")
    assert all(t.dtype == torch.float16 for t in tensors) and len(tensors) == 2 * 65
    layers = dict(longalign_lora_layers(unet))
    paths = list(layers)
    checked = {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": None,  # Linear 32 -> 64
               "down_blocks.1.resnets.0.conv1": None,  # 3x3 conv 32 -> 64
               "up_blocks.0.resnets.0.conv_shortcut": None}  # 1x1 conv
    before = {p: layers[p].weight.detach().clone() for p in checked}
    assert merge_longalign_lora(unet, tensors, scale=0.5) == 65
    for path in checked:
        i = paths.index(path)
        up, down = tensors[2 * i].float(), tensors[2 * i + 1].float()
        if up.ndim == 2:
            delta = torch.einsum("or,ri->oi", up, down)
        else:
            delta = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)
        torch.testing.assert_close(layers[path].weight, before[path] + 0.5 * delta, atol=1e-5, rtol=0)


def test_merged_conv_equals_the_injected_forward(sd15_dir, release):
    """Upstream's LoraInjectedConv2d computes conv(x) + up(down(x)) (scale 1, dropout off): the merged conv must too."""
    unet = load_pipeline(sd15_dir).unet
    tensors = read_longalign_lora(release / "s28750_lora_vis.pt")
    path = "down_blocks.1.resnets.0.conv1"
    i = [p for p, _ in longalign_lora_layers(unet)].index(path)
    conv = unet.get_submodule(path)
    x = torch.randn(1, conv.in_channels, 6, 6)
    with torch.no_grad():
        injected = conv(x) + F.conv2d(F.conv2d(x, tensors[2 * i + 1].float(), padding=conv.padding),
                                      tensors[2 * i].float())
        merge_longalign_lora(unet, tensors)
        torch.testing.assert_close(conv(x), injected, atol=1e-5, rtol=0)


def test_load_longsd_merges_both_loras_and_attaches_the_t5_branch(sd15_dir, release, t5_dir):
    base = load_pipeline(sd15_dir).unet
    pipe = load_longsd(release, sd15_dir, t5_dir)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    path = "mid_block.attentions.0.transformer_blocks.0.attn2.to_v"
    i = [p for p, _ in longalign_lora_layers(base)].index(path)
    stage1, reward = (read_longalign_lora(release / name) for name in ("s28750_lora_vis.pt", "sd15-reward-3750.pt"))
    expected = base.get_submodule(path).weight + sum(
        torch.einsum("or,ri->oi", t[2 * i].float(), t[2 * i + 1].float()) for t in (stage1, reward))
    torch.testing.assert_close(pipe.unet.get_submodule(path).weight, expected, atol=1e-5, rtol=0)
    out = encode_long_prompt(pipe, PROMPT, "", method="segments+llm")
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (1, 480, 32)
    # the T5 half by hand: padded to 240 tokens, read without attention mask, through the adapter
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer, t5 = AutoTokenizer.from_pretrained(t5_dir), T5EncoderModel.from_pretrained(t5_dir).eval()
    for key, text in (("prompt_embeds", PROMPT), ("negative_prompt_embeds", "")):
        ids = tokenizer([text], max_length=240, padding="max_length", truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            expected_rows = pipe.llm_branch.adapter(t5(input_ids=ids).last_hidden_state)
        torch.testing.assert_close(out[key][:, 240:], expected_rows, atol=1e-5, rtol=0)


def test_generate_longsd_cli(sd15_dir, release, t5_dir, tmp_path):
    out = tmp_path / "longsd.png"
    argv = ["generate", "--prompt", PROMPT, "--longsd", str(release), "--pipeline", str(sd15_dir), "--t5", str(t5_dir),
            "--steps", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == "segments+llm" and record["prompt_embeds_shape"] == [1, 480, 32]
    assert record["segment_options"]["split_mode"] == "upstream"  # LongAlign's splitter, as sample.py


class NotATensor:
    """Pickled into a fake LoRA file: `weights_only=True` must refuse to unpickle it."""


def test_lora_file_errors(sd15_dir, release, tmp_path):
    with pytest.raises(CheckpointError, match="no such LoRA file"):
        read_longalign_lora(tmp_path / "missing.pt")
    torch.save({"up": torch.zeros(1)}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="expected a list of tensors"):
        read_longalign_lora(tmp_path / "dict.pt")
    torch.save([torch.zeros(1), NotATensor()], tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match="not a LongAlign LoRA file"):
        read_longalign_lora(tmp_path / "object.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip or pickle")
    with pytest.raises(CheckpointError, match="not a LongAlign LoRA file"):
        read_longalign_lora(tmp_path / "garbage.pt")

    unet = load_pipeline(sd15_dir).unet
    good = read_longalign_lora(release / "s28750_lora_vis.pt")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    cases = [
        (good[:-2], "holds 128 tensors; a LongAlign LoRA for this UNet holds 130"),
        ([good[1], good[0], *good[2:]], r"pair 0 \(tensors 0, 1\).*down_blocks.0.resnets.0.conv1"),  # up/down swapped
        ([good[0][:, :1], *good[1:]], "with the same r"),  # rank 1 up, rank 2 down
        ([good[0], good[1][:, :, :1], *good[2:]], r"down must be \[r, 32, 3, 3\]"),
        ([*good[:2], good[2][..., None, None], good[3][..., None, None], *good[4:]], "needs 2-d up and down"),
    ]
    for tensors, message in cases:
        with pytest.raises(CheckpointError, match=message):
            merge_longalign_lora(unet, tensors, source="lora.pt")
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())  # nothing merged
    UNetLoRA.create(unet, rank=2)
    with pytest.raises(PipelineError, match="already carries peft LoRA layers"):
        longalign_lora_layers(unet)


def test_release_errors(sd15_dir, sdxl_dir, release, t5_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no such LongSD directory"):
        load_longsd(tmp_path / "nowhere", sd15_dir, t5_dir)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "s28750_lora_vis.pt").write_bytes((release / "s28750_lora_vis.pt").read_bytes())
    with pytest.raises(CheckpointError, match="missing s28750_adapter, sd15-reward-3750.pt"):
        load_longsd(partial, sd15_dir, t5_dir)
    with pytest.raises(CheckpointError, match="not a transformers T5 directory"):
        load_longsd(release, sd15_dir, tmp_path)
    with pytest.raises(PipelineError, match="this is an SDXL pipeline"):
        load_longsd(release, sdxl_dir, t5_dir)
    with pytest.raises(CheckpointError, match="reads 16-wide LLM states but the LLM"):
        load_longsd(release, sd15_dir, resolve_llm_source(MINILM))  # a 384-wide text model
