"""Standard retrieval metrics over embeddings: zero-shot top-1, text->image P@k/R@k/mAP, image->image P@k."""

from __future__ import annotations

import numpy as np


def zero_shot_top1(image_emb: np.ndarray, image_labels: np.ndarray, class_emb: np.ndarray) -> float:
    """Fraction of images whose most similar class embedding is their own class."""
    predicted = np.argmax(image_emb @ class_emb.T, axis=1)
    return float(np.mean(predicted == image_labels))


def average_precision(relevant_sorted: np.ndarray) -> float:
    """AP of one ranking given the relevance (bool) of each ranked item."""
    hits = np.cumsum(relevant_sorted)
    if hits[-1] == 0:
        return 0.0
    precision_at_hits = hits[relevant_sorted] / (np.flatnonzero(relevant_sorted) + 1)
    return float(precision_at_hits.mean())


def text_to_image(
    query_emb: np.ndarray, query_labels: np.ndarray, image_emb: np.ndarray, image_labels: np.ndarray,
    p_at: int = 10, r_at: int = 50,
) -> dict[str, float]:
    """Mean precision@p_at, recall@r_at and mAP of text queries ranking all images."""
    order = np.argsort(-(query_emb @ image_emb.T), axis=1, kind="stable")
    precisions, recalls, aps = [], [], []
    for row, label in zip(order, query_labels, strict=True):
        relevant = image_labels[row] == label
        total = max(int(relevant.sum()), 1)
        precisions.append(relevant[:p_at].mean())
        recalls.append(relevant[:r_at].sum() / total)
        aps.append(average_precision(relevant))
    return {
        f"t2i_p@{p_at}": float(np.mean(precisions)),
        f"t2i_r@{r_at}": float(np.mean(recalls)),
        "t2i_map": float(np.mean(aps)),
    }


def image_to_image_precision(image_emb: np.ndarray, image_labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of same-class photos among each photo's k nearest other photos."""
    sims = image_emb @ image_emb.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, kth=min(k, len(sims) - 1) - 1, axis=1)[:, :k]
    return float(np.mean(image_labels[top] == image_labels[:, None]))
