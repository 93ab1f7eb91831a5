"""Server-side aggregation is the example-weighted mean of the client updates (toy model)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from federated.server_app import create_strategy
from federated.task import NUM_EXAMPLES_KEY, FederatedSettings


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_aggregate_is_example_weighted_mean(monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    rng = np.random.default_rng(0)
    updates = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(3)]
    examples = [10, 30, 60]
    instruction = Message(RecordDict({"arrays": ArrayRecord([np.zeros((3, 2)), np.zeros(4)]),
                                      "config": ConfigRecord({})}), dst_node_id=1, message_type="train")
    replies = [
        Message(RecordDict({"arrays": ArrayRecord(update), "metrics": MetricRecord({NUM_EXAMPLES_KEY: n})}),
                reply_to=instruction)
        for update, n in zip(updates, examples, strict=True)
    ]
    settings = FederatedSettings(strategy=strategy, proximal_mu=0.1, min_nodes=3)
    arrays, _ = create_strategy(settings).aggregate_train(1, replies)
    weights = np.asarray(examples) / sum(examples)
    for k, got in enumerate(arrays.to_numpy_ndarrays()):
        expected = sum(w * u[k] for w, u in zip(weights, updates, strict=True))
        assert np.allclose(got, expected, atol=1e-6)
