"""`ask_image`, `draw_crops` and `vision-long ask` with a tiny random LMM saved to disk."""

import json

import pytest
from lmm_parts import tiny_lmm
from PIL import Image

from vision_long.cli import main
from vision_long.commands.lmm import KIND_CHOICES, ZOOM_CHOICES
from vision_long.lmm import ask as ask_module
from vision_long.lmm import ask_image, draw_crops, save_lmm, vqa_item
from vision_long.lmm.ask import (
    HIGH_COLOR,
    MEDIUM_COLOR,
    crops_used,
    default_lmm_path,
    resolve_lmm,
)
from vision_long.lmm.model import ZOOM_MODES
from vision_long.lmm.vqa import QUESTION_KINDS


@pytest.fixture(scope="module")
def model():
    return tiny_lmm()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    return save_lmm(model, tmp_path_factory.mktemp("lmm") / "model")


@pytest.fixture(scope="module")
def item():
    return vqa_item(11)


def test_ask_image_returns_answer_crops_and_scores(model, model_dir, item, default_encoder):
    answer = ask_image(item.image(), item.question, zoom="text", model=model, text_encoder=default_encoder,
                       max_new_tokens=3)
    assert answer.text == model.generate(item.image(), item.question, "text", default_encoder, max_new_tokens=3)
    assert len(answer.selection.indices) == model.config.zoom.text_k == len(answer.selection.scores)
    assert answer.selection.all_scores.shape == (len(answer.crops.high),)
    assert list(answer.selection.scores) == sorted(answer.selection.scores, reverse=True)
    from_dir = ask_image(item.image(), item.question, zoom="v1", model=model_dir, max_new_tokens=3)
    assert from_dir.text == ask_image(item.image(), item.question, zoom="v1", model=model, max_new_tokens=3).text


def test_draw_crops_outlines_what_reached_the_lm(model, item):
    image = item.image()
    for zoom in ("v1", "multires", "none"):
        answer = model.ask(image, item.question, zoom=zoom, max_new_tokens=1)
        drawn = draw_crops(image, answer)
        assert drawn.size == image.size and drawn is not image
        medium, high = crops_used(answer)
        expected_high = {"v1": 4 * model.config.zoom.v1_k, "multires": 36, "none": 0}[zoom]
        assert len(high) == expected_high and len(medium) == (0 if zoom == "none" else 4)
        for left, top, right, bottom in high:  # the top edge of each high crop, past its label, is yellow
            assert drawn.getpixel((int(right) - 2, int(top) + 1)) == HIGH_COLOR
        if zoom == "v1":
            assert any(drawn.getpixel((int(r) - 1, int(b) - 1)) == MEDIUM_COLOR for _, _, r, b in medium)
    with pytest.raises(ValueError, match="the answer's crops are of a"):
        draw_crops(Image.new("RGB", (100, 50)), answer)


def test_default_model_missing_says_how_to_build_it(tmp_path, monkeypatch, capsys, item):
    monkeypatch.setattr(ask_module, "DEFAULT_LMM", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="vision-long train lmm"):
        default_lmm_path()
    with pytest.raises(FileNotFoundError, match="build_default_lmm.sh"):
        resolve_lmm(None)
    path = tmp_path / "scene.png"
    item.image().save(path)
    assert main(["ask", str(path), item.question]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vision-long train lmm" in err
    with pytest.raises(TypeError, match="ZoomLMM, a directory or None"):
        resolve_lmm(3)


def test_cli_ask_prints_the_answer_and_writes_the_crops(model, model_dir, item, tmp_path, capsys):
    path, out = tmp_path / "scene.png", tmp_path / "crops.png"
    item.image().save(path)
    assert main(["ask", str(path), item.question, "--model", str(model_dir), "--zoom", "v1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == model.generate(path, item.question, zoom="v1") + "\n"
    assert Image.open(out).size == item.image().size
    assert main(["ask", str(path), item.question, "--model", str(model_dir), "--zoom", "v1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["zoom"] == "v1" and record["image_tokens"] > 0 and len(record["selected"]) == 4 * 2
    assert set(record["selected"][0]) == {"index", "box", "score"}
    assert main(["ask", str(tmp_path / "missing.png"), "what?", "--model", str(model_dir)]) == 2
    assert "not found" in capsys.readouterr().err


def test_ask_help_teaches_and_lists_the_library_zoom_modes(capsys):
    assert set(ZOOM_CHOICES) == set(ZOOM_MODES)
    assert KIND_CHOICES == QUESTION_KINDS
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--zoom" in out and "build_default_lmm.sh" in out
