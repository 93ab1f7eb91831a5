"""Privacy accounting for client-level DP: the (epsilon, delta) a federated run spends.

With client-side fixed clipping, one client's whole update is bounded by the clipping norm and the
server adds Gaussian noise of std ``noise_multiplier * clip / clients`` to the mean, so each round
is a (sub)sampled Gaussian mechanism over clients. Microsoft's PRV accountant (Gopi et al. 2021)
composes the rounds numerically and bounds epsilon from above; nothing here is a home-made bound.
(Opacus has an accountant too, but its wheel installs a top-level ``benchmarks`` package that
shadows ours.)
"""

from __future__ import annotations

import math

DEFAULT_DELTA = 1e-5
EPS_ERROR = 0.01  # the accountant's allowed error on epsilon; we report its upper bound


def client_level_epsilon(noise_multiplier: float, rounds: int, sample_rate: float = 1.0,
                         delta: float = DEFAULT_DELTA) -> float:
    """Upper bound on epsilon after ``rounds`` rounds at this noise and client sampling rate.

    ``sample_rate`` is the share of clients sampled per round. The analysis of a rate below 1
    assumes Poisson sampling; Flower samples a fixed number of clients, for which the same rate is
    the usual stand-in. Without noise there is no guarantee (infinity).
    """
    if rounds < 0 or not 0 < sample_rate <= 1 or not 0 < delta < 1:
        raise ValueError("need rounds >= 0, a sample rate in (0, 1] and a delta in (0, 1)")
    if rounds == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    from prv_accountant import PRVAccountant
    from prv_accountant.privacy_random_variables import GaussianMechanism, PoissonSubsampledGaussianMechanism

    if sample_rate == 1.0:
        mechanism = GaussianMechanism(noise_multiplier)
    else:
        mechanism = PoissonSubsampledGaussianMechanism(sampling_probability=sample_rate,
                                                       noise_multiplier=noise_multiplier)
    accountant = PRVAccountant(prvs=[mechanism], eps_error=EPS_ERROR, delta_error=delta / 1000,
                               max_self_compositions=[rounds])
    _low, _estimate, upper = accountant.compute_epsilon(delta=delta, num_self_compositions=[rounds])
    return float(upper)
