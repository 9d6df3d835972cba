"""benchmarks/gpu_attention.py: its device-independent parts, run on CPU (the script itself needs CUDA)."""

import math

import pytest
import torch

from benchmarks import gpu_attention


def test_attention_flops_count_attended_pairs_only():
    # causal: 1 + 3 pairs; bidirectional: 1 + 4 pairs; 4 * H * D FLOPs per pair.
    assert gpu_attention.attention_flops([1, 2], heads=3, head_dim=5, causal=True) == 4 * 3 * 5 * 4
    assert gpu_attention.attention_flops([1, 2], heads=3, head_dim=5, causal=False) == 4 * 3 * 5 * 5


def test_timed_configs_match_their_names():
    text, text_bf16, crops, documents = gpu_attention.timed_configs()
    assert len(text.lengths) == 256 and min(text.lengths) >= 5 and max(text.lengths) <= 248
    assert text.lengths == text_bf16.lengths and (text.heads, text.head_dim) == (12, 64)
    assert crops.lengths == [577] * 41 and not crops.causal
    assert len(documents.lengths) == 16 and min(documents.lengths) >= 256 and max(documents.lengths) <= 4096


def test_markdown_table():
    table = gpu_attention.markdown_table(["a", "b"], [[1, "x"], [2.5, True]])
    assert table == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | True |"


def test_main_without_cuda_exits_with_a_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_attention.main([])


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_correctness_check_and_timing_run_on_cpu():
    rows, notes, passed = gpu_attention.check_correctness("cpu", (torch.float32, torch.bfloat16), [1, 7, 40, 3])
    assert passed, rows
    checked = {(row[0], row[1]): row[4] for row in rows}
    assert set(checked) == {("triton", "float32"), ("sdpa", "float32"), ("sdpa", "bfloat16"), ("flex", "bfloat16")}
    assert "xformers unavailable for torch.float32" in notes
    assert checked["triton", "float32"] == checked["flex", "bfloat16"] == "n/a (no backward)"  # flex: none on CPU
    assert checked["sdpa", "float32"] != "n/a (no backward)"

    config = gpu_attention.Config("tiny", [3, 20, 7], 2, 16, torch.float32, True)
    rows, notes = gpu_attention.time_config(config, peak=1.0, deadline=math.inf, device="cpu")
    labels = [row[3] for row in rows]
    assert labels[0] == "sdpa, padded to longest" and {"triton", "sdpa", "flex"} <= set(labels)
    assert all(float(row[-1]) < 1e-5 for row in rows)
    rows, notes = gpu_attention.time_config(config, peak=1.0, deadline=-math.inf, device="cpu")
    assert rows == [] and all("time budget spent" in note for note in notes)
