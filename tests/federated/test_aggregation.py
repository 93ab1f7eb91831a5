"""Server-side aggregation is the weighted mean of the client updates (toy model): weighted by photo
count (FedAvg) or uniformly, while metrics stay averaged per photo either way."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from federated.server_app import create_strategy
from federated.task import (
    AGGREGATION_WEIGHT_KEY,
    NUM_EXAMPLES_KEY,
    SMALL_SHARE_KEY,
    FederatedSettings,
    aggregation_weight,
)


@pytest.mark.parametrize(("strategy", "weighting"), [("fedavg", "examples"), ("fedprox", "examples"),
                                                     ("fedavg", "uniform")])
@pytest.mark.usefixtures("flower_task")
def test_aggregate_is_the_weighted_mean(strategy: str, weighting: str) -> None:
    rng = np.random.default_rng(0)
    updates = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(3)]
    examples = [10, 30, 60]
    small_shares = [1.0, 0.0, 0.5]
    instruction = Message(RecordDict({"arrays": ArrayRecord([np.zeros((3, 2)), np.zeros(4)]),
                                      "config": ConfigRecord({})}), dst_node_id=1, message_type="train")
    settings = FederatedSettings(strategy=strategy, proximal_mu=0.1, min_nodes=3, client_weighting=weighting)
    replies = [
        Message(RecordDict({"arrays": ArrayRecord(update),
                            "metrics": MetricRecord({NUM_EXAMPLES_KEY: n, SMALL_SHARE_KEY: share,
                                                     AGGREGATION_WEIGHT_KEY: aggregation_weight(settings, n)})}),
                reply_to=instruction)
        for update, n, share in zip(updates, examples, small_shares, strict=True)
    ]
    arrays, metrics = create_strategy(settings).aggregate_train(1, replies)
    assert metrics[SMALL_SHARE_KEY] == pytest.approx(0.4)  # the share of thumbnails over all clients' photos
    weights = np.asarray(examples) / sum(examples) if weighting == "examples" else np.full(3, 1 / 3)
    for k, got in enumerate(arrays.to_numpy_ndarrays()):
        expected = sum(w * u[k] for w, u in zip(weights, updates, strict=True))
        assert np.allclose(got, expected, atol=1e-6)


def test_the_checkpoint_records_which_photos_its_image_terms_fit() -> None:
    """The clients' example-weighted share of thumbnails in the last round names the kind."""
    from federated.server_app import tuned_photos

    assert tuned_photos({"1": {"small-share": 0.0}, "2": {"small-share": 1.0}}) == "small"
    assert tuned_photos({"1": {"small-share": 1.0}, "2": {"small-share": 1.0 - 3e-12}}) == "small"
    assert tuned_photos({"3": {"small-share": 0.0}}) == "sharp"
    assert tuned_photos({"10": {"small-share": 0.4}, "9": {"small-share": 1.0}}) == "all"
    assert tuned_photos({}) == "all"
