"""Client-level DP accounting: epsilon behaves as the Gaussian mechanism says it must."""

from __future__ import annotations

import math

import pytest

from federated.accounting import client_level_epsilon
from federated.server_app import dp_manifest
from federated.task import FederatedSettings


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
