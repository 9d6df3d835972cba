"""What the demo's tabs do, without the page: token zones, search, generate, ask, and their error messages."""

import pytest
from PIL import Image

from vision_long.demo.backend import (
    CLIP_CONTEXT,
    CUT,
    KEPT,
    LONG_ONLY,
    MAX_QUERY_CHARS,
    DemoBackend,
    DemoConfig,
    DemoInputError,
    token_zones,
    words_within,
)
from vision_long.diffusion.pipelines import PipelineError
from vision_long.tokenization import CLIPTokenizer


def words_plus_two(text: str) -> int:
    """A tokenizer with one id per word, plus start and end."""
    return len(text.split()) + 2


def test_token_zones_cut_at_the_hand_computed_words():
    text = " ".join(f"w{i}" for i in range(100))
    zones = token_zones(text, words_plus_two, model_context=90)
    assert [label for _, label in zones] == [KEPT, LONG_ONLY, CUT]
    assert [len(span.split()) for span, _ in zones] == [75, 13, 12]  # 75 + 2 = 77, 88 + 2 = 90
    assert "".join(span for span, _ in zones) == text
    assert token_zones("a b c", words_plus_two, 248) == [("a b c", KEPT)]
    # a model with fewer positions than CLIP: only its own cut
    assert [len(s.split()) for s, _ in token_zones(text, words_plus_two, 12)] == [10, 90]


def test_token_zones_with_the_real_clip_tokenizer_keep_whole_words_within_77():
    tokenizer = CLIPTokenizer()
    text = "In the top-left cell there is a large striped red hexagon with a white outline. " * 20
    kept, long_only, cut = (span for span, _ in token_zones(text, tokenizer.count_tokens, 248))
    assert tokenizer.count_tokens(kept.rstrip()) <= CLIP_CONTEXT < tokenizer.count_tokens(kept + long_only.split()[0])
    assert tokenizer.count_tokens((kept + long_only).rstrip()) <= 248
    assert tokenizer.count_tokens(kept + long_only + cut.split()[0]) > 248
    assert words_within("", tokenizer.count_tokens, 77) == 0


def test_search_ranks_the_gallery_and_shows_the_cut(backend):
    caption = backend.example_query()
    result = backend.search(caption, k=5)
    assert len(result.gallery) == len(result.ids) == 5
    assert result.scores == sorted(result.scores, reverse=True)
    assert [label for _, label in result.zones] == [KEPT, LONG_ONLY]  # a 3x3 caption: 77 < tokens <= 248
    assert "".join(span for span, _ in result.zones) == caption
    assert [caption.startswith(c.split("  ", 1)[1].rstrip(".")) for _, c in result.gallery][:1] == [True]
    assert result.ids[0] == "scene_0007"  # the example query is scene 7's caption
    image_result = backend.search("", backend.search(caption, k=1).gallery[0][0], k=3)
    assert len(image_result.gallery) == 3 and image_result.zones == []


def test_a_second_backend_reuses_the_gallery_index(demo_config, backend):
    again = DemoBackend(demo_config, progress=False)
    assert again.db == backend.db
    assert again.index.count() == backend.index.count() == demo_config.gallery_size


def test_another_encoder_under_the_same_spec_gets_its_own_gallery(demo_config, backend, monkeypatch):
    import torch

    from vision_long.commands import common

    load = common.load_model

    def perturbed(spec, device=None):
        model = load(spec, device)
        with torch.no_grad():
            model.text_projection.mul_(-1)
        return model

    monkeypatch.setattr(common, "load_model", perturbed)
    other = DemoBackend(demo_config, progress=False)
    assert other.db != backend.db and other.index.count() == demo_config.gallery_size


@pytest.mark.parametrize("text, image, k, message", [
    ("", None, 5, "type a description or upload an image"),
    ("x" * (MAX_QUERY_CHARS + 1), None, 5, "the limit is"),
    ("a red circle", None, 0, "results must be between"),
    ("", "not an image", 5, "expected an image"),
])
def test_search_errors(backend, text, image, k, message):
    with pytest.raises(DemoInputError, match=message):
        backend.search(text, image, k)


def test_oversized_images_are_refused(backend):
    small = DemoBackend.__new__(DemoBackend)
    small.config = DemoConfig(max_image_pixels=100)
    with pytest.raises(DemoInputError, match="the limit is 100 pixels"):
        small._check_image(Image.new("RGB", (20, 20)))


def test_generate_puts_truncate_beside_the_method_with_the_same_seed(backend):
    prompt, truth = backend.example_prompt(1)
    pair = backend.generate(prompt, "segments", seed=3, steps=2)
    again = backend.generate(prompt, "truncate", seed=3, steps=2)
    size = backend.pipeline().unet.config.sample_size * backend.pipeline().vae_scale_factor
    assert pair.image.size == pair.baseline.size == (size, size)
    assert again.image.tobytes() == pair.baseline.tobytes()  # same seed, same truncate image
    assert " ".join(row[2] for row in pair.segments) == prompt  # one row per sentence, in order
    assert [row[0] for row in pair.segments] == list(range(1, prompt.count(".") + 1))
    assert truth.size == (128, 128)


@pytest.mark.parametrize("prompt, method, steps, message", [
    (" ", "segments", 2, "type a prompt"),
    ("a red circle", "magic", 2, "unknown method"),
    ("a red circle", "segments", 0, "steps must be between"),
])
def test_generate_errors(backend, prompt, method, steps, message):
    with pytest.raises(DemoInputError, match=message):
        backend.generate(prompt, method, 0, steps)


def test_missing_default_pipeline_says_how_to_build_it(backend, monkeypatch, tmp_path):
    from vision_long.diffusion import pipelines

    monkeypatch.setattr(pipelines, "DEFAULT_PIPELINE", tmp_path / "absent")
    fresh = DemoBackend.__new__(DemoBackend)
    fresh.__dict__.update(backend.__dict__, _pipe=None, config=DemoConfig(pipeline=None))
    with pytest.raises(PipelineError, match="build_default_t2i.sh"):
        fresh.pipeline()


def test_ask_answers_and_outlines_the_crops(backend):
    image, question = backend.example_scene(2)
    result = backend.ask(image, question, "v1")
    model = backend.lmm()
    assert result.answer == model.generate(image, question, "v1")
    assert result.image.size == image.size and result.image.tobytes() != image.tobytes()
    assert result.scores and [row[0] for row in result.scores] == list(range(1, len(result.scores) + 1))
    assert backend.ask(image, question, "none").scores == []


@pytest.mark.parametrize("image, question, zoom, message", [
    (None, "what?", "text", "upload an image"),
    (Image.new("RGB", (64, 64)), "  ", "text", "type a question"),
    (Image.new("RGB", (64, 64)), "what?", "closer", "unknown zoom"),
])
def test_ask_errors(backend, image, question, zoom, message):
    with pytest.raises(DemoInputError, match=message):
        backend.ask(image, question, zoom)


def test_the_demo_searches_with_default_proclip_like_any_encoder(tmp_path):
    backend = DemoBackend(DemoConfig(model="default-proclip", gallery_size=4, cache_dir=tmp_path), progress=False)
    text = backend.example_query() + " " + "There is a small red circle somewhere else. " * 30
    result = backend.search(text, k=4)
    assert len(result.gallery) == 4 and result.scores == sorted(result.scores, reverse=True)
    context = backend.encoder.context_length  # MiniLM's 512, or more when long texts are averaged over windows
    assert context >= 512 and f"context {context}" in result.summary
    assert [label for _, label in result.zones] == [KEPT, LONG_ONLY]  # ~900 tokens
