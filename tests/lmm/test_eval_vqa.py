"""The `vqa` evaluation suite: exact-match scoring, image-token counts, disjoint seeds, the `eval` command."""

import json
from dataclasses import replace

import pytest
from lmm_parts import tiny_lmm

from vision_long.cli import main
from vision_long.data.scenes import EVAL_SEEDS
from vision_long.eval import vqa as vqa_suite
from vision_long.eval.vqa import evaluate_vqa, normalize_answer
from vision_long.lmm import save_lmm, vqa_item

GLOBAL_BLOCK = 1 + 4 * 4 + 1  # the tiny tower's global view: CLS + 4 x 4 patches, and its separator
POOLED_BLOCK = 1 + 2 * 2 + 1


@pytest.fixture(scope="module")
def model():
    return tiny_lmm()


def test_normalize_answer():
    assert normalize_answer(" Red. ") == "red" == normalize_answer("RED!")
    assert normalize_answer("light  blue?") == "light blue"
    assert normalize_answer("") == ""


def test_accuracy_is_exact_match_of_normalized_answers(model, monkeypatch):
    items = []  # what the suite asks about, in order

    def recording_item(seed, config):
        items.append(vqa_item(seed, config))
        return items[-1]

    ask = model.ask

    def oracle(image, question, zoom, text_encoder=None):  # right (upper case, punctuated) for even seeds only
        answer = ask(image, question, zoom=zoom, text_encoder=text_encoder, max_new_tokens=1)
        item = items[-1]
        assert question == item.question
        return replace(answer, text=f" {item.answer.upper()}." if item.seed % 2 == 0 else "no idea")

    monkeypatch.setattr(vqa_suite, "vqa_item", recording_item)
    monkeypatch.setattr(model, "ask", oracle)
    result = evaluate_vqa(model, n=6, seed=1, zoom="none")
    seeds = [item.seed for item in items]
    assert seeds == list(EVAL_SEEDS[6:12])  # seed 1 with n = 6: items 6..11 of the evaluation split
    assert result["accuracy"] == sum(s % 2 == 0 for s in seeds) / 6
    assert result["image_tokens"] == GLOBAL_BLOCK and result["n"] == 6 and result["zoom"] == "none"
    assert set(result["by_kind"]) == {item.kind for item in items}


@pytest.mark.parametrize("zoom, crops", [("multires", 40), ("v1", 4 + 4 * 2), ("text", 4 + 3)])
def test_image_tokens_count_the_zoom_modes_crops(model, zoom, crops):
    result = evaluate_vqa(model, n=2, zoom=zoom)
    assert result["image_tokens"] == GLOBAL_BLOCK + crops * POOLED_BLOCK
    assert 0 <= result["accuracy"] <= 1 and set(result) >= {"accuracy", "image_tokens", "n", "zoom", "seed"}
    assert (result["zoom_found"] is None) == (zoom == "multires")  # v1 and text select; multires keeps all
    assert result["zoom_found"] is None or 0 <= result["zoom_found"] <= 1


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="zoom must be one of"):
        evaluate_vqa(model, n=1, zoom="all")
    with pytest.raises(ValueError, match="n must be positive"):
        evaluate_vqa(model, n=0)
    with pytest.raises(ValueError, match="seed must be non-negative"):
        evaluate_vqa(model, n=1, seed=-1)
    with pytest.raises(ValueError, match="outside the"):
        evaluate_vqa(model, n=600_000, seed=1)
    with pytest.raises(TypeError, match="ZoomLMM"):
        evaluate_vqa("default", n=1)


def test_eval_command_prints_one_json_object(model, tmp_path, capsys):
    path = save_lmm(model, tmp_path / "lmm")
    argv = ["eval", "--suite", "vqa", "--model", str(path), "--zoom", "v1", "--n", "3", "--seed", "2", "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == str(path) and record["zoom"] == "v1" and record["n"] == 3 and record["seed"] == 2
    assert record["image_tokens"] == GLOBAL_BLOCK + 12 * POOLED_BLOCK and 0 <= record["accuracy"] <= 1
    assert main(["eval", "--suite", "vqa", "--model", str(path), "--zoom", "none", "--n", "2"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", "--suite", "vqa", "--model", str(path), "--zoom", "none", "--n", "4", "--kinds", "shape",
                 "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["by_kind"]) == {"shape"}
    assert main(["eval", "--suite", "vqa", "--model", str(tmp_path / "nothing"), "--n", "1"]) == 2
    assert "not a vision_long checkpoint" in capsys.readouterr().err
    assert main(["eval", "--suite", "vqa", "--model", str(path), "--n", "1", "--plot", "x.png"]) == 2
    assert "--plot is for the retrieval suites" in capsys.readouterr().err


def test_eval_help_lists_the_vqa_suite(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "vqa" in out and "--zoom" in out and "--suite vqa --zoom text --n 500" in out
