"""The long-prompt alignment metric: the shipped cell parser on rendered scenes, the metric on hand-made cases,
the before/after-77 split, the `rendered` and `reconstructed` modes of the suite, training smoke and error paths."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from vision_long.checkpoints import CheckpointError, save_native
from vision_long.cli import main
from vision_long.data.scenes import (
    BACKGROUND_RGB,
    Scene,
    SceneObject,
    default_tokenizer,
    random_scene,
)
from vision_long.diffusion import pipelines
from vision_long.eval.alignment import (
    AlignmentSuite,
    CellParser,
    CellParserConfig,
    alignment_metrics,
    crop_cells,
    evaluate_t2i_alignment,
    evaluation_scenes,
    load_cell_parser,
    object_scores,
    parse_images,
    rendered_accuracy,
    vae_round_trip,
)
from vision_long.tokenization import CLIP_CONTEXT


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """A tiny CNN gains nothing from intra-op threads (tests/conftest.py: one_thread)."""


@pytest.fixture(scope="module")
def parser():
    return load_cell_parser()


def bare(obj: SceneObject | None) -> SceneObject | None:
    """What the parser can read of an object: color, shape and size."""
    return None if obj is None else SceneObject(shape=obj.shape, color=obj.color, size=obj.size)


def test_shipped_parser_reads_rendered_eval_scenes(parser):
    m = rendered_accuracy(parser, n=40, seed=1, grid=3, size=64)
    assert m["presence"] == 1.0 and m["empty_cells"] == 1.0
    assert min(m["color"], m["shape"], m["size"], m["acc_all"]) >= 0.98
    scenes = evaluation_scenes(5, seed=2, grid=3)
    parsed = parse_images(parser, [s.render(64) for s in scenes], 3)
    assert sum(p == tuple(bare(o) for o in s.objects) for s, p in zip(scenes, parsed, strict=True)) >= 4


def test_perfect_image_scores_one_and_blank_image_zero(parser):
    scene = random_scene(10_000_123, 3)
    truth = tuple(bare(o) for o in scene.objects)
    perfect = alignment_metrics([scene], [truth])
    assert perfect["acc_all"] == perfect["exact_all"] == perfect["empty_cells"] == 1.0
    assert perfect["n"] == 1 and perfect["n_objects"] == scene.num_objects
    blank = Image.new("RGB", (64, 64), BACKGROUND_RGB)
    empty = alignment_metrics([scene], parse_images(parser, [blank], 3))
    assert empty["acc_all"] == empty["presence"] == empty["color"] == 0.0 and empty["empty_cells"] == 1.0
    assert alignment_metrics([scene], parse_images(parser, [scene.render(64)], 3))["acc_all"] == 1.0


def test_partial_credit_per_attribute():
    obj = SceneObject("star", "red", "large")
    scene = Scene(2, (obj, None, None, None))
    wrong_color = alignment_metrics([scene], [(replace(obj, color="blue"), None, None, None)])
    assert wrong_color["acc_all"] == 0.75 and wrong_color["color"] == 0.0 and wrong_color["shape"] == 1.0
    hallucinated = alignment_metrics([scene], [(obj, obj, None, None)])
    assert hallucinated["acc_all"] == 1.0 and hallucinated["empty_cells"] == pytest.approx(2 / 3, abs=1e-4)


def test_object_scores_in_reading_order():
    star, circle = SceneObject("star", "red", "large"), SceneObject("circle", "blue", "small")
    scene = Scene(2, (star, None, None, circle))
    assert object_scores(scene, (replace(star, size="small"), circle, None, None)) == [0.75, 0.0]
    assert object_scores(scene, (star, None, None, circle)) == [1.0, 1.0]


def test_kept_object_scores_average_to_acc_all(parser):
    suite = AlignmentSuite(methods=("rendered",), n=6, seed=3, keep_object_scores=True)
    (result,) = evaluate_t2i_alignment(suite, parser)
    scores = [x for scene in result["object_scores"] for x in scene]
    assert len(result["object_scores"]) == 6 and len(scores) == result["n_objects"]
    assert round(sum(scores) / len(scores), 4) == result["acc_all"]
    (plain,) = evaluate_t2i_alignment(AlignmentSuite(methods=("rendered",), n=6, seed=3), parser)
    assert "object_scores" not in plain


def test_split_at_token_77():
    objects = tuple(SceneObject(s, c, "small", "striped", "white")
                    for s, c in zip(["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "circle",
                                     "square"], ["red", "green", "blue", "yellow", "purple", "orange", "black", "red",
                                                 "blue"], strict=True))
    scene = Scene(3, objects)
    spans = scene.sentence_spans(default_tokenizer())
    early = {i for i, start, _ in spans if start < CLIP_CONTEXT}
    assert 0 < len(early) < 9  # this caption crosses token 77 (about 17 tokens per sentence)
    parsed = tuple(bare(o) if i in early else None for i, o in enumerate(objects))
    m = alignment_metrics([scene], [parsed])
    assert (m["acc_before_77"], m["acc_after_77"]) == (1.0, 0.0)
    assert (m["n_before_77"], m["n_after_77"]) == (len(early), 9 - len(early))
    assert m["acc_all"] == round(len(early) / 9, 4)
    only_early = alignment_metrics([Scene(2, (objects[0], None, None, None))], [(bare(objects[0]), None, None, None)])
    assert only_early["acc_after_77"] is None and only_early["n_after_77"] == 0


def test_split_at_tokens_77_and_240():
    scene = random_scene(10_000_321, 6, fill=1.0)
    starts = {i: start for i, start, _ in scene.sentence_spans(default_tokenizer()) if i is not None}
    middle = {i for i, start in starts.items() if CLIP_CONTEXT <= start < 240}
    late = {i for i, start in starts.items() if start >= 240}
    assert middle and late and len(starts) == 36  # a full 6 x 6 caption runs far past token 240
    parsed = tuple(bare(o) if i in middle else None for i, o in enumerate(scene.objects))
    m = alignment_metrics([scene], [parsed])
    assert (m["acc_before_77"], m["acc_77_to_240"], m["acc_after_240"]) == (0.0, 1.0, 0.0)
    assert (m["n_before_77"], m["n_77_to_240"], m["n_after_240"]) == (36 - len(middle) - len(late), len(middle),
                                                                      len(late))
    assert m["n_after_77"] == len(middle) + len(late)
    assert m["acc_after_77"] == round(len(middle) / (len(middle) + len(late)), 4)
    three = alignment_metrics([random_scene(10_000_123, 3)], [(None,) * 9])
    assert three["acc_after_240"] is None and three["n_after_240"] == 0  # a 3 x 3 caption ends before 240


def test_crop_cells_any_resolution():
    scene = Scene(3, (None,) * 5 + (SceneObject("square", "blue", "large"),) + (None,) * 3)
    for size in (48, 64, 100):
        cells = crop_cells(scene.render(size), 3, 24)
        assert cells.shape == (9, 3, 24, 24) and 0 <= cells.min() and cells.max() <= 1
        gray = torch.tensor(BACKGROUND_RGB).float()[:, None, None] / 255
        off = (cells - gray).abs().amax(dim=(1, 2, 3))
        assert off[5] > 0.3 and off[[0, 1, 2, 3, 4, 6, 7, 8]].max() < 0.02


def test_rendered_suite_cli(capsys):
    assert main(["eval", "--suite", "t2i-alignment", "--methods", "rendered", "--n", "6", "--seed", "3", "--json"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    m = json.loads(line)
    assert m["method"] == "rendered" and m["n"] == 6 and m["image_size"] == 64 and m["acc_all"] >= 0.98
    assert {"acc_before_77", "acc_after_77", "acc_all", "n"} <= set(m) and m["pipeline"] is None


def test_reconstructed_parses_the_renders_after_the_pipelines_vae(parser):
    pipe = pipelines.load_pipeline(None)  # the shipped pipeline: its VAE loses some color, not the objects
    renders = [s.render(64) for s in evaluation_scenes(4, 0, 3)]
    rebuilt = vae_round_trip(pipe, renders, batch_size=3)  # two batches
    assert [im.size for im in rebuilt] == [(64, 64)] * 4
    diff = [np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean() for a, b in zip(renders, rebuilt)]
    assert 0 < min(diff) and max(diff) < 20
    (m,) = evaluate_t2i_alignment(AlignmentSuite(methods=("reconstructed",), n=4), parser, pipe)
    assert m["method"] == "reconstructed" and m["steps"] is None and m["image_size"] == 64
    assert m["presence"] >= 0.9 and m["acc_all"] < 1


def test_train_cell_parser_smoke(tmp_path, capsys):
    out = tmp_path / "parser"
    argv = ["train", "cell-parser", "--steps", "2", "--batch-size", "32", "--held-out", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "held-out 3x3 at 64 px" in capsys.readouterr().out
    assert isinstance(load_cell_parser(out / "model"), CellParser)
    held_out = json.loads((out / "held_out.json").read_text())
    assert next((m["grid"], m["image_size"]) for m in held_out) == (3, 64)
    assert len((out / "log.jsonl").read_text().splitlines()) == 1


def test_errors(tmp_path, monkeypatch, capsys, parser):
    with pytest.raises(CheckpointError, match="not a vision_long checkpoint"):
        load_cell_parser(tmp_path / "nothing")
    torch.manual_seed(0)
    from vision_long.diffusion.preference import LoRASettings, UNetLoRA

    save_native(UNetLoRA(LoRASettings(layers={"a.to_q": [4, 4]})), tmp_path / "lora")
    with pytest.raises(CheckpointError, match="not a cell parser"):
        load_cell_parser(tmp_path / "lora")
    with pytest.raises(ValueError, match="cell_pixels"):
        CellParser(CellParserConfig(cell_pixels=20))
    scene = random_scene(1, 2)
    with pytest.raises(ValueError, match="parsed images"):
        alignment_metrics([scene], [])
    with pytest.raises(ValueError, match="parsed cells"):
        alignment_metrics([scene], [(None,) * 9])
    with pytest.raises(ValueError, match="unknown methods"):
        AlignmentSuite(methods=("segments", "magic"))
    with pytest.raises(ValueError, match="needs a pipeline"):
        evaluate_t2i_alignment(AlignmentSuite(methods=("segments",), n=1), parser)
    monkeypatch.setattr(pipelines, "DEFAULT_PIPELINE", tmp_path / "no-pipeline")
    assert main(["eval", "--suite", "t2i-alignment", "--methods", "truncate,segments", "--n", "2"]) == 2
    assert "t2i-shapescenes) is not installed" in capsys.readouterr().err
    assert main(["eval", "--suite", "t2i-alignment", "--methods", "segments,bogus"]) == 2
    assert "unknown methods ['bogus']" in capsys.readouterr().err
