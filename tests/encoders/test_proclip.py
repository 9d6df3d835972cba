"""ProCLIP: adapter layouts, the distillation losses by hand, the EMA teacher, mean pooling, chunking,
the embedding cache, save/load, and two-step runs of both training stages."""

import math

import pytest
import torch
import torch.nn.functional as F
from proclip_fixtures import tiny_proclip

from vision_long import load_encoder
from vision_long.checkpoints import CheckpointError, load_native, save_native
from vision_long.cli import main
from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder, mean_pool
from vision_long.encoders.longclip import LongCLIP
from vision_long.encoders.model_configs import model_config
from vision_long.encoders.proclip import AdapterConfig, TextAdapter
from vision_long.encoders.proclip_loss import EMATeacher, distillation_loss, instance_loss, structure_loss


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_native(LongCLIP(model_config("shapescenes-tiny")), tmp_path_factory.mktemp("tiny-clip")))


# --- adapter ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,blocks,expansion", [("proclip", 1, 8), ("llm2clip", 4, 2)])
def test_adapter_layout_and_parameter_count(variant, blocks, expansion):
    h, d = 32, 16
    b, e = AdapterConfig(variant).resolved()
    assert (b, e) == (blocks, expansion)
    adapter = TextAdapter(h, d, b, e)
    per_block = 2 * h + (h * e * h + e * h) + (e * h * h + h)  # LayerNorm, Linear h->eh, Linear eh->h
    assert sum(p.numel() for p in adapter.parameters()) == blocks * per_block + 2 * h + h * d + d
    x = torch.randn(5, h)
    assert adapter(x).shape == (5, d)
    torch.testing.assert_close(adapter(x), adapter(3.7 * x))  # the input is L2-normalized first


def test_unknown_adapter_variant():
    with pytest.raises(ValueError, match="unknown adapter variant 'big'"):
        AdapterConfig("big").resolved()


# --- losses -------------------------------------------------------------------------------------------------
def test_instance_loss_is_a_sum_of_squared_errors():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert instance_loss(s, t).item() == pytest.approx(1 + 1 + 1)


def test_structure_loss_by_hand():
    # three points; pdist order is (0,1), (0,2), (1,2)
    s = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 0.5]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ds = [3.0, 0.5, math.hypot(3, 0.5)]
    dt = [1.0, 1.0, math.sqrt(2)]

    def smooth_l1(x):
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    expected = sum(smooth_l1(a - b) for a, b in zip(ds, dt))
    assert structure_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    paper = sum((a * a - b * b) ** 2 for a, b in zip(ds, dt))
    assert structure_loss(s, t, form="paper").item() == pytest.approx(paper, rel=1e-6)
    with pytest.raises(ValueError, match="unknown structure-loss form"):
        structure_loss(s, t, form="other")


def test_distillation_loss_zero_for_equal_features_and_structure_translation_invariant():
    s = F.normalize(torch.randn(6, 8), dim=-1)
    parts = distillation_loss(s, s.clone())
    assert parts["loss"].item() == 0
    t = F.normalize(torch.randn(6, 8), dim=-1)
    for form in ("code", "paper"):
        torch.testing.assert_close(structure_loss(s + 5.0, t, form), structure_loss(s, t, form))
    assert parts["instance"].item() == parts["structure"].item() == 0


# --- EMA teacher --------------------------------------------------------------------------------------------
def test_ema_update_rule_and_no_teacher_gradients():
    student = torch.nn.Linear(3, 2)
    teacher = EMATeacher(student, momentum=0.9)
    before = teacher.module.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student)
    torch.testing.assert_close(teacher.module.weight, 0.9 * before + 0.1 * student.weight)
    out = teacher(torch.randn(4, 3))
    assert not out.requires_grad and all(not p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="momentum"):
        EMATeacher(student, momentum=1.5)


def test_regularizer_is_zero_at_step_zero(tiny_llm_dir):
    model = tiny_proclip(tiny_llm_dir).train()
    teacher = EMATeacher(model.visual, momentum=0.999)
    pixels = torch.randn(4, 3, model.image_size, model.image_size)
    student = F.normalize(model.encode_pixels(pixels), dim=-1)
    reg = distillation_loss(student, F.normalize(teacher(pixels), dim=-1))["loss"]
    assert reg.item() < 1e-10  # zero up to the last bits (grad and no-grad attention kernels differ)
    reg.backward()  # the student still gets (zero) gradients, the teacher none
    assert all(p.grad is None for p in teacher.parameters())


# --- LLM embedder -------------------------------------------------------------------------------------------
def test_mean_pool_by_hand():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[100.0], [2.0], [4.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])  # right padding, then left padding
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0], [3.0]]))


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_ignores_pad_tokens_on_either_side(tiny_llm_dir, side):
    llm = LLMEmbedder(LLMConfig(name=tiny_llm_dir))
    llm.tokenizer.hf.padding_side = side
    texts = ["a red circle", "in the top-left cell there is a large striped blue hexagon with a white outline"]
    together = llm.embed(texts)
    alone = torch.cat([llm.embed([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(2))


def test_long_text_raises_or_averages_windows(tiny_llm_dir):
    text = " ".join(f"object {i} is a small green star." for i in range(30))
    strict = LLMEmbedder(LLMConfig(name=tiny_llm_dir))
    with pytest.raises(ValueError, match="more than the limit of 64"):
        strict.embed([text])
    chunked = LLMEmbedder(LLMConfig(name=tiny_llm_dir, chunk_long=True))
    content = chunked.tokenizer.encode(text)
    assert len(content) > 2 * 62
    windows = [chunked.tokenizer.with_special(content[i : i + 62]) for i in range(0, len(content), 62)]
    pooled = torch.cat([chunked._forward([w]) for w in windows])
    weights = torch.tensor([float(len(w)) for w in windows])
    expected = F.normalize((pooled * weights[:, None]).sum(0, keepdim=True), dim=-1)
    torch.testing.assert_close(chunked.embed([text]), expected, atol=1e-5, rtol=0)


def test_embedding_cache_skips_the_llm(tiny_llm_dir, tmp_path, monkeypatch):
    llm = LLMEmbedder(LLMConfig(name=tiny_llm_dir))
    llm.use_cache(tmp_path)
    first = llm.embed(["a blue square", "a red star"])
    fresh = LLMEmbedder(LLMConfig(name=tiny_llm_dir))
    fresh.use_cache(tmp_path)
    assert len(fresh.cache) == 2

    def no_forward(*_):
        raise AssertionError("the LLM ran for a cached text")

    monkeypatch.setattr(fresh, "_forward", no_forward)
    torch.testing.assert_close(fresh.embed(["a red star", "a blue square"]), first.flip(0))


# --- the encoder --------------------------------------------------------------------------------------------
def test_encoder_protocol_save_load_round_trip(tiny_llm_dir, tmp_path, images):
    model = tiny_proclip(tiny_llm_dir)
    texts = ["a red circle", "two blue squares in the bottom row"]
    text, image = model.encode_text(texts), model.encode_image(images)
    assert text.shape == (2, 16) and image.shape == (len(images), 16)
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(x) for x in model.tokenizer.tokenize_to_lists(texts)[0]], batch_first=True,
        padding_value=model.tokenizer.pad_token_id)
    torch.testing.assert_close(model.encode_text(ids), text)  # the ids path the retrieval service uses

    save_native(model, tmp_path / "pro")
    assert not any(k.startswith("llm") for k in load_native(tmp_path / "pro").state_dict())  # the LLM is not saved
    loaded = load_encoder(f"proclip:{tmp_path / 'pro'}")
    assert loaded.family == "proclip" and loaded.context_length == 64
    torch.testing.assert_close(loaded.encode_text(texts), text, atol=0, rtol=0)
    torch.testing.assert_close(loaded.encode_image(images), image, atol=0, rtol=0)


def test_proclip_spec_rejects_other_families(tiny_clip_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not a ProCLIP one"):
        load_encoder(f"proclip:{tiny_clip_dir}")
    with pytest.raises(CheckpointError, match="not a vision_long ProCLIP directory"):
        load_encoder(f"proclip:{tmp_path}")


# --- training -----------------------------------------------------------------------------------------------
def test_train_proclip_both_stages_cli(tiny_llm_dir, tiny_clip_dir, tmp_path):
    common = ["--llm", tiny_llm_dir, "--pool-scenes", "8", "--hard-groups", "2", "--grids", "3", "--steps", "2",
              "--batch-size", "8", "--warmup", "1", "--checkpoint-every", "1", "--llm-cache", str(tmp_path / "cache")]
    assert main(["train", "proclip", "--stage", "1", "--init", tiny_clip_dir, *common, "--out", str(tmp_path / "s1")]) == 0
    stage1 = load_encoder(str(tmp_path / "s1" / "model"))
    clip = load_encoder(tiny_clip_dir, stretch=False)
    for a, b in zip(stage1.visual.state_dict().values(), clip.visual.state_dict().values()):
        assert torch.equal(a, b)  # stage 1 trains the adapter only

    assert main(["train", "proclip", "--stage", "2", "--init", str(tmp_path / "s1" / "model"), *common,
                 "--out", str(tmp_path / "s2")]) == 0
    stage2 = load_encoder(str(tmp_path / "s2" / "model"))
    assert any(not torch.equal(a, b) for a, b in zip(stage2.visual.state_dict().values(), clip.visual.state_dict().values()))
    assert stage2.logit_scale.item() <= math.log(100) + 1e-6
    log = (tmp_path / "s2" / "log.jsonl").read_text()
    assert '"info_nce"' in log and '"reg"' in log


def test_stage2_needs_a_proclip_init(tiny_clip_dir, tiny_llm_dir, tmp_path, capsys):
    argv = ["train", "proclip", "--stage", "2", "--llm", tiny_llm_dir, "--steps", "1", "--out", str(tmp_path / "x")]
    assert main([*argv, "--init", tiny_clip_dir]) != 0
    assert "stage 2 starts from a stage-1 ProCLIP model" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="pass --init"):
        main(argv)


def test_info_and_convert_cli(tiny_llm_dir, tmp_path, capsys):
    spec = str(save_native(tiny_proclip(tiny_llm_dir), tmp_path / "pro"))
    assert main(["info", spec]) == 0
    out = capsys.readouterr().out
    assert "proclip: 1 residual block(s) x8" in out and "(without the LLM)" in out
    assert main(["convert", spec, str(tmp_path / "hf"), "--to", "hf"]) != 0
    assert "only CLIP/Long-CLIP models export" in capsys.readouterr().err
    assert main(["convert", spec, str(tmp_path / "half"), "--dtype", "fp16"]) == 0
    assert load_encoder(str(tmp_path / "half")).family == "proclip"
