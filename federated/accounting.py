"""Privacy accounting for client-level DP: the (epsilon, delta) a federated run spends.

With client-side fixed clipping, one client's whole update is bounded by the clipping norm and the
server adds Gaussian noise of std ``noise_multiplier * clip / clients`` to the mean, so each round
is a (sub)sampled Gaussian mechanism over clients. Microsoft's PRV accountant (Gopi et al. 2021)
composes the rounds numerically and bounds epsilon from above; nothing here is a home-made bound.
(Opacus has an accountant too, but its wheel installs a top-level ``benchmarks`` package that
shadows ours.)

The PRV accountant discretises the privacy loss on a grid as wide as the RDP bound on epsilon. At
small noise that grid outgrows memory (3 rounds at noise 0.003: OOM-killed at 17.6 GB; at 0.001:
27.5 GiB asked for), and past a width of about 11,000 its float128 exponentials overflow to an
epsilon of infinity (noise 0.01). Beyond ``MAX_PRV_DOMAIN`` the same package's RDP accountant gives
the (looser, still valid) upper bound instead: an epsilon in the thousands promises nothing either
way, and a run must never die over its receipt.
"""

from __future__ import annotations

import math
from typing import NamedTuple

DEFAULT_DELTA = 1e-5
EPS_ERROR = 0.01  # the accountant's allowed error on epsilon; we report its upper bound
# Widest PRV grid used (in units of epsilon): about 0.3 GB and 3 s here; wider falls back to RDP.
MAX_PRV_DOMAIN = 1000.0


class PrivacySpent(NamedTuple):
    """Client-level epsilon (an upper bound) and the accountant that gave it."""

    epsilon: float
    accountant: str


def client_level_privacy(noise_multiplier: float, rounds: int, sample_rate: float = 1.0,
                         delta: float = DEFAULT_DELTA) -> PrivacySpent:
    """Upper bound on epsilon after ``rounds`` rounds at this noise and client sampling rate.

    ``sample_rate`` is the share of clients sampled per round. The analysis of a rate below 1
    assumes Poisson sampling; Flower samples a fixed number of clients, for which the same rate is
    the usual stand-in. Without noise there is no guarantee (infinity).
    """
    if rounds < 0 or not 0 < sample_rate <= 1 or not 0 < delta < 1:
        raise ValueError("need rounds >= 0, a sample rate in (0, 1] and a delta in (0, 1)")
    if rounds == 0:
        return PrivacySpent(0.0, "no rounds")
    if noise_multiplier <= 0:
        return PrivacySpent(math.inf, "no noise")
    from prv_accountant import PRVAccountant
    from prv_accountant.accountant import compute_safe_domain_size
    from prv_accountant.other_accountants import RDP
    from prv_accountant.privacy_random_variables import GaussianMechanism, PoissonSubsampledGaussianMechanism

    if sample_rate == 1.0:
        mechanism = GaussianMechanism(noise_multiplier)
    else:
        mechanism = PoissonSubsampledGaussianMechanism(sampling_probability=sample_rate,
                                                       noise_multiplier=noise_multiplier)
    delta_error = delta / 1000
    if compute_safe_domain_size([mechanism], [rounds], EPS_ERROR, delta_error) > MAX_PRV_DOMAIN:
        _low, _estimate, upper = RDP(prvs=[mechanism]).compute_epsilon(delta=delta, num_self_compositions=[rounds])
        return PrivacySpent(float(upper), "RDP accountant (upper bound; too little noise for the PRV grid)")
    accountant = PRVAccountant(prvs=[mechanism], eps_error=EPS_ERROR, delta_error=delta_error,
                               max_self_compositions=[rounds])
    _low, _estimate, upper = accountant.compute_epsilon(delta=delta, num_self_compositions=[rounds])
    return PrivacySpent(float(upper), "PRV accountant (upper bound)")
