"""Evaluation metrics: retrieval recall in both directions, multi-caption and hard-negative variants."""

from vision_long.eval.retrieval_metrics import (
    cosine_similarity_matrix,
    group_t2i_r1,
    recall_at_k,
    retrieval_metrics,
    retrieval_metrics_multi,
)

__all__ = [
    "cosine_similarity_matrix",
    "group_t2i_r1",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_metrics_multi",
]
