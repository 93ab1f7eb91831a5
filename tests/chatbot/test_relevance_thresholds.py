"""Relevance thresholds follow the encoder's heads unless the caller sets them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.relevance import write_calibrated_heads
from chatbot.relevance import BASE_THRESHOLDS, RelevanceThresholds, resolve_thresholds, thresholds_for
from middleware.encoder.heads import DualHeads, HeadsConfig, load_heads, save_heads


def test_encoders_without_calibration_get_the_base_values() -> None:
    assert thresholds_for(SimpleNamespace(relevance=None)) == BASE_THRESHOLDS
    assert thresholds_for(object()) == BASE_THRESHOLDS


def test_calibrated_values_apply_and_explicit_ones_win() -> None:
    middleware = SimpleNamespace(encoder=SimpleNamespace(relevance={"image": 0.41, "text": 0.52}))
    assert resolve_thresholds(middleware, None, None) == RelevanceThresholds(0.41, 0.52)
    assert resolve_thresholds(middleware, 0.3, None) == RelevanceThresholds(0.3, 0.52)


def test_calibrated_heads_carry_the_thresholds_and_the_same_weights(tmp_path: Path) -> None:
    bank = np.eye(1000, 384, dtype=np.float32)
    source = tmp_path / "heads.pt"
    save_heads(source, DualHeads(HeadsConfig()), bank)
    results = {"image": {"threshold": 0.44}, "text": {"threshold": 0.57}}
    version = write_calibrated_heads(source, results, tmp_path / "calibrated.pt")
    calibrated, original = load_heads(tmp_path / "calibrated.pt"), load_heads(source)
    assert calibrated.version == version != original.version
    assert calibrated.config.extra["relevance"] == {"image": 0.44, "text": 0.57}
    assert all(np.array_equal(calibrated.state_dict[k], v) for k, v in original.state_dict.items())
