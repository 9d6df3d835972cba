"""`vision-long train lmm`: tokenizer, LM configs, seeded batches, the model it builds and a two-step run."""

import dataclasses
import json

import pytest
import torch

from vision_long.cli import build_parser, main
from vision_long.commands.train.lmm import lmm_recipe_from_args
from vision_long.data.scenes import MAX_GRID, MIN_GRID, TRAIN_SEEDS
from vision_long.lmm import VQAConfig, load_lmm, save_lmm, vqa_item, vqa_vocabulary
from vision_long.lmm.model import IMAGE_TOKEN, SEPARATOR_TOKEN
from vision_long.lmm.training import (
    LanguageModelConfig,
    LMMRecipe,
    VQABatches,
    build_language_model,
    build_lmm,
    fit_text_zoom_head,
    max_image_tokens,
    train_lmm,
    vqa_tokenizer,
)
from vision_long.training.trainer import OptimConfig

TINY_LM = LanguageModelConfig(width=32, layers=1, heads=2, intermediate=64, max_positions=512)


def tiny_recipe(out_dir, **changes) -> LMMRecipe:
    """Two steps of two items on one-layer LMs, checkpointing after the first step."""
    recipe = LMMRecipe(
        out_dir=str(out_dir), lm=TINY_LM, zoom=("none", "v1"), data=VQABatches(batch_size=2, seed=3),
        optim=OptimConfig(steps=2, lr=1e-3, warmup=1, checkpoint_every=1, log_every=1),
    )
    return dataclasses.replace(recipe, **changes)


def test_tokenizer_covers_every_question_and_answer_without_unknown_words():
    tokenizer = vqa_tokenizer()
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["[UNK]", "[PAD]", "<s>", "</s>"]
    configs = [VQAConfig(grid=grid, image_size=64, object_size=size) for grid in range(MIN_GRID, MAX_GRID + 1)
               for size in ("small", None)]
    for seed in range(120):
        item = vqa_item(seed, configs[seed % len(configs)])
        for text in (f"Question: {item.question} Answer:", item.answer):
            ids = tokenizer(text)["input_ids"]
            assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(tokenizer(" " + item.answer)["input_ids"]) == item.answer
    assert set(vqa_vocabulary()) <= set(tokenizer.get_vocab())
    assert tokenizer("WHAT color")["input_ids"] == tokenizer("what color")["input_ids"]  # lower-cased
    assert tokenizer("What is a zebra?")["input_ids"][3] == tokenizer.unk_token_id


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_language_models_take_the_tokenizer_special_ids(kind):
    tokenizer = vqa_tokenizer()
    lm = build_language_model(dataclasses.replace(TINY_LM, kind=kind), tokenizer)
    assert lm.get_input_embeddings().num_embeddings == len(tokenizer)
    assert (lm.config.eos_token_id, lm.config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="kind"):
        LanguageModelConfig(kind="mamba")
    with pytest.raises(ValueError, match="multiple of heads"):
        LanguageModelConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="layers must be positive"):
        LanguageModelConfig(layers=0)


def test_batches_are_a_function_of_seed_and_step():
    batches = VQABatches(VQAConfig(), batch_size=3, seed=1)
    first = batches.dataset(5)
    assert list(first.seeds) == list(VQABatches(VQAConfig(), batch_size=3, seed=1).dataset(5).seeds)
    assert len(first) == 3 and all(seed in TRAIN_SEEDS for seed in first.seeds)
    assert not set(first.seeds) & set(batches.dataset(6).seeds)
    assert not set(first.seeds) & set(VQABatches(VQAConfig(), batch_size=3, seed=2).dataset(5).seeds)
    with pytest.raises(ValueError, match="batch_size"):
        VQABatches(batch_size=0)


def test_every_other_training_item_has_a_small_grid():
    """The recipe fix for a model stuck at the answer prior: half the items are 2 x 2 / 3 x 3 scenes, whose objects
    fill a large share of every crop; the others are the evaluation's scenes."""
    batches = VQABatches(VQAConfig(), batch_size=8, seed=0)
    grids = [batches.dataset(0).item(i).scene.grid for i in range(8)]
    assert grids == [6, 2, 6, 3, 6, 2, 6, 3]
    assert batches.config(0) == VQAConfig() and batches.config(3) == VQAConfig(grid=3)
    alone = VQABatches(VQAConfig(), batch_size=4, easy_grids=())
    assert {alone.dataset(1).item(i).scene.grid for i in range(4)} == {6}
    with pytest.raises(ValueError, match="grid must be in"):
        VQABatches(easy_grids=(1,))


def test_kind_curriculum_adds_kinds_at_their_start_steps():
    batches = VQABatches(VQAConfig(kinds=("color", "shape", "exists")), batch_size=8, easy_grids=(),
                         kind_starts=(3, 5))
    assert [batches.kinds_at(step) for step in (0, 2, 3, 4, 5, 99)] == [
        ("color",), ("color",), ("color", "shape"), ("color", "shape"), ("color", "shape", "exists"),
        ("color", "shape", "exists")]
    assert {batches.dataset(2).item(i).kind for i in range(8)} == {"color"}
    assert {batches.dataset(3).item(i).kind for i in range(8)} <= {"color", "shape"}
    assert VQABatches(kind_starts=()).kinds_at(0) == VQAConfig().kinds
    for starts in ((3,), (0, 5), (5, 3), (1, 2, 3)):
        with pytest.raises(ValueError, match="kind_starts"):
            VQABatches(kind_starts=starts)


def test_build_lmm_freezes_a_cut_default_tower(tmp_path, default_encoder):
    model = build_lmm(tiny_recipe(tmp_path))
    tower = model.vision_tower
    assert tower.config.num_hidden_layers == default_encoder.config.vision.layers - 1  # penultimate layer, cut
    assert model.config.vision_layer == -1 and model.config.resolution.crop_size == 64
    assert not any(p.requires_grad for p in tower.parameters())
    assert (model.feature_std != 1).all() and (model.feature_mean != 0).any()  # standardized with training crops
    assert all(p.requires_grad for p in [*model.projector.parameters(), *model.language_model.parameters()])
    assert len(model.tokenizer) == model.language_model.get_input_embeddings().num_embeddings
    assert model.tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, SEPARATOR_TOKEN]) == [
        model.config.image_token_id, model.config.separator_token_id]
    # 1 + 64 + 1 for the global view, 40 pooled crops of 1 + 2 x 2 + 1
    assert max_image_tokens(model) == 66 + 40 * 6
    with pytest.raises(ValueError, match="at least 370 positions"):
        build_lmm(tiny_recipe(tmp_path, lm=dataclasses.replace(TINY_LM, kind="gpt2", max_positions=300)))
    with pytest.raises(ValueError, match="pooled_grid"):
        build_lmm(tiny_recipe(tmp_path, pooled_grid=3))
    with pytest.raises(ValueError, match="zoom must be"):
        tiny_recipe(tmp_path, zoom=("all",))


def test_two_step_run_trains_the_projector_and_lm_only(tmp_path):
    recipe = tiny_recipe(tmp_path / "run")
    states = []
    for _ in range(2):  # the initialisation is a function of the seed: the one train_lmm starts from
        torch.manual_seed(recipe.data.seed)
        states.append(build_lmm(recipe).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    model = train_lmm(recipe)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(row["loss"] > 0 for row in log)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe"] == "lmm" and run["zoom"] == ["none", "v1"] and run["lm"]["width"] == 32
    trained, initial = model.state_dict(), states[0]
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    assert changed and not any(k.startswith("vision_tower.") for k in changed)
    assert any(k.startswith("projector.") for k in changed) and any(k.startswith("language_model.") for k in changed)
    loaded = load_lmm(tmp_path / "run" / "model")  # with its tokenizer
    item = vqa_item(TRAIN_SEEDS[0])
    ask = {"zoom": "none", "max_new_tokens": 3}
    assert loaded.ask(item.image(), item.question, **ask).text == model.ask(item.image(), item.question, **ask).text
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_text_zoom_run_fits_its_head_first_and_keeps_it_frozen(tmp_path, default_encoder):
    recipe = tiny_recipe(tmp_path / "run", zoom=("text",), zoom_head_items=6)
    model = train_lmm(recipe)
    report = json.loads((tmp_path / "run" / "zoom_head.json").read_text())
    assert 0 < report["questions"] <= 6 and 0 <= report["top1_held_out"] <= 1 and report["loss_last"] > 0
    assert load_lmm(tmp_path / "run" / "model").config.zoom.text_dim == default_encoder.embed_dim
    torch.manual_seed(recipe.data.seed)  # what train_lmm does before the LM trains
    fitted = build_lmm(recipe, default_encoder)
    assert fit_text_zoom_head(fitted, default_encoder, recipe) == report
    trained = model.zoom_head.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in fitted.zoom_head.state_dict().items())
    assert not any(p.requires_grad for p in model.zoom_head.parameters())
    assert build_lmm(tiny_recipe(tmp_path, zoom=("text",), zoom_head_items=0)).zoom_head is None
    with pytest.raises(ValueError, match="needs its text_encoder"):
        build_lmm(tiny_recipe(tmp_path, zoom=("text",)))
    with pytest.raises(ValueError, match="zoom_head_items"):
        tiny_recipe(tmp_path, zoom_head_items=-1)


def test_an_fp16_install_loads_in_fp32(tmp_path):
    """What scripts/build_default_lmm.sh does to install the trained model at half the size."""
    model = build_lmm(tiny_recipe(tmp_path)).eval()
    fp32_dir = save_lmm(model, tmp_path / "fp32")
    fp16_dir = save_lmm(load_lmm(fp32_dir, dtype=torch.float16), tmp_path / "fp16")
    installed = load_lmm(fp16_dir)
    assert all(p.dtype == torch.float32 for p in installed.parameters())
    original = model.state_dict()
    for key, value in installed.state_dict().items():
        assert torch.equal(value, original[key].half().float()), key
    sizes = [(path / "model.safetensors").stat().st_size for path in (fp16_dir, fp32_dir)]
    assert sizes[0] < 0.55 * sizes[1]


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    whole = train_lmm(tiny_recipe(tmp_path / "whole")).state_dict()
    dataset = VQABatches.dataset

    def fail_at_step_1(self, step):
        if step == 1:
            raise KeyboardInterrupt
        return dataset(self, step)

    monkeypatch.setattr(VQABatches, "dataset", fail_at_step_1)
    with pytest.raises(KeyboardInterrupt):
        train_lmm(tiny_recipe(tmp_path / "cut"))
    assert (tmp_path / "cut" / "checkpoint").is_dir()
    monkeypatch.setattr(VQABatches, "dataset", dataset)
    resumed = train_lmm(tiny_recipe(tmp_path / "cut")).state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_cli_defaults_are_the_recipe_defaults_and_options_reach_it():
    args = build_parser().parse_args(["train", "lmm", "--out", "runs/x"])
    assert lmm_recipe_from_args(args) == LMMRecipe(out_dir="runs/x")
    args = build_parser().parse_args(["train", "lmm", "--out", "o", "--zoom", "text", "none", "--lm", "gpt2",
                                      "--pooled-grid", "4", "--text-k", "6", "--batch-size", "3", "--steps", "9"])
    recipe = lmm_recipe_from_args(args)
    assert recipe.zoom == ("text", "none") and recipe.lm.kind == "gpt2" and recipe.pooled_grid == 4
    assert recipe.zoom_config.text_k == 6 and recipe.data.batch_size == 3 and recipe.optim.steps == 9
    args = build_parser().parse_args(["train", "lmm", "--out", "o", "--kinds", "color", "--easy-grids"])
    recipe = lmm_recipe_from_args(args)
    assert recipe.data.vqa.kinds == ("color",) and recipe.data.easy_grids == ()
    assert {recipe.data.dataset(0).item(i).kind for i in range(8)} == {"color"}
    args = build_parser().parse_args(["train", "lmm", "--out", "o", "--kinds", "color", "shape", "--kind-starts", "7"])
    assert lmm_recipe_from_args(args).data.kind_starts == (7,)


def test_cli_two_step_run(tmp_path, capsys):
    argv = ["train", "lmm", "--out", str(tmp_path / "cli"), "--steps", "2", "--warmup", "1", "--batch-size", "1",
            "--width", "32", "--layers", "1", "--heads", "2", "--intermediate", "64", "--zoom", "none"]
    assert main(argv) == 0
    assert "vision-long ask" in capsys.readouterr().out
    assert load_lmm(tmp_path / "cli" / "model").config.language_model["hidden_size"] == 32


def test_train_lmm_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["train", "lmm", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--zoom multires text v1 none" in out and "s per step" in out
