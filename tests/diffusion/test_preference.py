"""Decomposed preference optimization on tiny offline pipelines: the schedule, gradients through the sampler,
a one-step `train preference` run, the LoRA's save/load round trip, the t2i-alignment suite with a LoRA, errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vision_long.checkpoints import CheckpointError, save_native
from vision_long.cli import main
from vision_long.diffusion import load_pipeline
from vision_long.diffusion.preference import (
    SamplingConfig,
    UNetLoRA,
    gradient_steps,
    load_lora,
    preference_step,
    trailing_timesteps,
)

CAPTIONS = ["In the top-left cell there is a small red circle. The background is a flat gray.",
            "In the center cell there is a large blue star with a white outline."]


@pytest.fixture(scope="module")
def reward_dir(longclip, tmp_path_factory):
    return save_native(longclip, tmp_path_factory.mktemp("reward") / "tiny-longclip")


@pytest.fixture(scope="module")
def trained(sd15_dir, reward_dir, tmp_path_factory):
    """One optimizer step of `train preference` on the tiny pipeline (lr large enough to move the LoRA)."""
    out = tmp_path_factory.mktemp("preference") / "run"
    argv = ["train", "preference", "--pipeline", str(sd15_dir), "--reward", str(reward_dir), "--steps", "1",
            "--batch-size", "2", "--sample-steps", "2", "--grad-steps", "1", "--rank", "2", "--lr", "1e-2",
            "--warmup", "1", "--device", "cpu", "--out", str(out)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test _one_thread
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _image(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(CAPTIONS[0], num_inference_steps=2, generator=torch.Generator().manual_seed(seed),
                output_type="np").images[0]


def test_schedule_matches_upstream():
    assert trailing_timesteps(1000, 50) == list(range(999, 18, -20))  # LongAlign: 999, 979, ..., 19
    for seed in range(5):
        picked = gradient_steps(50, 5, torch.Generator().manual_seed(seed))
        assert len(picked) == 5 and len({i % 10 for i in picked}) == 1 and picked[0] < 10  # time_all[r::10]
    with pytest.raises(ValueError, match="divide"):
        gradient_steps(10, 3, torch.Generator())
    with pytest.raises(ValueError, match="sampling steps"):
        trailing_timesteps(1000, 0)


def test_step_gradients_reach_the_lora_and_w_reweights(sd15_dir, longclip):
    pipe = load_pipeline(sd15_dir)
    lora = UNetLoRA.create(pipe.unet, rank=2)
    sampling = SamplingConfig(steps=2, grad_steps=1)
    parts = preference_step(pipe, longclip, CAPTIONS, 0.3, sampling, torch.Generator().manual_seed(0))
    parts["loss"].backward()
    grads = [p.grad for name, p in lora.named_parameters() if name.endswith("lora_B.weight")]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in pipe.unet.parameters() if not p.requires_grad)
    assert parts["reward"] == pytest.approx(float(parts["relevant"] + 0.3 * parts["irrelevant"]), abs=1e-6)
    plain = preference_step(pipe, longclip, CAPTIONS, 1.0, sampling, torch.Generator().manual_seed(0))
    assert plain["reward"] == pytest.approx(float(plain["score"]), abs=1e-6)
    assert plain["score"] == pytest.approx(float(parts["score"]), abs=1e-6)  # same seed, same sample


def test_train_preference_one_step(trained):
    (record,) = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert {"loss", "reward", "score", "relevant", "irrelevant", "eta"} <= set(record)
    assert record["reward"] == pytest.approx(record["relevant"] + 0.3 * record["irrelevant"], abs=1e-4)
    assert record["loss"] == pytest.approx(0.5 * (1 - record["reward"]), abs=1e-4)
    state = load_file(str(trained / "model" / "model.safetensors"))
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in state  # peft's keys
    assert max(v.abs().max() for k, v in state.items() if "lora_B" in k) > 0  # one step moved B off zero
    assert json.loads((trained / "run.json").read_text())["w"] == 0.3


def test_lora_round_trip_gives_identical_images(sd15_dir, tmp_path):
    base = _image(load_pipeline(sd15_dir))
    tuned = load_pipeline(sd15_dir)
    lora = UNetLoRA.create(tuned.unet, rank=2)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(std=0.3)
    save_native(lora, tmp_path / "lora")
    image = _image(tuned)
    loaded = load_pipeline(sd15_dir)
    load_lora(loaded, tmp_path / "lora")
    assert np.array_equal(_image(loaded), image)
    assert np.abs(image - base).max() > 1e-3  # the LoRA changes the image


def test_eval_suite_with_lora(trained, sd15_dir, longclip_dir, capsys):
    argv = ["eval", "--suite", "t2i-alignment", "--pipeline", str(sd15_dir), "--lora", str(trained / "model"),
            "--methods", "truncate,chunks,segments,longclip,rendered", "--longclip", str(longclip_dir),
            "--n", "2", "--steps", "1", "--device", "cpu", "--json"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["method"] for r in rows] == ["truncate", "chunks", "segments", "longclip", "rendered"]
    for r in rows:
        assert r["n"] == 2 and r["image_size"] == 16 and r["lora"] == str(trained / "model")
        assert 0 <= r["acc_all"] <= 1 and r["n_objects"] == r["n_before_77"] + r["n_after_77"]


def test_errors(sd15_dir, sdxl_dir, reward_dir, trained, tmp_path, capsys):
    pipe = load_pipeline(sd15_dir)
    load_lora(pipe, trained / "model")
    with pytest.raises(ValueError, match="already has"):
        load_lora(pipe, trained / "model")
    with pytest.raises(CheckpointError, match="does not fit the UNet"):
        load_lora(load_pipeline(sdxl_dir), trained / "model")
    with pytest.raises(CheckpointError, match="not a UNet LoRA"):
        load_lora(load_pipeline(sd15_dir), reward_dir)
    common = ["--reward", str(reward_dir), "--steps", "1", "--batch-size", "1", "--device", "cpu"]
    assert main(["train", "preference", "--pipeline", str(sdxl_dir), *common, "--sample-steps", "2", "--grad-steps",
                 "1", "--out", str(tmp_path / "x")]) == 2
    assert "Stable Diffusion 1.x layouts only" in capsys.readouterr().err
    assert main(["train", "preference", "--pipeline", str(sd15_dir), *common, "--sample-steps", "10", "--grad-steps",
                 "3", "--out", str(tmp_path / "y")]) == 2
    assert "grad_steps must divide" in capsys.readouterr().err
    assert main(["train", "preference", "--pipeline", str(sd15_dir), *common, "--w", "1.5",
                 "--out", str(tmp_path / "z")]) == 2
    assert "w must be in [0, 1]" in capsys.readouterr().err
    assert main(["eval", "--suite", "t2i-alignment", "--pipeline", str(sd15_dir), "--methods", "longclip",
                 "--n", "1"]) == 2
    assert "needs a Long-CLIP text encoder directory" in capsys.readouterr().err
