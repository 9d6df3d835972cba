"""Smoke runs of the training commands on a tiny config, and exact resume after an interruption."""

import json

import pytest
import torch

from vision_long import load_encoder
from vision_long.cli import main
from vision_long.eval.alignment import CellParser, CellParserConfig
from vision_long.training.shapescenes import ClipRecipe, SceneData, train_clip
from vision_long.training.trainer import OptimConfig, train

TINY = ["--batch-size", "6", "--warmup", "1", "--checkpoint-every", "1"]


def test_train_clip_then_longclip_cli(tmp_path):
    assert main(["train", "clip", "--config", "shapescenes-tiny", "--steps", "2", *TINY, "--out", str(tmp_path / "clip")]) == 0
    clip = load_encoder(str(tmp_path / "clip" / "model"), stretch=False)
    assert clip.context_length == 77
    log = [json.loads(line) for line in (tmp_path / "clip" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and "loss" in log[-1]
    assert not (tmp_path / "clip" / "checkpoint").exists()  # removed once the final model is saved

    for extra in ([], ["--positions", "interpolate"], ["--no-pcm"]):
        out = tmp_path / f"long{len(extra)}{'-'.join(extra)}"
        argv = ["train", "longclip", "--init", str(tmp_path / "clip" / "model"), "--steps", "2", *TINY, *extra, "--out", str(out)]
        assert main(argv) == 0
        long = load_encoder(str(out / "model"))
        assert long.context_length == 248
        assert long.config.text.keep_positions == (0 if extra[:1] == ["--positions"] else 20)
        # the frozen table is untouched by fine-tuning; the residual table moved
        stretched = clip.stretched(method="interpolate" if extra[:1] == ["--positions"] else "kps")
        assert torch.equal(long.positional_embedding, stretched.positional_embedding)
        assert not torch.equal(long.positional_embedding_res, stretched.positional_embedding_res)
        assert abs(long.logit_scale.item() - torch.tensor(100.0).log().item()) < 0.1


def test_train_clip_init_continues_a_77_token_model(tmp_path):
    """`train clip --init` starts from the given model's weights (a second curriculum stage), not a fresh one."""
    first = tmp_path / "stage1"
    assert main(["train", "clip", "--config", "shapescenes-tiny", "--steps", "1", *TINY, "--out", str(first)]) == 0
    start = load_encoder(str(first / "model"), stretch=False)
    second = tmp_path / "stage2"
    argv = ["train", "clip", "--init", str(first / "model"), "--partial-captions", "0.5", "--steps", "1", *TINY,
            "--lr", "0", "--out", str(second)]
    assert main(argv) == 0
    unchanged = load_encoder(str(second / "model"), stretch=False)  # lr 0: the weights it started from
    for name, tensor in start.state_dict().items():
        assert torch.equal(tensor, unchanged.state_dict()[name]), name
    assert json.loads((second / "run.json").read_text())["init"] == str(first / "model")

    with pytest.raises(ValueError, match="continues a 77-token CLIP"):
        train_clip(ClipRecipe(out_dir=str(tmp_path / "bad"), init="default", optim=OptimConfig(steps=1)))


def test_resume_after_interruption_is_exact(tmp_path):
    def recipe(out):
        return ClipRecipe(out_dir=str(out), model="shapescenes-tiny", data=SceneData(batch_size=4, seed=1),
                          optim=OptimConfig(steps=4, lr=1e-3, warmup=1, checkpoint_every=2))

    torch.manual_seed(0)
    straight = train_clip(recipe(tmp_path / "a"))

    import vision_long.training.shapescenes as recipes

    original = recipes.SceneData.batch

    def crash_at_step_3(self, step, image_size):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step, image_size)

    recipes.SceneData.batch = crash_at_step_3
    try:
        with pytest.raises(KeyboardInterrupt):
            train_clip(recipe(tmp_path / "b"))
    finally:
        recipes.SceneData.batch = original
    assert (tmp_path / "b" / "checkpoint" / "trainer_state.pt").is_file()
    resumed = train_clip(recipe(tmp_path / "b"))
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_schedule():
    cfg = OptimConfig(steps=100, lr=1.0, warmup=10)
    assert cfg.lr_at(0) == pytest.approx(0.1)
    assert cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(55) == pytest.approx(0.5)
    assert cfg.lr_at(100) == pytest.approx(0.0, abs=1e-12)


def test_scaled_parameters_train_at_their_multiple_of_the_learning_rate(tmp_path):
    """AdamW's first step moves every weight with a gradient by about the learning rate, so a group at scale 0.1
    moves a tenth as far as the model's parameters."""
    torch.manual_seed(0)
    model = CellParser(CellParserConfig(cell_pixels=4, channels=(2,), hidden=4))  # any checkpointable family
    tuned = torch.nn.Linear(3, 3)
    layer = model.head[0]
    before = [p.detach().clone() for p in (layer.weight, tuned.weight)]

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        return {"loss": layer(torch.ones(2, layer.in_features)).sum() + tuned(torch.ones(2, 3)).sum()}

    cfg = OptimConfig(steps=1, lr=0.01, warmup=1, weight_decay=0.0, grad_clip=None)
    train(model, [layer.weight], step_fn, cfg, tmp_path, aux={"tuned": tuned},
          scaled_params=[([tuned.weight], 0.1)])
    moves = [(p.detach() - b).abs() for p, b in zip((layer.weight, tuned.weight), before)]
    assert torch.allclose(moves[0], torch.full_like(moves[0], 0.01), rtol=1e-3)
    assert torch.allclose(moves[1], torch.full_like(moves[1], 0.001), rtol=1e-3)


def test_torchrun_two_ranks_equals_one_process_with_the_global_batch(tmp_path):
    """Gathered negatives + averaged gradients: 2 ranks x 4 scenes train exactly like 1 process x 8 scenes."""
    import subprocess
    import sys

    args = ["train", "clip", "--config", "shapescenes-tiny", "--steps", "2", "--warmup", "1", "--seed", "3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vision_long.cli"]
    done = subprocess.run([*cmd, *args, "--batch-size", "4", "--out", str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert main([*args, "--batch-size", "8", "--out", str(tmp_path / "single")]) == 0
    ddp = load_encoder(str(tmp_path / "ddp" / "model"), stretch=False).state_dict()
    single = load_encoder(str(tmp_path / "single" / "model"), stretch=False).state_dict()
    for name, value in single.items():
        assert torch.allclose(ddp[name], value, atol=1e-5), name


def test_partial_captions_replace_the_long_captions_only():
    full = SceneData(batch_size=4, seed=1)
    partial = SceneData(batch_size=4, seed=1, partial_captions=0.3)
    images, captions, shorts = full.batch(3, 32)
    p_images, p_captions, p_shorts = partial.batch(3, 32)
    assert [im.tobytes() for im in images] == [im.tobytes() for im in p_images] and shorts == p_shorts
    assert p_captions != captions and all(len(p) <= len(c) for p, c in zip(p_captions, captions, strict=True))
    assert p_captions == partial.batch(3, 32)[1]  # a pure function of (seed, step)
    with pytest.raises(ValueError, match="partial_captions must be in"):
        SceneData(partial_captions=1.5)
