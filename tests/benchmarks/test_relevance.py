"""The relevance-threshold calibration: best item per question, and the midpoint of the gap."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.relevance import best_scores, gating_on, propose_threshold, thumbnail_copies


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


def test_gating_counts_what_a_threshold_from_elsewhere_lets_through() -> None:
    gating = gating_on(related=[0.70, 0.80, 0.90], unrelated=[0.79, 0.50], threshold=0.78)
    assert gating["related_answered"] == 2 and gating["unrelated_let_through"] == 1
    assert gating["margin"] < 0 and gating["at_threshold"] == 0.78


def test_thumbnail_copies_keep_the_aspect_and_leave_the_photos_alone() -> None:
    photo = Image.new("RGB", (400, 300), (10, 20, 30))
    (copy,) = thumbnail_copies([photo])
    assert copy.size == (64, 48) and photo.size == (400, 300)
