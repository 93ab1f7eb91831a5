"""The PMIRS paper's multi-label evaluation protocol, implemented exactly as the paper states it.

For a domain: draw N candidate labels; each gets one phrase from a random template; every query
image of those labels is scored against the N phrases with softmax(100 * cosine); the top
K = max(1, round(0.2 N)) labels whose probability is at least t = 1.2 / sqrt(ln(N + 0.1)) are
predicted. TP: the true label is predicted; FN: it is not; FP: each wrong predicted label.
Precision, recall and F1 are micro-averaged over queries, then averaged over random draws.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from middleware.encoder.templates import PAPER_TEMPLATES

PAPER_LOGIT_SCALE = 100.0


def paper_threshold(n: int) -> float:
    """Probability a label needs to be predicted among ``n`` candidates."""
    return 1.2 / math.sqrt(math.log(n + 0.1))


def paper_top_k(n: int) -> int:
    """How many labels at most are predicted among ``n`` candidates."""
    return max(1, round(0.2 * n))


@dataclass
class Counts:
    """Micro-averaged confusion counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        return self

    def scores(self) -> dict[str, float]:
        """Precision, recall and F1 (0 where undefined)."""
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def count_predictions(image_emb: np.ndarray, phrase_emb: np.ndarray, true_index: np.ndarray) -> Counts:
    """Score queries against candidate phrases with the paper's top-K-above-threshold rule."""
    n = phrase_emb.shape[0]
    probs = softmax(PAPER_LOGIT_SCALE * (image_emb @ phrase_emb.T))
    k, threshold = min(paper_top_k(n), n), paper_threshold(n)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top_probs = np.take_along_axis(probs, top, axis=1)
    predicted = top_probs >= threshold
    hit = (top == true_index[:, None]) & predicted
    tp = int(hit.any(axis=1).sum())
    return Counts(tp=tp, fp=int(predicted.sum()) - tp, fn=len(true_index) - tp)


def draw_phrases(labels: Sequence[str], rng: np.random.Generator,
                 templates: Sequence[str] = PAPER_TEMPLATES) -> list[str]:
    """One phrase per label, each from a random template: how every draw of the protocol asks."""
    return [templates[rng.integers(len(templates))].format(label) for label in labels]


def run_paper_protocol(
    image_emb_by_label: Mapping[str, np.ndarray],
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    n_values: Sequence[int | str] = (5, 10, 15, "all"),
    draws: int = 6,
    seed: int = 0,
    templates: Sequence[str] = PAPER_TEMPLATES,
) -> dict[str, dict[str, float]]:
    """Mean precision/recall/F1 over ``draws`` random label draws for each N, and the F1's standard
    error over the draws (``f1_se``).

    ``N="all"`` (or N above the number of labels) uses every label; the key stays as given.
    """
    if draws < 1:
        raise ValueError(f"the paper protocol needs at least one label draw per N, got {draws}")
    labels = sorted(image_emb_by_label)
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, float]] = {}
    for n_value in n_values:
        n = len(labels) if n_value == "all" else min(int(n_value), len(labels))
        per_draw = []
        for _ in range(draws):
            chosen = [labels[i] for i in rng.choice(len(labels), size=n, replace=False)]
            phrase_emb = encode_texts(draw_phrases(chosen, rng, templates))
            counts = Counts()
            for index, label in enumerate(chosen):
                queries = image_emb_by_label[label]
                counts += count_predictions(queries, phrase_emb, np.full(len(queries), index))
            per_draw.append(counts.scores())
        results[str(n_value)] = {key: float(np.mean([d[key] for d in per_draw])) for key in per_draw[0]}
        results[str(n_value)]["f1_se"] = standard_error([d["f1"] for d in per_draw])
    return results


def draws_argument(text: str) -> int:
    """``--draws`` of a benchmark command: a whole number of label draws, at least 1 (a usage error,
    not a traceback after the features are loaded)."""
    try:
        draws = int(text)
    except ValueError:
        draws = 0
    if draws < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of label draws >= 1, got {text!r}")
    return draws


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-draw scores (0 for a single draw): how far another set of
    draws may move the mean. Which labels are drawn together matters a lot at N=10 of 15 classes."""
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))
