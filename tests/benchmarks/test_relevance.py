"""The relevance-threshold calibration: best item per question, and the midpoint of the gap."""

from __future__ import annotations

import numpy as np

from benchmarks.relevance import best_scores, propose_threshold


def test_best_scores_take_each_questions_best_item() -> None:
    items = np.eye(3, dtype=np.float32)
    questions = {"a": [1.0, 0.0, 0.0], "b": [0.0, 0.6, 0.8]}

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray([questions[t] for t in texts], dtype=np.float32)

    assert best_scores(["a", "b"], items, encode) == [1.0, 0.8]


def test_threshold_is_the_midpoint_of_the_gap_and_reports_overlap() -> None:
    separated = propose_threshold(related=[0.70, 0.80, 0.90], unrelated=[0.40, 0.50])
    assert separated["threshold"] == 0.6 and separated["margin"] == 0.2
    assert separated["related_median"] == 0.8
    overlapping = propose_threshold(related=[0.45, 0.9], unrelated=[0.55])
    assert overlapping["margin"] < 0 and overlapping["threshold"] == 0.5
