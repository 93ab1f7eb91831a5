"""Retrieval metrics on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.retrieval_metrics import (
    average_precision,
    image_to_image_precision,
    text_to_image,
    zero_shot_top1,
)


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert average_precision(np.array([True, False, True, False])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([False, False])) == 0.0


def test_text_to_image_and_top1():
    images = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.2, 0.8]], dtype=np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1])
    classes = np.eye(2, dtype=np.float32)
    assert zero_shot_top1(images, labels, classes) == 1.0
    scores = text_to_image(classes, np.array([0, 1]), images, labels, p_at=2, r_at=1)
    assert scores == {"t2i_p@2": 1.0, "t2i_r@1": 0.5, "t2i_map": 1.0}


def test_image_to_image_excludes_the_query_itself():
    images = np.eye(3, dtype=np.float32)[[0, 0, 1, 1]]
    labels = np.array([0, 0, 1, 1])
    assert image_to_image_precision(images, labels, k=1) == 1.0
