"""Round metrics that travel inside the SecAgg+ masked sum, so the server learns only their mean.

Flower's ``secaggplus_mod`` masks a client's parameters, but it sends the reply's FitRes metrics
and example count in the clear. Under SecAgg+ a PMIRS client therefore sends no clear metrics and
a clear example count of 1. Its train loss and thumbnail share ride as one extra array at the end
of the masked vector, which the server strips off. Its true aggregation weight scales the vector
inside the protocol only. The server gets the metrics' mean, weighted like the updates, and never
one client's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ConfigRecord, Message

from federated import task
from pmirs.errors import FederatedError

SECURE_METRIC_KEYS = (task.TRAIN_LOSS_KEY, task.SMALL_SHARE_KEY)
# SecAgg+ clips every masked value to [-8, 8] (Flower's default clipping range). Losses travel
# divided by this scale, far inside that range; thumbnail shares lie in [0, 1] already.
_SCALES = {task.TRAIN_LOSS_KEY: 100.0, task.SMALL_SHARE_KEY: 1.0}
# Where Flower's compat layer puts FitRes.num_examples in a reply (flwr 1.42).
_CLEAR_WEIGHT_RECORD, _CLEAR_WEIGHT_KEY = "fitres.num_examples", "num_examples"


def with_metrics(weights: Sequence[np.ndarray], metrics: Mapping[str, float]) -> list[np.ndarray]:
    """``weights`` plus one trailing array holding the secure metrics (zeros where absent)."""
    row = [float(metrics.get(key, 0.0)) / _SCALES[key] for key in SECURE_METRIC_KEYS]
    return [*weights, np.asarray(row, dtype=np.float64)]


def split_metrics(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, float]]:
    """Undo ``with_metrics`` (on one client's arrays or on their aggregate): (weights, metrics)."""
    *weights, row = arrays
    if np.shape(row) != (len(SECURE_METRIC_KEYS),):
        raise FederatedError(f"the last SecAgg+ array holds {np.shape(row)} values, not the "
                             f"{len(SECURE_METRIC_KEYS)} secure metrics")
    return list(weights), {key: float(v) * _SCALES[key] for key, v in zip(SECURE_METRIC_KEYS, row, strict=True)}


def hide_clear_weight(reply: Message) -> None:
    """Replace the example count a SecAgg+ reply carries in the clear with 1.

    ``secaggplus_mod`` has already folded the true weight into the masked vector, and the server
    divides the masked sum by the sum of those weights. Its legacy strategy then averages
    identical copies of that aggregate, so the clear count changes nothing but what it reveals.
    """
    record = reply.content.metric_records.get(_CLEAR_WEIGHT_RECORD)
    if record is not None:
        record[_CLEAR_WEIGHT_KEY] = 1


def check_range(arrays: Sequence[np.ndarray], weight: float, protocol_state: ConfigRecord | None) -> None:
    """Refuse to send a value SecAgg+ would clip: ``secaggplus_mod`` scales the vector by
    weight / max-weight and silently clips it to the clipping range, which would corrupt the aggregate.

    ``protocol_state`` is the mod's record in the client's context (absent: not a SecAgg+ round).
    """
    if protocol_state is None:
        return
    bound = float(protocol_state["clipping_range"])
    largest = max((float(np.abs(a).max()) for a in arrays if np.size(a)), default=0.0)
    if largest * weight / float(protocol_state["max_weight"]) > bound:
        raise FederatedError(f"an exchanged value reaches {largest:.3g}; scaled by this client's weight it falls "
                             f"outside SecAgg+'s clipping range of +-{bound:g}, and the protocol would clip it")
