"""The tuned-tail bound: the tower's last layers with a free classifier, epoch chosen on held-out rows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.headroom import held_out_rows
from benchmarks.tuned_tail import TailInputs, TailSettings, start_tail, train_tuned_tail

PREHEAD_SHAPE = (320, 7, 7)  # the last conv layer's input maps at 224 px (blocks=0 tunes that layer alone)


def _maps(labels: np.ndarray, seed: int) -> np.ndarray:
    """Pre-head-like maps in which each class lifts its own block of 40 channels."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.0, 1.0, size=(len(labels), *PREHEAD_SHAPE)).astype(np.float32)
    for row, label in enumerate(labels):
        maps[row, 40 * label : 40 * (label + 1)] += 2.0
    return maps.astype(np.float16)


def _train(lite_encoder, labels: np.ndarray, epochs: int = 4) -> tuple:
    settings = TailSettings(blocks=0, epochs=epochs, batch_size=16, classifier_lr=1e-2)
    tail = start_tail(lite_encoder.image_tower.model, None, 4, settings)
    maps = _maps(np.repeat(np.arange(4), len(labels) // 4), seed=1)  # the maps follow the true classes
    inputs = TailInputs(maps, maps[:, ::-1].copy(), small=False)  # "mirror": the channels in reverse
    held = held_out_rows(labels)
    return tail, inputs, held, train_tuned_tail(tail, inputs, labels, held, settings)


def test_the_tail_learns_classes_its_maps_show_and_not_shuffled_labels(lite_encoder) -> None:
    labels = np.repeat(np.arange(4), 30)
    _, _, _, learned = _train(lite_encoder, labels)
    assert max(learned["held_out_accuracy"]) >= 0.9
    shuffled = np.random.default_rng(2).permutation(labels)
    _, _, _, guessed = _train(lite_encoder, shuffled)
    assert max(guessed["held_out_accuracy"][1:]) <= 0.6  # chance is 0.25 on 24 held-out rows


def test_the_tail_keeps_the_epoch_most_accurate_on_held_out_rows(lite_encoder) -> None:
    labels = np.repeat(np.arange(4), 30)
    tail, inputs, held, record = _train(lite_encoder, labels, epochs=3)
    history = record["held_out_accuracy"]
    assert len(history) == 4 and record["chosen_epoch"] == int(np.argmax(history))
    scores = tail.log_probs(inputs.maps[held], inputs.mirrored[held])
    assert float((scores.argmax(axis=1) == labels[held]).mean()) == pytest.approx(max(history), abs=1e-4)
    assert held.sum() == 4 * 6  # a fifth of each class
    again = _train(lite_encoder, labels, epochs=3)  # the settings' seed fixes the start, order, flips and dropout
    assert again[3] == record
    np.testing.assert_array_equal(again[0].log_probs(inputs.maps, inputs.mirrored),
                                  tail.log_probs(inputs.maps, inputs.mirrored))
