"""The long-retrieval suite on a tiny model: keys, value ranges, and the 77-token model's hard-negative chance level."""

import json

import pytest
import torch
from reference_clip import random_openai_state_dict

from vision_long.cli import main


def test_long_retrieval_cli_json_and_plot(tmp_path, capsys):
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for seed, path in enumerate(paths):
        torch.save(random_openai_state_dict(vision_width=128, patch=8, grid=8, seed=seed), path)  # 64 px images
    plot = tmp_path / "recall.png"
    assert main(["eval", "--suite", "long-retrieval", "--model", *(f"openai:{p}" for p in paths),
                 "--n", "16", "--json", "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    metrics = json.loads(lines[0])
    for key in ("t2i_r1_long", "i2t_r1_long", "t2i_r1_short", "i2t_r1_short", "t2i_r1_hard"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["n"] == 16 and metrics["n_hard_groups"] == 4 and metrics["context_length"] == 248
    assert metrics["model"] == f"openai:{paths[0]}"
    assert plot.stat().st_size > 1000


def test_77_token_model_is_at_chance_on_hard_negatives(tmp_path, capsys):
    """Hard-negative captions are identical within a group's first 77 tokens, so a 77-token model ties."""
    path = tmp_path / "clip.pt"
    torch.save(random_openai_state_dict(vision_width=128, patch=8, grid=8, seed=2), path)
    argv = ["eval", "--suite", "long-retrieval", "--model", f"openai:{path}", "--n", "16", "--json", "--no-stretch"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["context_length"] == 77 and metrics["t2i_r1_hard"] == 0.25


def test_hard_negative_recall_is_split_by_the_changed_attribute(tmp_path, capsys):
    """The per-attribute R@1s are the group-weighted parts of t2i_r1_hard."""
    from vision_long.eval.long_retrieval import changed_attribute, suite_hard_groups

    path = tmp_path / "clip.pt"
    torch.save(random_openai_state_dict(vision_width=128, patch=8, grid=8, seed=3), path)
    assert main(["eval", "--suite", "long-retrieval", "--model", f"openai:{path}", "--n", "32", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    attributes = [changed_attribute(group) for group in suite_hard_groups(32, seed=0, grid=3)]
    n_color = attributes.count("color")
    assert 0 < n_color < 8  # both kinds occur among these 8 groups
    weighted = (n_color * metrics["t2i_r1_hard_color"] + (8 - n_color) * metrics["t2i_r1_hard_shape"]) / 8
    assert abs(weighted - metrics["t2i_r1_hard"]) < 1e-3


def test_changed_attribute_names_what_a_hard_group_changes():
    from vision_long.data.scenes import hard_negative_group
    from vision_long.eval.long_retrieval import changed_attribute, changed_object

    group = hard_negative_group(10_000_123, 3)
    attribute = changed_attribute(group)
    base, other = group[0].objects, group[1].objects
    (index, a, b), = [(i, x, y) for i, (x, y) in enumerate(zip(base, other)) if x != y]
    assert changed_object(group) == index
    assert getattr(a, attribute) != getattr(b, attribute)
    assert all(getattr(a, name) == getattr(b, name) for name in ("color", "shape") if name != attribute)
    with pytest.raises(ValueError, match="exactly one object"):
        changed_attribute([group[0], group[0]])
