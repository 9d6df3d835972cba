"""The small ShapeScenes text-to-image pipeline: `train t2i` stages on a tiny config, the saved pipeline, the
embedded-default fallback of `vision-long generate`, and the architecture config."""

import json

import pytest
import torch
from PIL import Image

from vision_long import cli
from vision_long.checkpoints import load_native, save_native
from vision_long.data.scenes import random_scene
from vision_long.diffusion import (
    GenerationRequest,
    detect_layout,
    generate,
    load_pipeline,
    pipelines,
)
from vision_long.diffusion.small_sd import (
    CONFIGS,
    DEFAULT_CONFIG,
    ComponentConfig,
    DiffusersComponent,
    SmallSDConfig,
    install_pipeline,
    small_sd_config,
    text_encoder_from_clip,
)
from vision_long.training.t2i import T2IRecipe

# 16 px images -> 8 x 8 x 4 latents; a UNet of two resolutions (8, 4), cross-attention at 8.
TINY = {"image_size": 16, "vae_channels": [8, 16], "unet_channels": [16, 32], "cross_attention": [True, False],
        "head_dim": 8, "norm_groups": 8}
TRAIN = ["--steps", "1", "--batch-size", "2", "--device", "cpu", "--seed", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, longclip):
    """One-step `train t2i --stage vae` then `--stage unet` on the tiny config with the tiny Long-CLIP.

    One intra-op thread, as conftest's `_one_thread` gives each test (a module fixture runs before it).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("t2i")
        config = root / "tiny.json"
        config.write_text(json.dumps(TINY))
        text_encoder = save_native(longclip, root / "longclip")
        vae_argv = ["train", "t2i", "--stage", "vae", "--config", str(config), *TRAIN, "--out", str(root / "vae")]
        assert cli.main(vae_argv) == 0
        unet_argv = ["train", "t2i", "--stage", "unet", "--vae", str(root / "vae"), "--text-encoder", str(text_encoder),
                     "--config", str(config), *TRAIN, "--out", str(root / "unet")]
        assert cli.main(unet_argv) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def scene_prompt(tokenizer, seed: int = 3) -> str:
    """A 3 x 3 ShapeScenes caption longer than 77 tokens under `tokenizer`."""
    caption = random_scene(seed, 3, fill=1.0).caption()
    assert len(tokenizer(caption, add_special_tokens=False, verbose=False).input_ids) > 77
    return caption


def test_vae_stage_writes_a_scaled_vae(runs):
    vae = json.loads((runs / "vae" / "vae" / "config.json").read_text())
    assert vae["_class_name"] == "AutoencoderKL" and vae["sample_size"] == 16
    assert vae["scaling_factor"] != 1.0  # measured from the trained latents
    log = [json.loads(line) for line in (runs / "vae" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 1 and {"loss", "l1", "kl"} <= set(log[-1])
    assert json.loads((runs / "vae" / "run.json").read_text())["recipe"] == "t2i-vae"
    assert not (runs / "vae" / "checkpoint").exists() and (runs / "vae" / "model" / "config.json").is_file()


def test_unet_stage_writes_an_sd15_pipeline(runs):
    pipeline = runs / "unet" / "pipeline"
    assert detect_layout(pipeline) == "sd15"
    pipe = load_pipeline(pipeline)
    assert pipe.unet.config.cross_attention_dim == 32 and pipe.unet.config.sample_size == 8
    assert pipe.tokenizer.model_max_length == 77 and pipe.text_encoder.config.max_position_embeddings == 248
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    log = [json.loads(line) for line in (runs / "unet" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 1 and {"loss", "mse"} <= set(log[-1])  # Min-SNR-weighted loss and the plain MSE
    trained_vae = json.loads((runs / "vae" / "vae" / "config.json").read_text())["scaling_factor"]
    assert pipe.vae.config.scaling_factor == pytest.approx(trained_vae)


def test_pipeline_generates_from_a_long_prompt(runs, tmp_path):
    pipe = load_pipeline(runs / "unet" / "pipeline")
    prompt = scene_prompt(pipe.tokenizer)
    result = generate(GenerationRequest(prompt=prompt, steps=2, seed=0), tmp_path / "scene.png", pipeline=pipe,
                      progress=False)
    assert result.image.size == (16, 16)
    assert result.record["prompt_embeds_shape"] == [1, 240, 32]
    report = result.record["prompt_report"]
    assert report["tokens"] > 77 and len(report["segments"]) >= 9  # one sentence per object, plus fillers


def test_generate_uses_the_default_pipeline(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipelines, "DEFAULT_PIPELINE", runs / "unet" / "pipeline")
    out = tmp_path / "default.png"
    argv = ["generate", "--prompt", "In the center cell there is a large red circle.", "--steps", "2",
            "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size == (16, 16)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["pipeline"] == "default" and record["pipeline_kind"] == "sd15"


def test_missing_default_pipeline_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipelines, "DEFAULT_PIPELINE", tmp_path / "t2i-shapescenes")
    assert cli.main(["generate", "--prompt", "a red circle", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vision-long generate: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "is not installed yet" in lines[0] and "bash scripts/build_default_t2i.sh" in lines[0]
    assert "--pipeline DIR" in lines[0]


def test_install_stores_half_and_loads_full_precision(runs, tmp_path):
    from safetensors import safe_open

    target = install_pipeline(runs / "unet" / "pipeline", tmp_path / "installed")
    configs = [target / "model_index.json", target / "unet" / "config.json", target / "vae" / "config.json"]
    assert all(str(runs) not in path.read_text() for path in configs)  # no trace of the training run's path
    for part in ("unet", "vae"):
        with safe_open(str(next((target / part).glob("*.safetensors"))), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 (safe_open has no __iter__)
    pipe = load_pipeline(target)
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)} == {torch.float32}
    source = load_pipeline(runs / "unet" / "pipeline")
    for name, weight in source.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], weight.half().float()), name


def test_unet_stage_can_tune_the_text_tower(runs, tmp_path):
    """--text-lr-scale trains the text tower with the UNet and ships it; the default keeps the tower frozen."""
    argv = ["train", "t2i", "--stage", "unet", "--vae", str(runs / "vae"), "--text-encoder", str(runs / "longclip"),
            "--config", str(runs / "tiny.json"), *TRAIN, "--text-lr-scale", "0.5", "--out", str(tmp_path / "tuned")]
    assert cli.main(argv) == 0
    frozen = load_pipeline(runs / "unet" / "pipeline").text_encoder.state_dict()
    initial = text_encoder_from_clip(str(runs / "longclip"))[0].state_dict()
    tuned = load_pipeline(tmp_path / "tuned" / "pipeline").text_encoder.state_dict()
    assert all(torch.equal(frozen[name], initial[name]) for name in initial)
    changed = [name for name in initial if not torch.equal(tuned[name], initial[name])]
    assert any("layers.0." in name for name in changed) and any("token_embedding" in name for name in changed)
    for run in (runs / "unet", tmp_path / "tuned"):  # training's tokenizer calls leave no padding in the saved file
        assert json.loads((run / "pipeline" / "tokenizer" / "tokenizer.json").read_text())["padding"] is None
    with pytest.raises(ValueError, match="text_lr_scale tunes the text tower"):
        T2IRecipe(out_dir=str(tmp_path), stage="vae", text_lr_scale=0.1).check()
    with pytest.raises(ValueError, match="text_lr_scale must be >= 0"):
        T2IRecipe(out_dir=str(tmp_path), stage="unet", text_lr_scale=-1).check()


def test_unet_stage_needs_a_trained_vae(tmp_path, capsys):
    argv = ["train", "t2i", "--stage", "unet", *TRAIN, "--out", str(tmp_path / "unet")]
    assert cli.main(argv) == 2
    assert "pass --vae RUN_DIR" in capsys.readouterr().err
    assert cli.main([*argv, "--vae", str(tmp_path)]) == 2
    assert "run 'train t2i --stage vae' first" in capsys.readouterr().err


def test_component_round_trips_through_the_native_format(tmp_path):
    torch.manual_seed(0)
    config = SmallSDConfig.from_dict(TINY)
    component = DiffusersComponent(ComponentConfig("UNet2DConditionModel", config.unet_config(32)))
    loaded = load_native(save_native(component, tmp_path / "unet"))
    assert isinstance(loaded, DiffusersComponent) and loaded.config.class_name == "UNet2DConditionModel"
    for name, weight in component.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight), name
    with pytest.raises(ValueError, match="unsupported diffusers component 'UNet2DModel'"):
        DiffusersComponent(ComponentConfig("UNet2DModel", {}))


def test_default_config_fits_shapescenes():
    config = small_sd_config(DEFAULT_CONFIG)
    assert config is CONFIGS[DEFAULT_CONFIG] and config.image_size == 64 and config.latent_size == 16
    unet = config.unet_config(128)
    assert unet["cross_attention_dim"] == 128 and unet["sample_size"] == 16 and unet["in_channels"] == 4
    assert unet["down_block_types"][0] == "CrossAttnDownBlock2D" and unet["up_block_types"][-1] == "CrossAttnUpBlock2D"


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"cross_attention": [True]}, "one flag per UNet resolution"),
        ({"cross_attention": [False, False, False]}, "at least one UNet resolution"),
        ({"vae_channels": [32, 48, 128]}, "not multiples of norm_groups"),
        ({"image_size": 72}, "must be divisible"),
        ({"depth": 3}, "unknown SmallSDConfig fields ['depth']"),
    ],
)
def test_config_errors(fields, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SmallSDConfig.from_dict(fields)


def test_unknown_config_name():
    with pytest.raises(ValueError, match="unknown t2i config 'huge'"):
        small_sd_config("huge")
