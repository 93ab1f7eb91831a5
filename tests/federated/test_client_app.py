"""The ClientApp's handlers called directly with Flower Messages (no Ray, no network)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from federated import task
from federated.client_app import create_client_app
from pmirs.errors import FederatedError

_OPENED: list[str] | None = None


def _record_opens(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_record_opens)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    global _OPENED
    _OPENED = []
    yield _OPENED
    _OPENED = None


def _train_message(base_heads: Path) -> Message:
    heads = task.build_heads(task.load_base(base_heads), task.FederatedSettings())
    content = RecordDict({"arrays": ArrayRecord(task.exchange_state(heads)),
                          "config": ConfigRecord({"server-round": 1})})
    return Message(content, dst_node_id=1, message_type="train")


def test_train_handler_returns_new_weights_and_metrics(flower_task: None, base_heads: Path, stores: Path) -> None:
    app = create_client_app({"heads-path": str(base_heads), "batch-size": 4, "partitions-root": str(stores)})
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    message = _train_message(base_heads)
    reply = app(message, context)
    assert not reply.has_error()
    sent = message.content["arrays"].to_numpy_ndarrays()
    got = reply.content["arrays"].to_numpy_ndarrays()
    assert list(reply.content["arrays"].keys()) == list(message.content["arrays"].keys())
    assert any(not np.array_equal(a, b) for a, b in zip(sent, got, strict=True))
    assert reply.content["metrics"][task.NUM_EXAMPLES_KEY] == 8


def test_dp_round_clips_the_update(flower_task: None, base_heads: Path, stores: Path) -> None:
    app = create_client_app({"heads-path": str(base_heads), "batch-size": 4, "partitions-root": str(stores),
                             "learning-rate": 0.05})
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    message = _train_message(base_heads)
    message.content["config"][KEY_CLIPPING_NORM] = 0.01
    reply = app(message, context)
    sent = message.content["arrays"].to_numpy_ndarrays()
    got = reply.content["arrays"].to_numpy_ndarrays()
    norm = np.sqrt(sum(((g - s) ** 2).sum() for g, s in zip(got, sent, strict=True)))
    assert norm == pytest.approx(0.01, rel=1e-3)


def test_client_never_reads_another_clients_folder(
    flower_task: None, base_heads: Path, photos: Path, own_stores: list[Path], opened: list[str]
) -> None:
    mine, theirs = own_stores
    shutil.rmtree(photos / "food")  # the other client's photos and store are not even there
    shutil.rmtree(theirs)
    opened.clear()
    app = create_client_app({"heads-path": str(base_heads), "batch-size": 4})
    context = Context(run_id=1, node_id=1, node_config={"partition-dir": str(mine)}, state=RecordDict(),
                      run_config={})
    reply = app(_train_message(base_heads), context)
    assert not reply.has_error()
    data_reads = [p for p in opened if str(photos) in p or "store-" in p]
    assert data_reads and all(p.startswith(str(mine)) for p in data_reads)


def test_a_supernode_without_data_gets_a_clear_error(flower_task: None, base_heads: Path) -> None:
    app = create_client_app({"heads-path": str(base_heads)})
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(FederatedError, match="partition-dir"):
        app(_train_message(base_heads), context)
