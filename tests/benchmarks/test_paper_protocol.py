"""The paper's protocol on hand-computed toy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.paper_protocol import (
    Counts,
    count_predictions,
    draws_argument,
    paper_threshold,
    paper_top_k,
    run_paper_protocol,
    standard_error,
)


def test_threshold_and_k_follow_the_paper():
    assert paper_threshold(5) == pytest.approx(1.2 / math.sqrt(math.log(5.1)))
    assert paper_threshold(10) == pytest.approx(0.78911, abs=1e-5)
    assert [paper_top_k(n) for n in (1, 5, 10, 15, 17, 27)] == [1, 1, 2, 3, 3, 5]


def test_toy_case_counts_by_hand():
    # Five candidate phrases along the axes; N=5 -> K=1, t=0.940.
    phrases = np.eye(5, dtype=np.float32)
    queries = np.stack([
        np.eye(5)[0],  # confident and right -> TP
        (np.eye(5)[1] + np.eye(5)[2]) / math.sqrt(2),  # split 50/50 -> nothing predicted -> FN
        np.eye(5)[3],  # confident and wrong (true is 4) -> FP + FN
    ]).astype(np.float32)
    counts = count_predictions(queries, phrases, np.array([0, 1, 4]))
    assert (counts.tp, counts.fp, counts.fn) == (1, 1, 2)
    scores = counts.scores()
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4)


def test_top_k_above_threshold_with_two_predictions():
    # N=20 -> K=4, t=1.2/sqrt(ln 20.1)=0.6916: one label alone can pass, two cannot both pass.
    phrases = np.eye(20, dtype=np.float32)
    query = np.zeros((1, 20), dtype=np.float32)
    query[0, 7] = 1.0
    assert (count_predictions(query, phrases, np.array([7])).tp) == 1
    assert (count_predictions(query, phrases, np.array([8])).fp) == 1


def test_empty_counts_score_zero():
    assert Counts().scores() == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_threshold_above_one_means_nothing_is_predicted_for_tiny_n():
    # The paper's t exceeds 1 for N <= 3, so no label can ever be predicted there.
    assert paper_threshold(3) > 1.0
    counts = count_predictions(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.arange(3))
    assert (counts.tp, counts.fp, counts.fn) == (0, 0, 3)


def test_run_keeps_keys_and_caps_n_at_label_count():
    labels = [f"l{i}" for i in range(6)]
    basis = {label: np.eye(6)[i] for i, label in enumerate(labels)}

    def encode(phrases):
        return np.stack([basis[p.split()[-1]] for p in phrases]).astype(np.float32)

    images = {label: np.tile(basis[label], (4, 1)).astype(np.float32) for label in labels}
    result = run_paper_protocol(images, encode, n_values=(5, 10, "all"), draws=3, seed=1)
    assert list(result) == ["5", "10", "all"]
    assert result["all"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "f1_se": 0.0}
    assert result["10"] == result["all"]
    assert result["5"]["f1"] == 1.0


def test_the_f1_standard_error_says_how_much_the_draws_disagree():
    assert standard_error([0.8, 0.9, 1.0]) == pytest.approx(0.1 / math.sqrt(3))
    assert standard_error([0.7]) == 0.0
    # One photo per label, each label's phrase embedded as its photo; "b" looks exactly like "a", so a
    # draw holding both splits them 50/50 (nothing predicted) and one holding either is all right.
    emb = {label: np.eye(6, dtype=np.float32)[[i]] for i, label in enumerate("abcdef")}
    emb["b"] = emb["a"]

    def encode(texts):
        return np.concatenate([emb[t.split()[-1]] for t in texts])

    one = run_paper_protocol(emb, encode, (5,), draws=1)["5"]
    many = run_paper_protocol(emb, encode, (5,), draws=30)["5"]
    assert one["f1_se"] == 0.0
    assert 0.0 < many["f1_se"] < 0.2
    assert 0.6 < many["f1"] < 1.0


def test_zero_draws_is_refused_by_the_protocol_and_on_the_command_line():
    import argparse

    emb = {label: np.eye(6, dtype=np.float32)[[i]] for i, label in enumerate("abcdef")}
    with pytest.raises(ValueError, match="at least one label draw"):
        run_paper_protocol(emb, lambda texts: np.zeros((len(texts), 6), np.float32), (5,), draws=0)
    assert draws_argument("100") == 100
    for text in ("0", "-3", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="label draws"):
            draws_argument(text)
