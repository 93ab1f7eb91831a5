"""A real Flower simulation (Ray, 2 CPUs): 2 clients, 1 round, for each aggregation mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federated import task
from federated.simulation import simulate
from middleware.encoder.heads import load_heads


@pytest.mark.slow
@pytest.mark.parametrize("mode", [{}, {"secagg": True}, {"dp-noise-multiplier": 0.01, "dp-clipping-norm": 1.0,
                                              "client-weighting": "uniform"}],
                         ids=["fedavg", "secagg+", "dp"])
def test_one_round_changes_the_weights_and_reports_metrics(
    tmp_path: Path, stores: Path, base_heads: Path, mode: dict
) -> None:
    rounds: list[int] = []
    settings = {"num-server-rounds": 1, "batch-size": 4, "heads-path": str(base_heads),
                "partitions-root": str(stores), "out-dir": str(tmp_path / "out"), "partition": "domain", **mode}
    manifest = simulate(settings, num_clients=2, on_round=lambda r, _state: rounds.append(r))
    assert rounds == [0, 1]
    assert manifest["train_metrics"]["1"]["train-loss"] > 0
    # Each client's update norm is reported, except under SecAgg+, where the server sees only the sum.
    assert (task.UPDATE_NORM_KEY in manifest["train_metrics"]["1"]) is not mode.get("secagg", False)
    assert len(manifest["round_seconds"]) == 1
    trained = load_heads(manifest["checkpoint"])
    assert trained.config.extra["federated"]["partition"] == "domain"
    # Stub stores hold no thumbnails: the image terms fit sharp photos (here: every photo).
    assert manifest["train_metrics"]["1"][task.SMALL_SHARE_KEY] == 0.0
    assert trained.config.tuned_photos == manifest["tuned_photos"] == "sharp"
    base = task.load_base(base_heads)
    changed = [not np.allclose(trained.state_dict[k], v) for k, v in base.state_dict.items()]
    assert any(changed)
