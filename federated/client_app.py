"""Flower ClientApp: trains the encoder heads on this client's own photos, nothing else.

Where the data is: ``partition-dir`` in the SuperNode's node config (real deployment: each
SuperNode is given its own store), else ``<partitions-root>/client-<partition-id>`` from the run
config and the simulation's node config. Privacy mods run only when the server asks for them:
``fixedclipping_mod`` when a DP round sends a clipping norm, ``secaggplus_mod`` when a SecAgg+
round sends its protocol record; plain FedAvg/FedProx rounds pass through both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from federated import secure_metrics, task
from federated.partition import client_dir_name, load_partition
from pmirs.errors import FederatedError

LEGACY_FITINS = "fitins.parameters"  # SecAgg+ rounds use Flower's legacy fit records


def _optional_secaggplus(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Run the SecAgg+ protocol only for rounds that carry its record; its replies show no weight."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        reply = secaggplus_mod(msg, ctxt, call_next)
        secure_metrics.hide_clear_weight(reply)
        return reply
    return call_next(msg, ctxt)


def _optional_clipping(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Clip this client's update when a DP round sends a clipping norm (before it leaves)."""
    configs = list(msg.content.config_records.values())
    if len(configs) == 1 and KEY_CLIPPING_NORM in configs[0]:
        return fixedclipping_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def partition_dir(context: Context, settings: task.FederatedSettings) -> Path:
    """This client's store: node config ``partition-dir`` first, then the simulation layout."""
    if "partition-dir" in context.node_config:
        return Path(str(context.node_config["partition-dir"]))
    if settings.partitions_root and "partition-id" in context.node_config:
        return Path(settings.partitions_root) / client_dir_name(int(context.node_config["partition-id"]))
    raise FederatedError("this SuperNode has no data: start it with --node-config 'partition-dir=\"/path\"'")


def _client_seed(settings: task.FederatedSettings, context: Context, server_round: int) -> int:
    return settings.seed * 100_003 + server_round * 1_009 + int(context.node_config.get("partition-id", 0))


def create_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """Build the ClientApp; ``overrides`` stand in for ``--run-config`` in in-process simulation."""
    app = ClientApp(mods=[_optional_secaggplus])

    def prepare(context: Context, config: Any) -> tuple[task.FederatedSettings, Any, Any]:
        settings = task.FederatedSettings.from_config({**context.run_config, **(overrides or {})})
        base = task.load_base(settings.heads_path)
        task.check_base(base, config.get(task.BASE_VERSION_KEY))
        data = task.make_examples(load_partition(partition_dir(context, settings)), base)
        heads = task.build_heads(base, settings)
        task.check_store_maps(data, heads, settings.mirror)
        return settings, heads, data

    @app.train(mods=[_optional_clipping])
    def train(msg: Message, context: Context) -> Message:
        """Train the heads from the global weights on local photos; reply weights + metrics."""
        if LEGACY_FITINS in msg.content.array_records:  # SecAgg+ round (legacy records)
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            config = fitins.config
            settings, heads, data = prepare(context, config)
            task.set_weights(heads, secure_metrics.split_metrics(parameters_to_ndarrays(fitins.parameters))[0])
        else:
            config = msg.content["config"]
            settings, heads, data = prepare(context, config)
            task.load_exchange_state(heads, msg.content["arrays"].to_torch_state_dict())
        server_round = int(config.get("server-round", 0))
        metrics = task.train(heads, data, settings, proximal_mu=float(config.get("proximal-mu", 0.0)),
                             seed=_client_seed(settings, context, server_round), server_round=server_round)
        if LEGACY_FITINS in msg.content.array_records:
            # SecAgg+ shows the server only the sum of updates: the metrics it needs ride in that sum,
            # and nothing about this client (update norm, photo count, seconds) goes in the clear.
            masked = secure_metrics.with_metrics(task.get_weights(heads), metrics)
            weight = task.aggregation_weight(settings, len(data))
            secure_metrics.check_range(masked, weight, context.state.config_records.get(RECORD_KEY_STATE))
            fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(masked), weight, {})
            return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)
        content = RecordDict({"arrays": ArrayRecord(task.exchange_state(heads)), "metrics": MetricRecord(metrics)})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Score the global weights on local photos (loss, top-1 against local class phrases)."""
        settings, heads, data = prepare(context, msg.content["config"])
        task.load_exchange_state(heads, msg.content["arrays"].to_torch_state_dict())
        metrics = task.test(heads, data, seed=settings.seed)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


app = create_client_app()
