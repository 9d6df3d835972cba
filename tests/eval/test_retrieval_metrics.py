"""Retrieval metrics on hand-built similarity matrices and embeddings."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision_long.eval.retrieval_metrics import (
    group_t2i_r1,
    recall_at_k,
    retrieval_metrics,
    retrieval_metrics_multi,
)


def reference_recall(sim: torch.Tensor, k: int, targets: list[int]) -> float:
    """Pessimistic rank by brute force: a hit when fewer than k other candidates score at least the target's."""
    hits = 0
    for q, t in enumerate(targets):
        rivals = sum(1 for c in range(sim.shape[1]) if c != t and sim[q, c] >= sim[q, t])
        hits += rivals < k
    return hits / len(targets)


def test_perfect_encoder_scores_one():
    emb = torch.nn.functional.normalize(torch.randn(50, 32), dim=-1)
    metrics = retrieval_metrics(emb, emb * 3.0)  # cosine: the scale does not matter
    assert set(metrics) == {f"{d}_r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)}
    assert all(v == 1.0 for v in metrics.values())


def test_shuffled_pairs_score_near_chance():
    n = 500
    text, image = torch.randn(n, 64), torch.randn(n, 64)
    metrics = retrieval_metrics(text, image, ks=(1, 10))
    for direction in ("t2i", "i2t"):
        assert metrics[f"{direction}_r1"] < 0.02
        assert metrics[f"{direction}_r10"] == pytest.approx(10 / n, abs=0.02)
    derangement = torch.roll(torch.arange(n), 1)
    assert retrieval_metrics(text, text[derangement], ks=(1,))["t2i_r1"] == 0.0


def test_ties_count_as_misses():
    assert recall_at_k(torch.zeros(6, 6), k=1) == 0.0
    assert recall_at_k(torch.zeros(6, 6), k=5) == 0.0
    assert recall_at_k(torch.zeros(6, 6), k=6) == 1.0  # every candidate is in the top 6
    sim = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.5, 0.0, 0.4]])
    assert recall_at_k(sim, k=1) == pytest.approx(1 / 3)  # row 0 ties, row 1 hits, row 2 misses
    assert recall_at_k(sim, k=2) == 1.0


def test_explicit_targets():
    sim = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.1]])
    assert recall_at_k(sim, k=1, targets=torch.tensor([1, 0])) == 1.0
    assert recall_at_k(sim, k=1, targets=torch.tensor([2, 1])) == 0.0
    assert recall_at_k(sim, k=2, targets=torch.tensor([0, 1])) == 0.5  # 0.1 trails two rivals, 0.2 one


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    nq=st.integers(1, 6),
    nc=st.integers(1, 6),
    k=st.integers(1, 4),
)
def test_recall_matches_brute_force_on_tied_matrices(data, nq, nc, k):
    values = data.draw(st.lists(st.integers(0, 3), min_size=nq * nc, max_size=nq * nc))
    targets = data.draw(st.lists(st.integers(0, nc - 1), min_size=nq, max_size=nq))
    sim = torch.tensor(values, dtype=torch.float32).reshape(nq, nc)
    assert recall_at_k(sim, k, torch.tensor(targets)) == pytest.approx(reference_recall(sim, k, targets))


def test_multi_caption_any_caption_counts_for_image_to_text():
    image = torch.eye(3)
    # captions 0, 1 -> image 0; 2, 3 -> image 1; 4, 5 -> image 2
    text_to_image = torch.tensor([0, 0, 1, 1, 2, 2])
    text = torch.stack(
        [
            image[1] + 0.1 * image[0],  # image 0's first caption points at image 1
            image[0],
            image[1],
            image[1],  # both of image 1's captions tie at the top: they never count against it
            image[2],
            image[0] + 0.5 * image[2],  # image 2's second caption points at image 0
        ]
    )
    metrics = retrieval_metrics_multi(text, image, text_to_image, ks=(1, 2))
    assert metrics["i2t_r1"] == 1.0
    assert metrics["t2i_r1"] == pytest.approx(4 / 6)
    assert metrics["t2i_r2"] == 1.0


def test_multi_caption_constant_similarity_scores_zero():
    metrics = retrieval_metrics_multi(torch.ones(10, 4), torch.ones(5, 4), torch.arange(10) // 2, ks=(1,))
    assert metrics == {"t2i_r1": 0.0, "i2t_r1": 0.0}


def test_group_metric():
    image = torch.eye(5)
    perfect = image.clone()
    assert group_t2i_r1(perfect, image, [[0, 1, 2], [3, 4]]) == 1.0
    blind = perfect.clone()
    blind[3] = blind[4] = image[3] + image[4]  # captions 3 and 4 look alike: both tie, both miss
    assert group_t2i_r1(blind, image, [[0, 1, 2], [3, 4]]) == pytest.approx(3 / 5)
    blind[3] = blind[4] = image[3]  # all read as caption 3: only text 3 is right
    assert group_t2i_r1(blind, image, [[0, 1, 2], [3, 4]]) == pytest.approx(4 / 5)
    # only the group's own images compete: image 1 outscores image 0 for text 0 but is outside its group
    text = torch.stack([image[0] + 2 * image[1], image[1], image[2], image[3], image[4]])
    assert group_t2i_r1(text, image, [[0, 2], [1, 3, 4]]) == 1.0


def test_errors():
    with pytest.raises(ValueError, match="finite"):
        recall_at_k(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="k must"):
        recall_at_k(torch.eye(3), k=0)
    with pytest.raises(ValueError, match="Nq <= Nc"):
        recall_at_k(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics_multi(torch.randn(4, 8), torch.randn(3, 8), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="at least 2"):
        group_t2i_r1(torch.eye(3), torch.eye(3), [[0]])
    with pytest.raises(ValueError, match="Tensor"):
        retrieval_metrics(torch.randn(3, 8), torch.randn(3, 4))
