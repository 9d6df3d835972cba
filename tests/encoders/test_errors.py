"""Bad input gets a clear error that names the file and the problem."""

import json

import pytest
import torch
from reference_clip import random_openai_state_dict

from vision_long import CheckpointError, load_encoder, load_native, save_native


@pytest.fixture(scope="module")
def openai_sd():
    return random_openai_state_dict(seed=8)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_encoder(f"longclip:{tmp_path / 'nope.pt'}")


def test_garbage_bytes(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt: not a loadable weights-only torch checkpoint"):
        load_encoder(f"openai:{bad}")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_encoder(f"openai:{evil}")
    assert "code ran" not in capsys.readouterr().out


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a state dict of tensors"):
        load_encoder(f"openai:{path}")


def test_longclip_spec_needs_residual_table(tmp_path, openai_sd):
    path = tmp_path / "openai.pt"
    torch.save(openai_sd, path)
    with pytest.raises(CheckpointError, match=r"missing \['positional_embedding_res'\]"):
        load_encoder(f"longclip:{path}")


def test_missing_and_misshaped_keys_are_listed(tmp_path, openai_sd):
    sd = dict(openai_sd)
    del sd["ln_final.bias"]
    sd["text_projection"] = torch.zeros(128, 32)
    sd["visual.proj"] = torch.zeros(128, 48)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"broken\.pt.*missing keys \[ln_final\.bias\].*shape mismatches"):
        load_encoder(f"openai:{path}")


def test_not_clip_at_all(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not an OpenAI-layout CLIP state dict"):
        load_encoder(f"openai:{path}")


def test_native_dir_errors(tmp_path, openai_sd):
    path = tmp_path / "openai.pt"
    torch.save(openai_sd, path)
    model = load_encoder(f"openai:{path}")
    out = save_native(model, tmp_path / "native")
    (out / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_native(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights file"):
        load_native(out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        load_native(out)
    (out / "config.json").write_text(json.dumps({"format": "vision_long", "family": "nope", "config": {}}))
    with pytest.raises(CheckpointError, match="unknown model family 'nope'"):
        load_native(out)
    (out / "config.json").write_text(json.dumps({"format": "vision_long", "family": "longclip", "config": {}}))
    with pytest.raises(CheckpointError, match="malformed longclip config"):
        load_native(out)
    with pytest.raises(CheckpointError, match="not a vision_long checkpoint directory"):
        load_encoder(str(tmp_path))


def test_specs(tmp_path, monkeypatch):
    import vision_long.encoders.loading as loading

    monkeypatch.setattr(loading, "ASSETS", tmp_path / "no-assets")
    with pytest.raises(CheckpointError, match="embedded model 'default' is not installed"):
        load_encoder("default")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not a known spec"):
        load_encoder("nonsense:thing")
    with pytest.raises(ValueError, match="open_clip:<arch>@<weights file>"):
        load_encoder("open_clip:ViT-B-32")
    with pytest.raises(CheckpointError, match="not a transformers model directory"):
        load_encoder(f"hf:{tmp_path}")


def test_encode_input_errors(tmp_path, openai_sd):
    path = tmp_path / "openai.pt"
    torch.save(openai_sd, path)
    model = load_encoder(f"openai:{path}", stretch=False)
    with pytest.raises(ValueError, match=r"tokens long .* context length is 77; pass truncate=True"):
        model.encode_text(["word " * 100])
    assert model.encode_text(["word " * 100], truncate=True).shape == (1, 64)
    with pytest.raises(ValueError, match=r"Tensor\[N, 3, 32, 32\]"):
        model.encode_image(torch.zeros(2, 3, 64, 64))
    with pytest.raises(TypeError, match="image 1 is a str"):
        from PIL import Image

        model.encode_image([Image.new("RGB", (8, 8)), "cat.png"])
    assert model.encode_text([]).shape == (0, 64)
