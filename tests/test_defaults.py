"""The embedded default models load offline, and the README's main job runs on them."""

import pytest

from vision_long import load_encoder
from vision_long.cli import main


@pytest.fixture(scope="module")
def default():
    return load_encoder("default")


def test_default_models_load_offline(default):
    assert default.family == "longclip" and default.context_length == 248
    assert default.config.text.keep_positions == 20
    base = load_encoder("default-77")
    assert base.context_length == 77
    text = "In the top-left cell there is a large red circle. " * 12  # about 150 tokens
    assert default.encode_text([text]).shape == (1, default.embed_dim)
    with pytest.raises(ValueError, match="context length is 77"):
        base.encode_text([text])


def test_quickstart_main_job(tmp_path, capsys):
    out = tmp_path / "quickstart.png"
    assert main(["quickstart", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "The deciding sentence comes after token 77" in printed
    assert "default: " in printed and "default-77: " in printed
    assert printed.count("<- the query's image") == 2  # both rankings list the query's image in their top 5
    from PIL import Image

    with Image.open(out) as image:
        assert image.size[0] >= 400 and image.getextrema() != ((255, 255),) * 3


def test_default_lmm_reads_the_zoomed_crop():
    """The shipped LMM loads offline and answers color / shape questions about small objects from the crop its
    text zoom selects, which the global view alone cannot resolve (500-item numbers: RESULTS.md, lmm_vqa_modes)."""
    from vision_long.eval.vqa import evaluate_vqa
    from vision_long.lmm.ask import resolve_lmm
    from vision_long.lmm.vqa import VQAConfig

    model = resolve_lmm(None)
    config = VQAConfig(kinds=("color", "shape"))
    zoomed = evaluate_vqa(model, n=16, seed=0, zoom="text", config=config)
    global_only = evaluate_vqa(model, n=16, seed=0, zoom="none", config=config)
    assert zoomed["accuracy"] >= 0.75 and global_only["accuracy"] <= 0.5, (zoomed, global_only)
    assert zoomed["image_tokens"] == 156 and global_only["image_tokens"] == 66
