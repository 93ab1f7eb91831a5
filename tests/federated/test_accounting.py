"""Client-level DP accounting: epsilon behaves as the Gaussian mechanism says it must."""

from __future__ import annotations

import math

import pytest

from federated import server_app
from federated.accounting import MAX_PRV_DOMAIN, client_level_privacy
from federated.server_app import dp_manifest, run_server
from federated.task import FederatedSettings


def client_level_epsilon(noise_multiplier: float, rounds: int, **kwargs: float) -> float:
    return client_level_privacy(noise_multiplier, rounds, **kwargs).epsilon


def test_epsilon_shrinks_with_noise_and_grows_with_rounds() -> None:
    one_round = client_level_epsilon(1.0, 1)
    ten_rounds = client_level_epsilon(1.0, 10)
    more_noise = client_level_epsilon(4.0, 10)
    assert 0 < more_noise < ten_rounds
    assert one_round < ten_rounds < 10 * one_round  # RDP composes better than linearly
    # One full-participation round is the plain Gaussian mechanism: the classic analytic bound
    # sqrt(2 ln(1.25/delta)) / sigma (for eps <= 1) must not be beaten by much at sigma = 5.
    classic = math.sqrt(2 * math.log(1.25 / 1e-5)) / 5.0
    assert 0.5 * classic < client_level_epsilon(5.0, 1) < 1.5 * classic


def test_sampling_fewer_clients_spends_less() -> None:
    assert client_level_epsilon(1.0, 10, sample_rate=0.3) < client_level_epsilon(1.0, 10, sample_rate=1.0)


def test_no_noise_means_no_guarantee_and_bad_arguments_are_refused() -> None:
    assert client_level_epsilon(0.0, 5) == math.inf
    assert client_level_epsilon(1.0, 0) == 0.0
    with pytest.raises(ValueError):
        client_level_epsilon(1.0, 5, sample_rate=0.0)
    with pytest.raises(ValueError):
        client_level_epsilon(1.0, 5, delta=1.0)


def test_the_manifest_records_epsilon_only_for_dp_runs() -> None:
    assert "epsilon" not in dp_manifest(FederatedSettings())
    record = dp_manifest(FederatedSettings(num_server_rounds=10, dp_noise_multiplier=1.0, dp_clipping_norm=0.5))
    assert record["enabled"] and record["epsilon"] == pytest.approx(client_level_epsilon(1.0, 10))


def test_too_little_noise_for_the_prv_grid_gets_the_rdp_bound_fast() -> None:
    # The PRV grid for noise 0.001 over 3 rounds needs ~28 GB: the old accountant raised MemoryError
    # (at 0.003 it was OOM-killed; at 0.01 it overflowed to an epsilon of infinity).
    spent = client_level_privacy(0.001, 3)
    assert spent.accountant.startswith("RDP") and MAX_PRV_DOMAIN < spent.epsilon < math.inf
    # The Gaussian mechanism's privacy loss composes to rounds / (2 sigma^2); a valid bound is above it.
    assert spent.epsilon > 3 / (2 * 0.001 ** 2)
    # Either side of the switch (grid widths 1,029 and 988 at 3 rounds), more noise still spends less.
    rdp_side, prv_side = client_level_privacy(0.044, 3), client_level_privacy(0.045, 3)
    assert rdp_side.accountant.startswith("RDP") and prv_side.accountant.startswith("PRV")
    assert prv_side.epsilon < rdp_side.epsilon


def test_a_run_states_its_privacy_before_it_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_accountant(*_args: object) -> None:
        raise RuntimeError("accountant failed")

    monkeypatch.setattr(server_app, "client_level_privacy", no_accountant)
    dp_settings = FederatedSettings(num_server_rounds=3, dp_noise_multiplier=0.1, dp_clipping_norm=1.0)
    # The grid is never reached: accounting fails before the base is loaded or a round is sent.
    with pytest.raises(RuntimeError, match="accountant failed"):
        run_server(grid=None, context=None, settings=dp_settings)  # type: ignore[arg-type]
