"""`vision-long generate` end to end on saved tiny SD-1.5 / SDXL directories, pipeline detection, and errors."""

import json
import shutil

import pytest
from PIL import Image

from vision_long import cli
from vision_long.diffusion import (
    GenerationRequest,
    PipelineError,
    PromptError,
    detect_layout,
    generate,
    load_pipeline,
    pipelines,
)


@pytest.fixture
def main():
    return cli.main


def test_detect_layout(sd15_dir, sdxl_dir):
    assert detect_layout(sd15_dir) == "sd15" and detect_layout(sdxl_dir) == "sdxl"


def test_cli_generate_sd15(main, sd15_dir, prompt_400, tmp_path, capsys):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(prompt_400.replace(". ", ".\n"), encoding="utf-8")
    out = tmp_path / "img" / "sd15.png"
    argv = ["generate", "--prompt-file", str(prompt_file), "--pipeline", str(sd15_dir), "--steps", "2",
            "--seed", "3", "--negative-prompt", "blurry", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (16, 16)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["prompt"] == prompt_400 and record["method"] == "segments" and record["seed"] == 3
    assert record["pipeline_kind"] == "sd15" and record["prompt_embeds_shape"] == [1, 240, 32]
    report = record["prompt_report"]
    assert report["tokens"] > 400 and len(report["segments"]) == len(report["segment_tokens"]) > 10
    assert report["truncated"] and report["merged_tokens"] > 240  # 400 tokens do not fit 240 merged rows
    assert set(record["timings_s"]) == {"load_s", "encode_s", "denoise_s", "save_s", "total_s"}


def test_cli_generate_sdxl_chunks(main, sdxl_dir, prompt_400, tmp_path):
    out = tmp_path / "sdxl.png"
    argv = ["generate", "--prompt", prompt_400, "--pipeline", str(sdxl_dir), "--method", "chunks", "--steps", "2",
            "--width", "24", "--height", "16", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    with Image.open(out) as im:
        assert im.size == (24, 16)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["pipeline_kind"] == "sdxl" and record["method"] == "chunks"
    assert record["prompt_embeds_shape"][1] % 77 == 0 and record["prompt_report"]["segments"] is None


def test_cli_generate_longclip(main, sd15_dir, longclip_dir, tmp_path):
    out = tmp_path / "lc.png"
    argv = ["generate", "--prompt", "A red circle. A blue square.", "--pipeline", str(sd15_dir), "--method",
            "longclip", "--longclip", str(longclip_dir), "--steps", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(out.with_suffix(".json").read_text())["prompt_embeds_shape"] == [1, 248, 32]


def test_library_generate_is_reproducible(sd15, tmp_path):
    request = GenerationRequest(prompt="A red circle. A blue square.", steps=2, seed=1)
    a = generate(request, tmp_path / "a.png", pipeline=sd15, progress=False)
    b = generate(request, tmp_path / "b.png", pipeline=sd15, progress=False)
    assert a.image.tobytes() == b.image.tobytes() and a.record["pipeline"] == "StableDiffusionPipeline"


@pytest.fixture(scope="module")
def broken_dirs(sd15_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    (root / "empty").mkdir()
    (root / "unet-only").mkdir()
    shutil.copytree(sd15_dir / "unet", root / "unet-only" / "unet")
    (root / "unet-only" / "model_index.json").write_text(json.dumps(
        {"_class_name": "KandinskyPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    shutil.copytree(sd15_dir, root / "no-weights")
    for f in (root / "no-weights" / "unet").glob("*.safetensors"):
        f.unlink()
    (root / "bad-json").mkdir()
    (root / "bad-json" / "model_index.json").write_text("{not json")
    return root


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--prompt", "", "--pipeline", "SD15"], "the prompt is empty"),
        (["--prompt", "?! ... ;", "--pipeline", "SD15"], "has no words, only punctuation"),
        (["--prompt-file", "latin1.txt", "--pipeline", "SD15"], "not UTF-8 text"),
        (["--prompt-file", "missing.txt", "--pipeline", "SD15"], "no such prompt file"),
        (["--prompt", "a cat"], "embedded default text-to-image pipeline (vision_long/assets/t2i-shapescenes) is not installed"),
        (["--prompt", "a cat", "--pipeline", "nowhere"], "no such pipeline directory"),
        (["--prompt", "a cat", "--pipeline", "BROKEN/empty"], "not a diffusers pipeline directory (no model_index.json)"),
        (["--prompt", "a cat", "--pipeline", "BROKEN/unet-only"], "a KandinskyPipeline directory, not a Stable Diffusion 1.x or SDXL layout"),
        (["--prompt", "a cat", "--pipeline", "BROKEN/no-weights"], "could not load the Stable Diffusion 1.x pipeline"),
        (["--prompt", "a cat", "--pipeline", "BROKEN/bad-json"], "not valid JSON"),
        (["--prompt", "a cat", "--pipeline", "SD15", "--method", "longclip"], "needs a Long-CLIP text encoder (--longclip DIR)"),
        (["--prompt", "a cat", "--pipeline", "SD15", "--method", "longclip", "--longclip", "nowhere"], "not a transformers CLIP directory"),
        (["--prompt", "a cat", "--pipeline", "SD15", "--width", "15"], "width and height must be multiples of 2"),
        (["--prompt", "a cat", "--pipeline", "SD15", "--steps", "0"], "steps must be >= 1"),
        (["--prompt", "a cat", "--pipeline", "SD15", "--out", "x.jpg"], "the output must be a .png file"),
    ],
)
def test_errors_are_one_line(main, argv, message, sd15_dir, broken_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipelines, "DEFAULT_PIPELINE", tmp_path / "not-installed")  # whether or not it ships
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    argv = [str(sd15_dir) if a == "SD15" else a.replace("BROKEN", str(broken_dirs)) for a in argv]
    assert main(["generate", *argv, "--steps" if "--steps" not in argv else "--seed", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("vision-long generate: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "out.png").exists()


def test_unknown_method(main, sd15_dir, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--prompt", "a cat", "--pipeline", str(sd15_dir), "--method", "compel"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'compel'" in err and "Traceback" not in err
    with pytest.raises(PromptError, match="unknown method 'compel'"):
        GenerationRequest(prompt="a cat", method="compel").check()


def test_load_pipeline_errors_are_pipeline_errors(tmp_path):
    with pytest.raises(PipelineError, match="no such pipeline directory"):
        load_pipeline(tmp_path / "nope")
    assert issubclass(PipelineError, ValueError)
