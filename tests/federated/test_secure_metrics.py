"""The SecAgg+ metrics row: what a client appends to its masked vector and the server strips off."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from federated import secure_metrics, task
from pmirs.errors import FederatedError


def test_metrics_round_trip_through_the_trailing_array_and_their_mean_is_the_mean() -> None:
    weights = [np.ones((2, 3)), np.zeros(4)]
    clients = [{task.TRAIN_LOSS_KEY: 2.5, task.SMALL_SHARE_KEY: 0.25, "train-seconds": 90.0},
               {task.TRAIN_LOSS_KEY: 1.5, task.SMALL_SHARE_KEY: 0.75}]
    sent = [secure_metrics.with_metrics(weights, m) for m in clients]
    assert all(len(arrays) == 3 and np.abs(arrays[-1]).max() <= 1 for arrays in sent)  # inside SecAgg+'s range
    mean = [np.mean([arrays[i] for arrays in sent], axis=0) for i in range(3)]  # what the unmasked sum yields
    got_weights, got = secure_metrics.split_metrics(mean)
    assert all(np.array_equal(a, b) for a, b in zip(got_weights, weights, strict=True))
    assert got == pytest.approx({task.TRAIN_LOSS_KEY: 2.0, task.SMALL_SHARE_KEY: 0.5})  # no clear-only metric


def test_arrays_without_the_metrics_row_are_refused() -> None:
    with pytest.raises(FederatedError, match="secure metrics"):
        secure_metrics.split_metrics([np.ones((2, 3)), np.zeros(4)])


@pytest.mark.usefixtures("flower_task")
def test_a_reply_shows_an_example_count_of_one() -> None:
    content = RecordDict({"fitres.num_examples": MetricRecord({"num_examples": 4321})})
    reply = Message(content, dst_node_id=1, message_type="train")
    secure_metrics.hide_clear_weight(reply)
    assert reply.content.metric_records["fitres.num_examples"]["num_examples"] == 1


def test_values_secaggplus_would_clip_are_refused_before_they_leave() -> None:
    state = ConfigRecord({"clipping_range": 8.0, "max_weight": 1000.0})
    arrays = [np.array([0.5, -9.0]), np.zeros(2)]
    secure_metrics.check_range(arrays, 1000, None)  # not a SecAgg+ round: nothing to check
    secure_metrics.check_range(arrays, 500, state)  # scaled by 500 / 1000: 4.5, inside
    with pytest.raises(FederatedError, match="clipping range"):
        secure_metrics.check_range(arrays, 1000, state)  # 9.0: the protocol would clip it to 8
