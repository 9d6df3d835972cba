"""Public-benchmark suites on tiny datasets written here in each suite's exact on-disk layout.

A one-hot fake encoder makes every metric predictable: caption "item7 ..." embeds as e_7 and an image whose
colour encodes 7 (see `colour`) embeds as e_7, so a perfect encoder scores 100 and shuffled pairs score chance.
The command-line tests run a real tiny Long-CLIP checkpoint end to end.
"""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference_clip import random_openai_state_dict

from vision_long.eval.retrieval_metrics import retrieval_metrics_multi
from vision_long.eval.suites import SUITES, DatasetLayoutError, run_benchmark
from vision_long.eval.suites.long_caption import dci_long_caption, first_json_items
from vision_long.eval.suites.published import backbone_of, load_published, published_rows
from vision_long.eval.suites.retrieval import blockwise_retrieval_metrics
from vision_long.eval.suites.zeroshot import zeroshot_logits, zeroshot_weights
from vision_long.eval.zeroshot_templates import IMAGENET_TEMPLATES

RETRIEVAL_KEYS = {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}


# --- a fake encoder whose embeddings are ids ------------------------------------------------------------------
def colour(i: int) -> tuple[int, int, int]:
    """Solid colour that survives JPEG: 16 levels per channel, 4096 ids."""
    return 16 * (i % 16) + 8, 16 * (i // 16 % 16) + 8, 16 * (i // 256) + 8


def write_image(path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour(i)).save(path)


class WordTokenizer:
    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2


class OneHotEncoder:
    """Caption "itemK ..." -> e_{(K + shift) mod dim}, image of colour(K) -> e_K; tables override a text or id."""

    family = "fake"

    def __init__(self, dim=64, context_length=77, shift=0, text_table=None, image_table=None):
        self.dim, self.context_length, self.shift = dim, context_length, shift
        self.text_table, self.image_table = text_table or {}, image_table or {}
        self.tokenizer = WordTokenizer()
        self.truncate_calls = []

    def preprocess(self, image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).mean((0, 1))  # Tensor[3], the mean colour

    def _vectors(self, rows, normalize):
        out = torch.stack([torch.as_tensor(r, dtype=torch.float) for r in rows])
        return F.normalize(out, dim=-1) if normalize else out

    def one_hot(self, i):
        return F.one_hot(torch.tensor(i % self.dim), self.dim).float()

    def encode_text(self, texts, normalize=True, batch_size=64, truncate=False, progress=False):
        self.truncate_calls.append(truncate)
        if not truncate and any(self.tokenizer.count_tokens(t) > self.context_length for t in texts):
            raise ValueError("too long")
        ids = [int(re.search(r"item(\d+)", t).group(1)) for t in texts]
        rows = [self.text_table.get(t, self.text_table.get(i, self.one_hot(i + self.shift)))
                for t, i in zip(texts, ids, strict=True)]
        return self._vectors(rows, normalize)

    def encode_image(self, pixels, normalize=True, batch_size=64, progress=False):
        levels = ((pixels - 8) / 16).round().long()
        ids = (levels[:, 0] + 16 * levels[:, 1] + 256 * levels[:, 2]).tolist()
        return self._vectors([self.image_table.get(i, self.one_hot(i)) for i in ids], normalize)


# --- each suite's public layout, written small -----------------------------------------------------------------
def write_urban1k(root, n=6, words=8):
    for i in range(n):
        write_image(root / "image" / f"{i}.jpg", i)
        (root / "caption").mkdir(exist_ok=True)
        (root / "caption" / f"{i}.txt").write_text(f"item{i} " + "street " * words + f"\nitem{n + i} ignored\n")
    return root


def write_sharegpt4v(root, n=1003):
    """The first 1000 items have images; the rest name files that do not exist (they must not be read)."""
    items = []
    for i in range(n):
        image = f"sam/images/sa_{i}.jpg"
        if i < 1000:
            write_image(root / image, i)
        turns = [{"from": "human", "value": "<image>\nDescribe the image."},
                 {"from": "gpt", "value": f"item{i} a view.\nDetails [1, 2] \"quoted\"."}]
        items.append({"id": f"sa_{i}", "image": image, "conversations": turns})
    (root / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(items, indent=1))
    return root


def write_dci(root):
    root = root / "densely_captioned_images"
    splits = {"train": ["sa_0.json", "sa_1.json", "sa_2.json"], "valid": ["sa_3.json"], "test": ["sa_4.json"]}
    for i in range(6):  # sa_5 is not listed in splits.json
        record = {"image": f"sa_{i}.jpg", "short_caption": f"item{i} a short caption.",
                  "extra_caption": "More detail.\nEven more</s>and more.", "mask_data": {}, "mask_keys": []}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"sa_{i}.json").write_text(json.dumps(record))
        write_image(root / "photos" / f"sa_{i}.jpg", i)
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def write_docci(root):
    lines = []
    for i, split in enumerate(["test", "train", "test", "qual_test", "test", "test"]):
        name = f"{split}_{i:05d}.jpg"
        if split == "test":
            write_image(root / "images" / name, i)
        lines.append(json.dumps({"example_id": f"{split}_{i}", "split": split, "image_file": name,
                                 "description": f"item{i} a long description of a room."}))
    (root / "docci_descriptions.jsonlines").write_text("\n".join(lines) + "\n")
    return root


def write_coco(root, captions_of=None):
    """Images with ids 30, 10, 20 (out of order); image 10 has a sixth caption, a decoy that must be dropped."""
    captions_of = captions_of or {30: [f"item0 c{j}" for j in range(5)],
                                  10: [f"item1 c{j}" for j in range(5)] + ["item2 decoy"],
                                  20: [f"item2 c{j}" for j in range(5)]}
    colour_of = {30: 0, 10: 1, 20: 2}
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in captions_of]
    for i in captions_of:
        write_image(root / "val2017" / f"{i:012d}.jpg", colour_of[i])
    anns = [{"id": 100 * i + j, "image_id": i, "caption": c} for j in range(6) for i, cs in captions_of.items()
            if j < len(cs) for c in [cs[j]]]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def write_flickr_full(root):
    lines = [f"{1000 + i}.jpg#{j}\titem{i} a dog runs number {j} ." for i in range(3) for j in range(5)]
    for i in range(3):
        write_image(root / "flickr30k-images" / f"{1000 + i}.jpg", i)
    (root / "results_20130124.token").write_text("\n".join(lines) + "\n")
    return root


def write_flickr_karpathy(root):
    images = []
    for i, split in enumerate(["train", "test", "val", "test"]):
        name = f"{2000 + i}.jpg"
        if split == "test":
            write_image(root / "flickr30k-images" / name, i)
        images.append({"filename": name, "split": split, "imgid": i,
                       "sentences": [{"raw": f"item{i} people walk {j}.", "tokens": []} for j in range(5)]})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return root


def write_image_folder(root):
    for label in range(3):
        for j in range(2):
            write_image(root / f"item{label}" / f"img_{j}.JPEG", label)
    return root


CASES = {  # name -> (suite, split, writer, n_images, n_texts)
    "urban1k": ("urban1k", None, write_urban1k, 6, 6),
    "sharegpt4v-1k": ("sharegpt4v-1k", None, write_sharegpt4v, 1000, 1000),
    "dci": ("dci", None, write_dci, 5, 5),
    "docci": ("docci", None, write_docci, 4, 4),
    "coco": ("coco", None, write_coco, 3, 15),
    "flickr30k-full": ("flickr30k", "full", write_flickr_full, 3, 15),
    "flickr30k-karpathy": ("flickr30k", "karpathy-1k", write_flickr_karpathy, 2, 10),
    "zeroshot": ("zeroshot", None, write_image_folder, 6, 3 * len(IMAGENET_TEMPLATES)),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return {name: writer(tmp_path_factory.mktemp(name)) for name, (_, _, writer, _, _) in CASES.items()}


# --- the suites with the fake encoder ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_perfect_encoder_scores_100_on_every_layout(datasets, case):
    suite, split, _, n_images, n_texts = CASES[case]
    result = run_benchmark(suite, OneHotEncoder(dim=1024), datasets[case], split=split)
    assert result.counts["n_images"] == n_images and result.counts["n_texts"] == n_texts
    expected_keys = {"top1"} if suite == "zeroshot" else RETRIEVAL_KEYS  # 3 classes: no top-5
    assert set(result.metrics) == expected_keys and all(v == 100.0 for v in result.metrics.values())
    assert result.split == (split if suite != "flickr30k" else split or "karpathy-1k")


def test_shuffled_pairs_score_chance(datasets):
    """Shift s pairs caption i with image i + s: R@1 is 100 for s = 0 and 0 otherwise, 1/n on average."""
    n = 6
    r1 = [run_benchmark("urban1k", OneHotEncoder(dim=n, shift=s), datasets["urban1k"]).metrics for s in range(n)]
    for key in ("t2i_r1", "i2t_r1"):
        assert [m[key] for m in r1] == [100.0] + [0.0] * (n - 1)
        assert sum(m[key] for m in r1) / n == pytest.approx(100 / n)
    assert all(m["t2i_r5"] == 0.0 for m in r1[1:])  # one-hot: the own image ties with the n - 2 others at 0


def test_recall_against_a_hand_computed_similarity_matrix(tmp_path):
    """COCO layout, 3 images x 2 captions; caption vectors chosen so each hit is worked out in the comments."""
    captions = {30: ["item10 a", "item11 b"], 10: ["item12 c", "item13 d"], 20: ["item14 e", "item15 f"]}
    text = {10: [1, 0, 0],  # image 0 (e0): hit
            11: [0, 1, 0.5],  # image 0 scores 0, images 1 and 2 score more: miss at R@1, hit at R@5
            12: [0, 1, 0],  # image 1: hit
            13: [0.6, 0.8, 0],  # image 1 (.8) beats image 0 (.6): hit
            14: [0, 0.9, 0.436],  # image 2 (.436) loses to image 1 (.9): miss
            15: [1, 1, 0]}  # image 2 scores 0 against .707 twice: miss
    encoder = OneHotEncoder(dim=3, text_table={k: v for k, v in text.items()})
    result = run_benchmark("coco", encoder, write_coco(tmp_path, captions))
    # image -> text: e0 finds item10 (1.0) first, e1 finds item12 (1.0) first, e2's best own caption item14
    # (.436) loses to item11 (.447): 2 of 3.
    assert result.metrics["t2i_r1"] == pytest.approx(100 * 3 / 6)
    assert result.metrics["i2t_r1"] == pytest.approx(100 * 2 / 3)
    assert result.metrics["t2i_r5"] == result.metrics["i2t_r5"] == 100.0


def test_blockwise_metrics_equal_the_full_matrix():
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 3, (40, 4), generator=g).float()  # small integers: many exact ties
    image = torch.randint(0, 3, (12, 4), generator=g).float() + 0.1
    owner = torch.cat([torch.arange(12), torch.randint(0, 12, (28,), generator=g)])
    full = retrieval_metrics_multi(text, image, owner, ks=(1, 2, 5))
    assert blockwise_retrieval_metrics(text, image, owner, ks=(1, 2, 5), block=7) == pytest.approx(full)


def test_prompt_ensemble_by_hand():
    """Class weights = normalize(mean over templates of normalized prompt embeddings); logits = 100 x cosine."""
    table = {"A item0": [3, 4, 0], "B item0": [0, 0, 2], "A item1": [0, 1, 0], "B item1": [1, 0, 0]}
    encoder = OneHotEncoder(dim=3, text_table=table)
    weights, n_truncated = zeroshot_weights(encoder, ["item0", "item1"], ["A {}", "B {}"])
    r = 0.5 ** 0.5  # |(.3, .4, .5)| and |(.5, .5, 0)|
    expected = torch.tensor([[0.3 / r, 0.4 / r, 0.5 / r], [0.5 / r, 0.5 / r, 0.0]])
    assert n_truncated == 0 and torch.allclose(weights, expected, atol=1e-6)
    logits = zeroshot_logits(torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]), weights)
    assert torch.allclose(logits, 100 * torch.tensor([[0.5 / r, 0.0], [0.3 / r, 0.5 / r]]), atol=1e-4)


def test_templates_are_clips_80():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert [t.format("X") for t in IMAGENET_TEMPLATES] == [f("X") for f in OPENAI_IMAGENET_TEMPLATES]


def test_truncation_policy_is_explicit_and_recorded(tmp_path):
    data = write_urban1k(tmp_path, n=4, words=30)  # 32 tokens each with the fake tokenizer
    encoder = OneHotEncoder(dim=4, context_length=20)
    with pytest.raises(ValueError, match="4 of 4 captions are longer than the model's 20-token context"):
        run_benchmark("urban1k", encoder, data, truncate=False)
    record = run_benchmark("urban1k", encoder, data, truncate=True).as_record()
    assert encoder.truncate_calls == [True]
    assert record["truncate"] is True and record["context_length"] == 20 and record["n_truncated"] == 4
    assert record["n_images"] == 4 and record["unit"] == "percent" and record["seconds"] >= 0
    assert "Urban1k.py" in record["protocol"] and record["t2i_r1"] == 100.0


def test_readers_follow_upstream_caption_rules(datasets):
    urban = SUITES["urban1k"].read(datasets["urban1k"], None)
    assert urban.captions[0] == "item0 " + "street " * 7 + "street"  # first line only
    share = SUITES["sharegpt4v-1k"].read(datasets["sharegpt4v-1k"], None)
    assert share.captions[3] == 'item3 a view. Details [1, 2] "quoted".'  # newline -> space
    long_caption = dci_long_caption("A red door.", "It is old.\nThe knob</s>is brass.")
    assert long_caption == "A red door. It is old. The knob. is brass"
    coco = SUITES["coco"].read(datasets["coco"], None)
    assert [p.name for p in coco.image_paths] == ["000000000010.jpg", "000000000020.jpg", "000000000030.jpg"]
    assert "item2 decoy" not in coco.captions


def test_streamed_json_prefix(tmp_path):
    items = [{"s": "],[{\"", "n": i * 1.5e-3, "l": [i, {"x": None}]} for i in range(30)] + [12345, "tail"]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(items, indent=2))
    for chunk in (1, 5, 64, 1 << 20):
        assert first_json_items(path, 31, chunk) == items[:31]
        assert first_json_items(path, 100, chunk) == items
    path.write_text('[{"a": 1}, {"b"')
    with pytest.raises(json.JSONDecodeError):
        first_json_items(path, 5, 4)


@pytest.mark.parametrize("suite", SUITES)
def test_missing_dataset_names_path_and_layout(tmp_path, suite):
    missing = tmp_path / "missing"
    pattern = rf"{suite}.*no such (file|directory) {re.escape(str(missing))}.*expected"
    with pytest.raises(DatasetLayoutError, match=pattern):
        run_benchmark(suite, OneHotEncoder(), missing)


def break_urban1k(root):
    write_urban1k(root, 3)
    (root / "image" / "1.jpg").unlink()


def break_flickr(root):
    write_flickr_full(root)
    (root / "results_20130124.token").write_text("a.jpg#0\tok\nbroken line\n")


def break_docci(root):
    write_docci(root)
    (root / "docci_descriptions.jsonlines").write_text("{oops\n")


@pytest.mark.parametrize("write,suite,split,message", [
    (break_urban1k, "urban1k", None, r"1 of 3 images are missing, the first is .*1\.jpg"),
    (lambda root: write_sharegpt4v(root, 5), "sharegpt4v-1k", None, "has 5 items, the suite needs the first 1000"),
    (break_flickr, "flickr30k", "full", "line 2 is not"),
    (break_docci, "docci", None, "line 1 is not valid JSON"),
])
def test_malformed_dataset_errors(tmp_path, write, suite, split, message):
    write(tmp_path)
    with pytest.raises(DatasetLayoutError, match=message):
        run_benchmark(suite, OneHotEncoder(), tmp_path, split=split)


def test_published_table_is_consistent():
    table = load_published()
    levels, sources = set(table["verified_levels"]), set(table["sources"])
    for suite, rows in table["results"].items():
        allowed = {"top1", "top5"} if SUITES[suite].task == "zeroshot" else RETRIEVAL_KEYS
        for row in rows:
            assert row["source"] in sources and row["backbone"] in ("B/32", "B/16", "L/14")
            assert set(row["values"]) <= allowed and all(v["verified"] in levels for v in row["values"].values())
    assert {r.source for r in published_rows("flickr30k", "full")} == {"longclip-model-zoo"}
    assert {r.source for r in published_rows("flickr30k", "karpathy-1k")} == {"proclip-table1"}
    assert {r.backbone for r in published_rows("urban1k", backbone="L/14")} == {"L/14"}
    assert published_rows("zeroshot", dataset=None) == [] and published_rows("zeroshot", dataset="imagenet-1k")


def test_backbone_of():
    def model(width, patch, layers, size=224):
        return SimpleNamespace(config=SimpleNamespace(vision=SimpleNamespace(
            width=width, patch_size=patch, layers=layers, image_size=size)))

    assert backbone_of(model(1024, 14, 24)) == "L/14" and backbone_of(model(768, 16, 12)) == "B/16"
    assert backbone_of(model(1024, 14, 24, 336)) == "L/14@336" and backbone_of(model(128, 8, 2)) is None
    assert backbone_of(OneHotEncoder()) is None


# --- a real tiny checkpoint ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "longclip-tiny.pt"
    torch.save(random_openai_state_dict(long_clip=True, seed=11), path)
    return f"longclip:{path}"


def test_real_model_matches_direct_encoding(tiny_spec, tmp_path):
    """Streaming through the suite gives the numbers of encoding the same files and captions directly."""
    from vision_long import load_encoder

    g = torch.Generator().manual_seed(2)
    data = write_urban1k(tmp_path, n=8)
    for i in range(8):  # noise images, so that the random model ranks them
        Image.fromarray((torch.rand(20, 24, 3, generator=g) * 255).byte().numpy()).save(data / "image" / f"{i}.jpg")
    model = load_encoder(tiny_spec)
    result = run_benchmark("urban1k", model, data, batch_size=3)
    read = SUITES["urban1k"].read(data, None)
    images = model.encode_image([Image.open(p).convert("RGB") for p in read.image_paths])
    texts = model.encode_text(read.captions, truncate=True)
    direct = retrieval_metrics_multi(texts, images, torch.arange(8))
    assert result.metrics == pytest.approx({k: 100 * v for k, v in direct.items()})


def _wired():
    from vision_long.commands import evaluate

    return "urban1k" in evaluate.SUITES


cli = pytest.mark.skipif(not _wired(), reason="benchmark suites not yet wired into vision_long/commands/evaluate.py")


@cli
@pytest.mark.parametrize("case", CASES)
def test_cli_every_suite_json(datasets, tiny_spec, capsys, case):
    from vision_long.cli import main

    suite, split, _, n_images, n_texts = CASES[case]
    argv = ["eval", "--suite", suite, "--data", str(datasets[case]), "--model", tiny_spec, "--json", "--workers", "0"]
    assert main(argv + (["--split", split] if split else [])) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == tiny_spec and record["suite"] == suite and record["context_length"] == 248
    assert record["n_images"] == n_images and record["n_texts"] == n_texts and record["truncate"] is True
    assert all(0 <= record[k] <= 100 for k in ({"top1"} if suite == "zeroshot" else RETRIEVAL_KEYS))


@cli
def test_cli_table_compare_and_plot(datasets, tiny_spec, tmp_path, capsys):
    from vision_long.cli import main

    plot = tmp_path / "flickr.png"
    argv = ["eval", "--suite", "flickr30k", "--split", "full", "--data", str(datasets["flickr30k-full"]),
            "--model", tiny_spec, "--workers", "0", "--compare", "L/14", "--plot", str(plot)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Long-CLIP's protocol" in out and "I2T R@1" in out and "truncate on" in out
    assert "Long-CLIP-L/14 [longclip-model-zoo]" in out and "ProCLIP" not in out  # full split: Long-CLIP's rows
    assert plot.stat().st_size > 0


@cli
def test_cli_plain_clip_is_evaluated_at_77_with_no_stretch(tmp_path, capsys):
    """The papers' CLIP rows are the 77-token model with captions cut at 77, not a stretched CLIP."""
    from vision_long.cli import main

    path = tmp_path / "clip-tiny.pt"
    torch.save(random_openai_state_dict(seed=12), path)
    data = write_urban1k(tmp_path / "urban", n=3, words=40)  # 126 tokens (reduced vocabulary): cut at 77 only
    argv = ["eval", "--suite", "urban1k", "--data", str(data), "--model", f"openai:{path}", "--json", "--workers", "0"]
    assert main(argv + ["--no-stretch"]) == 0 and main(argv) == 0
    plain, stretched = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (plain["context_length"], plain["n_truncated"]) == (77, 3)
    assert (stretched["context_length"], stretched["n_truncated"]) == (248, 0)


@cli
@pytest.mark.parametrize("extra,message", [
    ([], "needs --data DIR"),
    (["--data", "MISSING"], "no such directory"),
    (["--data", "URBAN", "--truncate", "off"], "--truncate on"),
    (["--data", "URBAN", "--split", "full"], "has no split 'full'"),
])
def test_cli_errors_are_one_line(tiny_spec, tmp_path, capsys, extra, message):
    from vision_long.cli import main

    long_captions = write_urban1k(tmp_path / "long", n=2, words=300)  # 300+ tokens > 248
    extra = [str(long_captions) if a == "URBAN" else str(tmp_path / a) if a == "MISSING" else a for a in extra]
    assert main(["eval", "--suite", "urban1k", "--model", tiny_spec, "--workers", "0", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
