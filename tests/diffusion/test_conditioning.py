"""The `segments+llm` conditioning: LaVi-Bridge's TextAdapter (layout, math by hand, save/load, upstream
directories, errors), the LLM's per-token states, encode_long_prompt's [240 CLIP | N LLM] rows, adapter
directories on a pipeline, `train t2i --conditioning segments+llm`, generation and the alignment suite."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vision_long.checkpoints import CheckpointError
from vision_long.cli import main
from vision_long.diffusion import load_pipeline
from vision_long.diffusion.conditioning import (
    LLMBranch,
    LLMBranchConfig,
    TextAdapter,
    attach_llm_branch,
    branch_lora_enabled,
    load_llm_conditioning,
    load_text_adapter,
    save_llm_conditioning,
)
from vision_long.diffusion.preference import UNetLoRA
from vision_long.diffusion.prompts import PromptError, encode_long_prompt
from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder
from vision_long.eval.alignment import (
    AlignmentSuite,
    evaluate_t2i_alignment,
    load_cell_parser,
)
from vision_long.training.t2i import LLM_LORA_TARGETS

TOKENS = 20  # rows of the tiny LLM branch
PROMPT = "In the top-left cell there is a small red circle. In the center cell there is a large blue star."
NEGATIVE = "blurry"


def upstream_keys(in_dim: int, int_dim: int, out_dim: int) -> dict[str, tuple[int, ...]]:
    """LaVi-Bridge's TextAdapter state dict (modules/adapters.py: FeedForward(mult=4) = GEGLU(d, 4d) (proj:
    Linear(d, 8d)), Dropout, Linear(4d, d_out); ff1, ff2, norm1, norm2), written out by hand."""
    return {
        "ff1.net.0.proj.weight": (8 * in_dim, in_dim), "ff1.net.0.proj.bias": (8 * in_dim,),
        "ff1.net.2.weight": (int_dim, 4 * in_dim), "ff1.net.2.bias": (int_dim,),
        "ff2.net.0.proj.weight": (8 * int_dim, int_dim), "ff2.net.0.proj.bias": (8 * int_dim,),
        "ff2.net.2.weight": (out_dim, 4 * int_dim), "ff2.net.2.bias": (out_dim,),
        "norm1.weight": (in_dim,), "norm1.bias": (in_dim,), "norm2.weight": (int_dim,), "norm2.bias": (int_dim,),
    }


def random_adapter(in_dim: int, int_dim: int, out_dim: int, seed: int = 0) -> TextAdapter:
    torch.manual_seed(seed)
    adapter = TextAdapter(in_dim, int_dim, out_dim)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(std=0.5)
    return adapter.eval()


@pytest.fixture(scope="module")
def embedder(tiny_llm_dir):
    return LLMEmbedder(LLMConfig(name=tiny_llm_dir))  # BERT, 32 wide, 64 positions, MiniLM's WordPiece


@pytest.fixture(scope="module")
def branch(embedder):
    return LLMBranch(embedder, random_adapter(32, 16, 32), LLMBranchConfig(llm=embedder.config, tokens=TOKENS))


# ---- the adapter -----------------------------------------------------------------------------------------------
def test_adapter_layout_matches_lavi_bridge():
    adapter = TextAdapter(16, 8, 4)
    assert {k: tuple(v.shape) for k, v in adapter.state_dict().items()} == upstream_keys(16, 8, 4)
    with torch.device("meta"):  # LongSD's adapter: TextAdapter(1024, 896, 768)
        longsd = TextAdapter(1024, 896, 768)
    assert {k: tuple(v.shape) for k, v in longsd.state_dict().items()} == upstream_keys(1024, 896, 768)
    assert [m.p for m in adapter.modules() if isinstance(m, torch.nn.Dropout)] == [0.1, 0.1]


def test_adapter_forward_by_hand():
    adapter = random_adapter(16, 8, 4)
    w = adapter.state_dict()
    x = torch.randn(2, 5, 16)

    def feed_forward(h, prefix):
        value, gate = (h @ w[f"{prefix}.net.0.proj.weight"].T + w[f"{prefix}.net.0.proj.bias"]).chunk(2, dim=-1)
        return (value * 0.5 * gate * (1 + torch.erf(gate / 2**0.5))) @ w[f"{prefix}.net.2.weight"].T + w[f"{prefix}.net.2.bias"]

    def layer_norm(h, prefix):
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + 1e-5) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    expected = feed_forward(layer_norm(feed_forward(layer_norm(x, "norm1"), "ff1"), "norm2"), "ff2")
    torch.testing.assert_close(adapter(x), expected, atol=1e-5, rtol=0)


def test_adapter_round_trip_and_upstream_directories(tmp_path):
    adapter = random_adapter(16, 8, 4)
    x = torch.randn(1, 3, 16)
    adapter.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "diffusion_pytorch_model.safetensors").is_file()
    torch.testing.assert_close(load_text_adapter(tmp_path / "ours")(x), adapter(x), atol=0, rtol=0)
    # LongSD's s28750_adapter/ as upstream (diffusers 0.28 save_pretrained) writes it: three dims, upstream keys
    for name, weights in (("upstream", "diffusion_pytorch_model.safetensors"), ("bin", "diffusion_pytorch_model.bin")):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(
            {"_class_name": "TextAdapter", "_diffusers_version": "0.28.0", "in_dim": 16, "int_dim": 8, "out_dim": 4}))
        state = {k: v.half() for k, v in adapter.state_dict().items()}
        if weights.endswith(".bin"):
            torch.save(state, directory / weights)
        else:
            save_file(state, str(directory / weights))
        loaded = load_text_adapter(directory)
        assert loaded.config.mult == 4 and loaded.config.dropout == 0.1 and loaded.dtype == torch.float32
        reference = TextAdapter(16, 8, 4).eval()
        reference.load_state_dict({k: v.float() for k, v in state.items()})
        torch.testing.assert_close(loaded(x), reference(x), atol=0, rtol=0)


class NotATensor:
    """Pickled into a fake .bin: `weights_only=True` must refuse it."""


def test_adapter_errors(tmp_path):
    adapter = random_adapter(16, 8, 4)
    good = tmp_path / "good"
    adapter.save_pretrained(good)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_text_adapter(tmp_path / "nowhere")
    cases = {
        "bad-json": ("{nope", None, "not valid JSON"),
        "no-dims": (json.dumps({"in_dim": 16, "int_dim": 8}), None, "needs positive integers"),
        "no-weights": (None, None, "no adapter weights"),
        "wrong-key": (None, {**{k: v for k, v in adapter.state_dict().items() if k != "norm1.bias"},
                             "norm1.beta": torch.zeros(16)}, "missing keys [norm1.bias]"),
        "wrong-shape": (None, {**adapter.state_dict(), "norm2.weight": torch.zeros(9)}, "shape mismatches"),
    }
    for name, (config, state, message) in cases.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text(config or (good / "config.json").read_text())
        if state is not None:
            save_file(state, str(directory / "diffusion_pytorch_model.safetensors"))
        with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_text_adapter(directory)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((good / "config.json").read_text())
    torch.save({"norm1.weight": NotATensor()}, pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="unreadable adapter weights"):
        load_text_adapter(pickled)


# ---- the LLM's per-token states --------------------------------------------------------------------------------
def test_token_states_read_long_texts_window_by_window(embedder):
    text = " ".join(f"object {i} is a small green star." for i in range(12))
    content = embedder.tokenizer.encode(text)
    assert 62 < len(content) < 124 and embedder.max_length == 64
    windows = [[101, *content[:62], 102], [101, *content[62:], 102]]  # [CLS] ... [SEP] per window
    by_hand = torch.cat([embedder.model(input_ids=torch.tensor([w])).last_hidden_state[0] for w in windows])
    rows = len(content) + 4
    states = embedder.token_states([text, "a red circle"], rows + 3)
    assert states.shape == (2, rows + 3, 32) and not states.requires_grad
    torch.testing.assert_close(states[0, :rows], by_hand, atol=1e-5, rtol=0)
    assert states[0, rows:].abs().max() == 0
    short = embedder.model(input_ids=torch.tensor([embedder.tokenizer.with_special(embedder.tokenizer.encode(
        "a red circle"))])).last_hidden_state[0]
    torch.testing.assert_close(states[1, : len(short)], short, atol=1e-5, rtol=0)
    assert states[1, len(short):].abs().max() == 0
    cut = embedder.model(input_ids=torch.tensor([[101, *content[:10], 102]])).last_hidden_state[0, :10]
    torch.testing.assert_close(embedder.token_states([text], 10)[0], cut, atol=1e-5, rtol=0)  # reads what it keeps


def test_token_states_unmasked_is_longaligns_t5_call(embedder):
    ids = embedder.tokenizer.hf(["a red circle"], max_length=12, padding="max_length", truncation=True,
                                return_tensors="pt").input_ids
    assert (ids == 0).sum() > 0  # pad ids, read without mask
    torch.testing.assert_close(embedder.token_states(["a red circle"], 12, "unmasked"),
                               embedder.model(input_ids=ids).last_hidden_state, atol=0, rtol=0)
    with pytest.raises(ValueError, match="reads at most 64"):
        embedder.token_states(["a"], 65, "unmasked")
    with pytest.raises(ValueError, match="unknown pad_mode"):
        embedder.token_states(["a"], 4, "mean")


def test_branch_reads_each_text_once_and_adapts_only_real_rows(embedder, branch):
    long = " ".join(f"object {i} is a small green star." for i in range(12))  # cut at TOKENS rows
    texts = ["a red circle", "", long, "a red circle", ""]
    reference = branch.adapter(embedder.token_states(texts, TOKENS))  # every row, fill rows included
    torch.testing.assert_close(branch(texts), reference, atol=1e-5, rtol=0)
    unmasked = LLMBranch(embedder, branch.adapter, LLMBranchConfig(embedder.config, TOKENS, pad_mode="unmasked"))
    torch.testing.assert_close(unmasked(texts), branch.adapter(embedder.token_states(texts, TOKENS, "unmasked")),
                               atol=1e-5, rtol=0)
    assert [len(r) for r in embedder.token_rows(texts[:3], TOKENS)] == [5, 2, TOKENS]  # [CLS] a red circle [SEP]


# ---- encode_long_prompt(method="segments+llm") -----------------------------------------------------------------
def test_segments_llm_is_segment_rows_then_adapted_llm_rows(sd15, branch, prompt_400):
    out = encode_long_prompt(sd15, prompt_400, NEGATIVE, method="segments+llm", llm=branch, num_images_per_prompt=2)
    segments = encode_long_prompt(sd15, prompt_400, NEGATIVE, method="segments")
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (2, 240 + TOKENS, 32)
    for key, text in (("prompt_embeds", prompt_400), ("negative_prompt_embeds", NEGATIVE)):
        torch.testing.assert_close(out[key][:, :240], segments[key].expand(2, -1, -1), atol=1e-5, rtol=0)
        adapted = branch.adapter(branch.embedder.token_states([text], TOKENS))
        torch.testing.assert_close(out[key][:, 240:], adapted.expand(2, -1, -1), atol=1e-5, rtol=0)
    with pytest.raises(PromptError, match="needs an LLM adapter"):
        encode_long_prompt(sd15, PROMPT, method="segments+llm")
    narrow = LLMBranch(branch.embedder, random_adapter(32, 16, 24), branch.config)
    with pytest.raises(PromptError, match="24-wide rows but the text encoder 32-wide"):
        encode_long_prompt(sd15, PROMPT, method="segments+llm", llm=narrow)


def test_gradients_reach_the_adapter_only(sd15, branch):
    out = encode_long_prompt(sd15, [PROMPT, "A green star."], "", method="segments+llm", llm=branch)
    assert out["prompt_embeds"].requires_grad
    out["prompt_embeds"].square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.adapter.parameters())
    assert all(p.grad is None for p in sd15.text_encoder.parameters())
    branch.adapter.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert not encode_long_prompt(sd15, PROMPT, method="segments+llm", llm=branch)["prompt_embeds"].requires_grad


def test_sdxl_appends_rows_and_keeps_pooled(sdxl, embedder):
    wide = LLMBranch(embedder, random_adapter(32, 16, 64), LLMBranchConfig(llm=embedder.config, tokens=TOKENS))
    out = encode_long_prompt(sdxl, PROMPT, NEGATIVE, method="segments+llm", llm=wide)
    segments = encode_long_prompt(sdxl, PROMPT, NEGATIVE, method="segments")
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (1, 240 + TOKENS, 64)
    torch.testing.assert_close(out["pooled_prompt_embeds"], segments["pooled_prompt_embeds"], atol=1e-5, rtol=0)


# ---- adapter directories on a pipeline -------------------------------------------------------------------------
def _image(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    kwargs = encode_long_prompt(pipe, PROMPT, "", method="segments+llm")
    return pipe(**kwargs, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def test_adapter_directory_round_trip(sd15_dir, branch, tmp_path):
    pipe = load_pipeline(sd15_dir)
    lora = UNetLoRA.create(pipe.unet, rank=2, targets=LLM_LORA_TARGETS)
    assert any(path.endswith("ff.net.0.proj") for path in lora.config.layers)  # GEGLU adapted too
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(std=0.3)
    attach_llm_branch(pipe, LLMBranch(branch.embedder, branch.adapter, branch.config, lora))
    image = _image(pipe)
    save_llm_conditioning(branch.adapter, branch.config, lora, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "llm.json").read_text())["tokens"] == TOKENS
    loaded = load_pipeline(sd15_dir)
    loaded_branch = load_llm_conditioning(loaded, tmp_path / "adapter")
    assert not any(p.requires_grad for p in loaded_branch.adapter.parameters())
    assert np.array_equal(_image(loaded), image)
    with branch_lora_enabled(loaded, False):
        base = _image(loaded)
    assert np.abs(base - image).max() > 1e-3  # the LoRA is off inside the block ...
    assert np.array_equal(_image(loaded), image)  # ... and on again after it
    assert np.array_equal(base, _image(_with_branch(load_pipeline(sd15_dir), loaded_branch)))


def _with_branch(pipe, branch):
    attach_llm_branch(pipe, LLMBranch(branch.embedder, branch.adapter, branch.config))  # no LoRA: the base UNet
    return pipe


def test_adapter_directory_errors(sd15_dir, branch, tmp_path):
    pipe = load_pipeline(sd15_dir)
    with pytest.raises(CheckpointError, match="not an LLM adapter directory"):
        load_llm_conditioning(pipe, tmp_path)
    lora = UNetLoRA.create(load_pipeline(sd15_dir).unet, rank=2)
    narrow = save_llm_conditioning(random_adapter(32, 16, 24), branch.config, lora, tmp_path / "narrow")
    with pytest.raises(CheckpointError, match="24-wide rows but the UNet's cross-attention expects 32"):
        load_llm_conditioning(pipe, narrow)
    no_lora = tmp_path / "no-lora"
    branch.adapter.save_pretrained(no_lora)
    (no_lora / "llm.json").write_text(json.dumps(branch.config.to_dict()))
    with pytest.raises(CheckpointError, match="no lora/"):
        load_llm_conditioning(pipe, no_lora)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "llm.json").write_text(json.dumps({"llm": {"name": "x"}, "tokens": 0, "pad_mode": "zeros"}))
    with pytest.raises(CheckpointError, match="malformed LLM branch config"):
        load_llm_conditioning(pipe, tmp_path / "bad")


# ---- training, generation, evaluation --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(sd15_dir, tiny_llm_dir, tmp_path_factory):
    """One step of `train t2i --conditioning segments+llm` on the tiny pipeline with the tiny LLM, 6 x 6 scenes."""
    out = tmp_path_factory.mktemp("t2i-llm") / "run"
    argv = ["train", "t2i", "--conditioning", "segments+llm", "--pipeline", str(sd15_dir), "--llm", tiny_llm_dir,
            "--llm-tokens", str(TOKENS), "--adapter-width", "16", "--rank", "2", "--grids", "6", "--steps", "1",
            "--batch-size", "2", "--lr", "1e-2", "--warmup", "1", "--device", "cpu", "--out", str(out)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test _one_thread
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_train_t2i_segments_llm_one_step(trained, tiny_llm_dir):
    (record,) = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and {"loss", "mse"} <= set(record)
    run = json.loads((trained / "run.json").read_text())
    assert run["recipe"] == "t2i-segments+llm" and run["data"]["grids"] == [6] and run["llm"]["tokens"] == TOKENS
    adapter = load_text_adapter(trained / "adapter")
    assert (adapter.config.in_dim, adapter.config.int_dim, adapter.config.out_dim) == (32, 16, 32)
    assert adapter.config.dropout == 0.0
    assert adapter.ff2.net[2].weight.abs().max() > 0  # started at zero, moved by the step
    config = json.loads((trained / "adapter" / "llm.json").read_text())
    assert config == {"llm": {**LLMConfig(name=tiny_llm_dir).to_dict()}, "tokens": TOKENS, "pad_mode": "zeros"}
    assert (trained / "adapter" / "lora" / "model.safetensors").is_file() and not (trained / "checkpoint").exists()


def test_segments_llm_resumes_exactly(sd15_dir, tiny_llm_dir, tmp_path, monkeypatch):
    """The adapter trains beside the LoRA (the trainer's `aux`): an interrupted run resumes to the same weights."""
    from vision_long.training.shapescenes import SceneData
    from vision_long.training.t2i import LLMSettings, T2IRecipe, train_t2i
    from vision_long.training.trainer import OptimConfig

    def run(out):
        return train_t2i(T2IRecipe(
            out_dir=str(out), stage="unet", conditioning="segments+llm", pipeline=str(sd15_dir),
            llm=LLMSettings(llm=tiny_llm_dir, tokens=8, adapter_width=8, rank=2),
            data=SceneData(grids=(2,), batch_size=1, seed=1),
            optim=OptimConfig(steps=2, lr=1e-2, warmup=1, checkpoint_every=1), device="cpu"))

    straight = run(tmp_path / "a")
    original = SceneData.batch

    def crash_at_step_1(self, step, image_size):
        if step == 1:
            raise KeyboardInterrupt
        return original(self, step, image_size)

    monkeypatch.setattr(SceneData, "batch", crash_at_step_1)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(SceneData, "batch", original)
    resumed = run(tmp_path / "b")
    for name, a in load_text_adapter(straight).state_dict().items():
        assert torch.equal(a, load_text_adapter(resumed).state_dict()[name]), name
    lora_a, lora_b = (load_file(str(d / "lora" / "model.safetensors")) for d in (straight, resumed))
    assert all(torch.equal(v, lora_b[k]) for k, v in lora_a.items())


def test_generate_with_the_trained_adapter(trained, sd15_dir, tmp_path, capsys):
    out = tmp_path / "llm.png"
    argv = ["generate", "--prompt", PROMPT, "--pipeline", str(sd15_dir), "--adapter", str(trained / "adapter"),
            "--steps", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == "segments+llm" and record["prompt_embeds_shape"] == [1, 240 + TOKENS, 32]
    assert "segments+llm" in capsys.readouterr().out


def test_alignment_suite_runs_segments_llm_on_the_adapted_unet(trained, sd15_dir):
    parser = load_cell_parser()
    suite = AlignmentSuite(methods=("segments", "segments+llm"), n=1, grid=6, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="needs an LLM adapter"):
        evaluate_t2i_alignment(suite, parser, load_pipeline(sd15_dir))
    pipe = load_pipeline(sd15_dir)
    load_llm_conditioning(pipe, trained / "adapter")
    rows = evaluate_t2i_alignment(suite, parser, pipe)
    assert [r["method"] for r in rows] == ["segments", "segments+llm"]
    for r in rows:
        assert r["n_before_77"] + r["n_77_to_240"] + r["n_after_240"] == r["n_objects"]
        assert r["n_after_240"] > 0 and {"acc_before_77", "acc_after_77", "acc_77_to_240", "acc_after_240"} <= set(r)


def test_eval_command_loads_the_adapter_for_segments_llm(trained, sd15_dir, capsys):
    argv = ["eval", "--suite", "t2i-alignment", "--methods", "segments+llm", "--pipeline", str(sd15_dir), "--n", "1",
            "--grid", "6", "--steps", "1", "--batch-size", "1", "--json"]
    assert main(argv) == 2 and "needs an LLM adapter" in capsys.readouterr().err
    assert main([*argv, "--adapter", str(trained / "adapter")]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["method"] == "segments+llm" and row["adapter"] == str(trained / "adapter") and row["n"] == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--conditioning", "segments+llm", "--out", "x"], "starts from a trained pipeline: pass --pipeline DIR"),
        (["--conditioning", "segments+llm", "--stage", "vae", "--pipeline", "SD15", "--out", "x"], "not the VAE"),
        (["--stage", "unet", "--pipeline", "SD15", "--out", "x"], "--pipeline is for --conditioning segments+llm"),
        (["--out", "x"], "--stage is required"),
        (["--conditioning", "segments+llm", "--pipeline", "SDXL", "--out", "x"], "SD-1.x layouts only"),
    ],
)
def test_train_errors(argv, message, sd15_dir, sdxl_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(sd15_dir) if a == "SD15" else str(sdxl_dir) if a == "SDXL" else a for a in argv]
    assert main(["train", "t2i", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--method", "segments+llm"], "--method segments+llm needs an LLM branch"),
        (["--adapter", "A", "--method", "segments"], "--method segments would ignore the LLM branch"),
        (["--adapter", "A", "--longsd", "L"], "pass one"),
        (["--t5", "T"], "--t5 is LongSD's text model"),
        (["--longsd", "L"], "--longsd needs the Stable Diffusion 1.5 it was trained on"),
        (["--adapter", "nowhere"], "not an LLM adapter directory"),
    ],
)
def test_generate_errors(argv, message, sd15_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pipeline = [] if "--longsd" in argv else ["--pipeline", str(sd15_dir)]
    assert main(["generate", "--prompt", PROMPT, *pipeline, *argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_attached_branch_needs_no_argument(sd15_dir, branch):
    pipe = load_pipeline(sd15_dir)
    attach_llm_branch(pipe, branch)
    explicit = encode_long_prompt(pipe, PROMPT, method="segments+llm", llm=branch)
    torch.testing.assert_close(encode_long_prompt(pipe, PROMPT, method="segments+llm")["prompt_embeds"],
                               explicit["prompt_embeds"], atol=0, rtol=0)
    assert F.mse_loss(explicit["prompt_embeds"], explicit["negative_prompt_embeds"]) > 0
