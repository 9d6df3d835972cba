"""ZoomLMM end to end with tiny random parts: sequences, generation, the training loss, save/load, errors."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from lmm_parts import CROP_SIZE, tiny_lmm
from PIL import Image

from vision_long.checkpoints import CheckpointError, load_native, save_native
from vision_long.lmm import (
    LMMConfig,
    TextZoomHead,
    ZoomConfig,
    ZoomLMM,
    load_lmm,
    multi_resolution_crops,
    pool_patch_grid,
    save_lmm,
    select_zoom_text,
    vqa_item,
)
from vision_long.lmm.model import IGNORE_INDEX

GLOBAL_TOKENS = 1 + (CROP_SIZE // 8) ** 2  # CLS + 4 x 4 patches, unpooled
POOLED_TOKENS = 1 + 2 * 2  # CLS + 2 x 2 pooled patches
# Image-block positions (visual embeddings + one separator per crop) per zoom mode, v1_k = 2 and text_k = 3.
IMAGE_TOKENS = {
    "none": GLOBAL_TOKENS + 1,
    "multires": GLOBAL_TOKENS + 1 + (4 + 36) * (POOLED_TOKENS + 1),
    "v1": GLOBAL_TOKENS + 1 + (4 + 4 * 2) * (POOLED_TOKENS + 1),
    "text": GLOBAL_TOKENS + 1 + (4 + 3) * (POOLED_TOKENS + 1),
}


@pytest.fixture(scope="module")
def model():
    return tiny_lmm()


@pytest.fixture(scope="module")
def item():
    return vqa_item(5)


def _greedy(model, embeddings, steps):
    """Greedy decoding by hand: full forward each step, argmax, stop at EOS."""
    lm, ids = model.language_model, []
    for _ in range(steps):
        with torch.no_grad():
            next_id = lm(inputs_embeds=embeddings[None]).logits[0, -1].argmax().item()
        if next_id == model.tokenizer.eos_token_id:
            break
        ids.append(next_id)
        embeddings = torch.cat([embeddings, lm.get_input_embeddings().weight[next_id][None]])
    return model.tokenizer.decode(ids, skip_special_tokens=True).strip()


@pytest.mark.parametrize("zoom", ["none", "multires", "v1", "text"])
def test_generate_end_to_end(model, item, zoom):
    answer = model.ask(item.image(), item.question, zoom=zoom, max_new_tokens=4)  # "text" loads config's "default"
    assert answer.zoom == zoom and answer.image_tokens == IMAGE_TOKENS[zoom]
    assert isinstance(answer.text, str) and answer.text
    assert (answer.selection is None) == (zoom in ("none", "multires"))
    # The same answer as decoding greedily by hand from the same inputs.
    features, _ = model.image_features(answer.crops, zoom, item.question)
    embeddings, _ = model.input_embeddings(features, item.question)
    assert answer.text == _greedy(model, embeddings, steps=4)
    assert model.generate(item.image(), item.question, zoom=zoom, max_new_tokens=4) == answer.text


def test_text_zoom_uses_the_encoder_selection(model, item, default_encoder):
    answer = model.ask(
        item.image(),
        item.question,
        zoom="text",
        text_encoder=default_encoder,
        max_new_tokens=2,
    )
    expected = select_zoom_text(answer.crops, item.question, default_encoder, k=3)
    assert answer.selection.indices == expected.indices and answer.selection.boxes == expected.boxes


def test_image_block_holds_the_projected_features_then_the_prompt(model, item):
    crops = multi_resolution_crops(item.image(), model.config.resolution)
    features, _ = model.image_features(crops, "v1", item.question)
    assert [f.shape[0] for f in features] == [GLOBAL_TOKENS] + [POOLED_TOKENS] * 12
    embeddings, labels = model.input_embeddings(features, item.question, answer=item.answer)
    table = model.language_model.get_input_embeddings().weight
    start = 0
    for crop in features:  # per crop: its embeddings, then the separator's
        assert torch.equal(embeddings[start : start + len(crop)], crop)
        assert torch.equal(embeddings[start + len(crop)], table[model.config.separator_token_id])
        start += len(crop) + 1
    answer_ids = model.tokenizer(" " + item.answer, add_special_tokens=False)["input_ids"]
    labelled = labels[labels != IGNORE_INDEX].tolist()
    assert labelled == answer_ids + [model.tokenizer.eos_token_id]
    assert (labels[: len(labels) - len(labelled)] == IGNORE_INDEX).all()


def test_training_loss_pads_correctly_and_reaches_the_projector(model):
    items = [vqa_item(1), vqa_item(2)]
    images, questions, answers = (
        [i.image() for i in items],
        [i.question for i in items],
        [i.answer for i in items],
    )
    assert len(questions[0].split()) != len(questions[1].split())  # different lengths: the batch needs padding
    loss = model(images, questions, answers, zoom="none")
    # Token-weighted mean of the per-example losses, each computed alone without padding.
    total, count = 0.0, 0
    for image, question, answer in zip(images, questions, answers):
        features, _ = model.image_features(multi_resolution_crops(image, model.config.resolution), "none", question)
        embeddings, labels = model.input_embeddings(features, question, answer)
        logits = model.language_model(inputs_embeds=embeddings[None]).logits[0]
        total = total + F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")
        count += (labels != IGNORE_INDEX).sum().item()
    assert torch.allclose(loss, total / count, atol=1e-5)
    loss.backward()
    assert model.projector[0].weight.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize("lm, projector", [("llama", "mlp"), ("gpt2", "linear")])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, item, lm, projector):
    model = tiny_lmm(projector=projector, lm=lm, seed=1)
    out = save_lmm(model, tmp_path / "lmm")
    loaded = load_lmm(out)
    assert isinstance(loaded, ZoomLMM) and loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys() and all(torch.equal(original[k], restored[k]) for k in original)
    crops = multi_resolution_crops(item.image(), model.config.resolution)
    with torch.no_grad():
        logits = []
        for m in (model, loaded):
            embeddings, _ = m.input_embeddings(m.image_features(crops, "v1", item.question)[0], item.question)
            logits.append(m.language_model(inputs_embeds=embeddings[None]).logits)
    assert torch.equal(logits[0], logits[1])
    ask = {"zoom": "v1", "max_new_tokens": 6}
    assert model.ask(item.image(), item.question, **ask).text == loaded.ask(item.image(), item.question, **ask).text


def test_a_text_zoom_head_is_saved_and_selects_after_loading(tmp_path, item, default_encoder):
    model = tiny_lmm(seed=2, zoom=ZoomConfig(v1_k=2, text_k=3, text_dim=default_encoder.embed_dim))
    assert isinstance(model.zoom_head, TextZoomHead)
    with torch.no_grad():
        model.zoom_head.place[2].bias.normal_()  # a head that is not its initialisation
    loaded = load_lmm(save_lmm(model, tmp_path / "lmm"))
    original, restored = model.zoom_head.state_dict(), loaded.zoom_head.state_dict()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    ask = {"zoom": "text", "text_encoder": default_encoder, "max_new_tokens": 2}
    answers = [m.ask(item.image(), item.question, **ask) for m in (model, loaded)]
    expected = select_zoom_text(answers[0].crops, item.question, default_encoder, k=3, head=model.zoom_head)
    assert answers[0].selection.indices == answers[1].selection.indices == expected.indices
    assert answers[0].text == answers[1].text
    # The selected high crops enter best first: their place embeddings follow the selection's order.
    features, _ = model.image_features(answers[0].crops, "text", item.question, default_encoder)
    places = [(2, *divmod(i, answers[0].crops.high.columns)) for i in expected.indices]
    crops = [answers[0].crops.high.crops[i] for i in expected.indices]
    pooled = pool_patch_grid(model.encode_crops(crops), model.config.resolution.pooled_grid)
    torch.testing.assert_close(torch.stack(features[-3:]), pooled + model.crop_position_embeddings(places)[:, None])


def test_tied_embeddings_stay_tied_after_loading(tmp_path):
    loaded = load_lmm(save_lmm(tiny_lmm(lm="gpt2"), tmp_path / "lmm"))
    lm = loaded.language_model
    assert lm.get_output_embeddings().weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()


def test_load_native_gives_the_model_without_its_tokenizer(tmp_path, item):
    path = save_native(tiny_lmm(), tmp_path / "bare")
    model = load_native(path)
    assert isinstance(model, ZoomLMM) and model.tokenizer is None
    with pytest.raises(ValueError, match="no tokenizer"):
        model.generate(item.image(), item.question, zoom="none")
    with pytest.raises(CheckpointError, match="tokenizer folder"):
        load_lmm(path)


def test_path_images_and_clear_errors(model, item, tmp_path):
    path = tmp_path / "scene.png"
    item.image().save(path)
    by_path = model.generate(path, item.question, zoom="none", max_new_tokens=3)
    assert by_path == model.generate(item.image(), item.question, zoom="none", max_new_tokens=3)
    with pytest.raises(FileNotFoundError, match="not found"):
        model.generate(tmp_path / "missing.png", item.question, zoom="none")
    with pytest.raises(TypeError, match="PIL.Image.Image or a path"):
        model.generate(torch.zeros(3, 32, 32), item.question, zoom="none")
    with pytest.raises(ValueError, match="empty"):
        model.generate(item.image(), "  ", zoom="none")
    with pytest.raises(ValueError, match="zoom must be one of"):
        model.generate(item.image(), item.question, zoom="all")
    with pytest.raises(ValueError, match="must not contain"):
        model.generate(item.image(), "what is <image> ?", zoom="none")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_lmm(tmp_path / "nowhere")


def test_config_validation(model):
    with pytest.raises(ValueError, match="projector"):
        dataclasses.replace(model.config, projector="conv")
    with pytest.raises(ValueError, match="crop_size"):
        LMMConfig.from_dict(
            {
                **model.config.to_dict(),
                "resolution": {"crop_size": 64, "high_factor": 3, "pooled_grid": 2},
            }
        )
    bad_pool = LMMConfig.from_dict(
        {
            **model.config.to_dict(),
            "resolution": {"crop_size": 32, "high_factor": 3, "pooled_grid": 3},
        }
    )
    with pytest.raises(ValueError, match="pooled_grid"):
        ZoomLMM(bad_pool)
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        model([torch.zeros(3, 8, 8)], ["what color ?"], ["red"], zoom="none")
    with pytest.raises(ValueError, match="equally many"):
        model([Image.new("RGB", (8, 8))], ["what color ?"], [], zoom="none")


def test_features_are_standardized_per_channel_before_the_projector(item):
    """Regression: a frozen CLIP's features are mostly a component every crop shares; the projector must see them
    standardized (the statistics are buffers, so they are saved and loaded with the model)."""
    model = tiny_lmm(seed=2)
    crops = multi_resolution_crops(item.image(), model.config.resolution)
    views = [crops.global_view, *crops.medium.crops]
    with torch.no_grad():
        features = model.vision_features(views)
        model.set_feature_statistics(features)
        flat = features.reshape(-1, features.shape[-1])
        assert torch.allclose(model.feature_mean, flat.mean(0)) and torch.allclose(model.feature_std, flat.std(0))
        standardized = (flat - model.feature_mean) / model.feature_std
        assert torch.allclose(standardized.mean(0), torch.zeros(()), atol=1e-5)
        assert torch.allclose(standardized.std(0), torch.ones(()), atol=1e-4)
        expected = model.projector((features - model.feature_mean) / model.feature_std)
        assert torch.allclose(model.encode_crops(views), expected, atol=1e-6)
    assert {"feature_mean", "feature_std"} <= set(model.state_dict())


def test_a_high_crop_carries_its_place_whichever_zoom_selects_it(model, item):
    """Regression: under v1 / text zoom the chosen high crops are a different subset per image; each crop's
    embeddings hold its (level, row, column) place embedding, so the LM can tell which cell a crop shows."""
    crops = multi_resolution_crops(item.image(), model.config.resolution)
    with torch.no_grad():
        every, _ = model.image_features(crops, "multires", item.question)
        chosen, selection = model.image_features(crops, "v1", item.question)
        # v1 keeps global + medium + the selected high crops (row-major): the same embeddings as under multires.
        kept = every[:5] + [every[5 + i] for i in sorted(selection.indices)]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(chosen, kept, strict=True))
        high = model.encode_crops(crops.high.crops)
        pooled = pool_patch_grid(high, model.config.resolution.pooled_grid)
        columns = crops.high.columns
        for index in (0, 7, len(crops.high) - 1):
            place = model.crop_position_embeddings([(2, index // columns, index % columns)])
            assert torch.allclose(every[5 + index], pooled[index] + place, atol=1e-6)
        # Identical pixels at two places give different embeddings.
        same = model.image_features(crops, "none", item.question)[0][0]
        place = model.crop_position_embeddings
        assert torch.allclose(same - place([(0, 0, 0)]), model.encode_crops([crops.global_view])[0], atol=1e-6)
        assert not torch.allclose(place([(2, 0, 1)]), place([(2, 1, 0)]))
    with pytest.raises(ValueError, match="crop places"):
        model.crop_position_embeddings([(3, 0, 0)])
