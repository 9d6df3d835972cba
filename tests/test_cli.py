import numpy as np
import pytest
import torch
from PIL import Image
from reference_clip import random_openai_state_dict

from vision_long import load_encoder
from vision_long.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "longclip.pt"
    torch.save(random_openai_state_dict(long_clip=True, seed=9), path)
    return f"longclip:{path}"


def test_embed_texts_matches_library(ckpt, tmp_path, capsys):
    out = tmp_path / "t.npy"
    assert main(["embed", "--model", ckpt, "--text", "a cat", "a dog on a hill", "--out", str(out)]) == 0
    got = np.load(out)
    want = load_encoder(ckpt).encode_text(["a cat", "a dog on a hill"]).numpy()
    assert got.shape == (2, 64) and np.allclose(got, want, atol=1e-6)
    assert "wrote (2, 64) embeddings of 2 texts" in capsys.readouterr().out


def test_embed_text_file_and_images(ckpt, tmp_path):
    f = tmp_path / "captions.txt"
    f.write_text("first caption\n\nsecond caption\n", encoding="utf-8")
    assert main(["embed", "--model", ckpt, "--text-file", str(f), "--out", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (2, 64)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"im{i}.png"))
        Image.new("RGB", (40 + i, 30), (10 * i, 20, 30)).save(paths[-1])
    assert main(["embed", "--model", ckpt, "--image", *paths, "--out", str(tmp_path / "i.npy")]) == 0
    got = np.load(tmp_path / "i.npy")
    want = load_encoder(ckpt).encode_image([Image.open(p).convert("RGB") for p in paths]).numpy()
    assert np.allclose(got, want, atol=1e-6)


def test_convert_and_info(ckpt, tmp_path, capsys):
    assert main(["convert", ckpt, str(tmp_path / "native")]) == 0
    assert main(["convert", ckpt, str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert (tmp_path / "hf" / "tokenizer_config.json").is_file()
    a = load_encoder(str(tmp_path / "native")).encode_text(["a cat"])
    b = load_encoder(f"hf:{tmp_path / 'hf'}").encode_text(["a cat"])
    assert torch.allclose(a, b, atol=1e-5)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "native")]) == 0
    out = capsys.readouterr().out
    assert "longclip" in out and "248" in out and "kept positions  20" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["embed", "--model", "MODEL", "--text-file", "missing.txt", "--out", "x.npy"], "no such text file"),
        (["embed", "--model", "MODEL", "--image", "missing.png", "--out", "x.npy"], "no such image file"),
        (["embed", "--model", "MODEL", "--text", "word " * 300, "--out", "x.npy"], "pass truncate=True"),
        (["embed", "--model", "nope.pt", "--text", "x", "--out", "x.npy"], "not a known spec"),
    ],
)
def test_errors_are_one_line(ckpt, tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [ckpt if a == "MODEL" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_utf8_and_bad_image(ckpt, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    assert main(["embed", "--model", ckpt, "--text-file", str(bad), "--out", str(tmp_path / "x.npy")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png")
    assert main(["embed", "--model", ckpt, "--image", str(fake), "--out", str(tmp_path / "x.npy")]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_convert_refuses_non_empty_dir(ckpt, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["convert", ckpt, str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    assert "examples:" in capsys.readouterr().out
