"""A real Flower simulation (Ray, 2 CPUs): 2 clients, 1 round, for each aggregation mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.server.strategy import FedAvg as LegacyFedAvg

from federated import server_app, task
from federated.simulation import simulate
from middleware.encoder.heads import load_heads
from pmirs.errors import FederatedError


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


@pytest.mark.slow
def test_secaggplus_gives_the_plain_mean_and_no_client_value_in_the_clear(
    tmp_path: Path, stores: Path, base_heads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list = []
    aggregate_fit = LegacyFedAvg.aggregate_fit

    def spy(self: LegacyFedAvg, server_round: int, results: list, failures: list) -> tuple:
        received.extend(fitres for _proxy, fitres in results)
        return aggregate_fit(self, server_round, results, failures)

    monkeypatch.setattr(LegacyFedAvg, "aggregate_fit", spy)
    settings = {"num-server-rounds": 1, "batch-size": 4, "heads-path": str(base_heads), "partitions-root": str(stores),
                "partition": "domain", "client-weighting": "uniform"}
    plain = simulate({**settings, "out-dir": str(tmp_path / "plain")}, num_clients=2)
    secure = simulate({**settings, "out-dir": str(tmp_path / "secure"), "secagg": True}, num_clients=2)
    # What the server saw of each client: masked arrays only, no metric, an example count of 1.
    assert len(received) == 2
    assert all(fitres.metrics == {} and fitres.num_examples == 1 for fitres in received)
    # The unmasked sum is the plain mean of the same (seeded) updates, up to SecAgg+'s quantisation.
    plain_state, secure_state = load_heads(plain["checkpoint"]).state_dict, load_heads(secure["checkpoint"]).state_dict
    assert max(float((plain_state[k] - secure_state[k]).abs().max()) for k in plain_state) < 1e-4
    # Its metrics are means of the same clients' values (the plain run averages them per photo).
    losses = [m["1"][task.TRAIN_LOSS_KEY] for m in (plain["train_metrics"], secure["train_metrics"])]
    assert losses[1] == pytest.approx(losses[0], rel=0.2) and losses[1] > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", [{}, {"secagg": True}], ids=["fedavg", "secagg+"])
def test_a_run_in_which_every_client_fails_is_an_error_not_a_checkpoint(
    tmp_path: Path, base_heads: Path, mode: dict
) -> None:
    # No client finds its store: every reply is an error. Flower carries on with the weights as they were
    # (SecAgg+ halts); the run must not pass that off as trained heads.
    out = tmp_path / "out"
    settings = {"num-server-rounds": 1, "batch-size": 4, "heads-path": str(base_heads),
                "partitions-root": str(tmp_path / "no-stores"), "out-dir": str(out), "partition": "domain",
                "client-weighting": "uniform", **mode}
    with pytest.raises(FederatedError, match="no round aggregated any client update"):
        simulate(settings, num_clients=2)
    assert not list(out.glob("*.pt"))


def test_the_round_clock_names_rounds_that_left_the_weights_unchanged() -> None:
    clock = server_app._RoundClock(on_round=None)
    start, moved = {"w": np.zeros(3)}, {"w": np.array([0.0, 1e-7, 0.0])}
    for server_round, state in enumerate([start, start, moved, moved]):
        clock(server_round, state)
    assert clock.failed_rounds == [1, 3]
    assert len(clock.seconds) == 3
