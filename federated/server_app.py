"""Flower ServerApp: reads the run config, runs the strategy, saves the aggregated heads.

FedAvg by default, FedProx for non-IID clients; central DP wraps either with Flower's
client-side fixed-clipping wrapper (clients clip with ``fixedclipping_mod``, the server adds
Gaussian noise to the mean). SecAgg+ runs through Flower's ``SecAggPlusWorkflow``, which still
drives the legacy strategy API in flwr 1.42, so that path uses the legacy FedAvg.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    FedAvgM,
    FedProx,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from federated import secure_metrics, task
from federated.accounting import DEFAULT_DELTA, client_level_privacy
from middleware.encoder.small_photos import trained_photo_kind
from pmirs.errors import FederatedError

# Called after every round (0 = the initial weights) with the global heads' exchanged state
# (load it with ``task.load_exchange_state``).
RoundCallback = Callable[[int, dict[str, np.ndarray]], None]


def per_photo_metrics(records: list[RecordDict], _weighted_by_key: str) -> MetricRecord:
    """Clients' metrics averaged per photo, whatever weight their updates get (``client-weighting``)."""
    return aggregate_metricrecords(records, task.NUM_EXAMPLES_KEY)


def create_strategy(settings: task.FederatedSettings) -> Strategy:
    """The Message-API strategy the settings ask for (FedAvg/FedProx, optionally DP-wrapped)."""
    common: dict[str, Any] = {
        "fraction_train": settings.fraction_train,
        "fraction_evaluate": settings.fraction_evaluate,
        "min_train_nodes": settings.min_nodes,
        "min_evaluate_nodes": settings.min_nodes if settings.fraction_evaluate > 0 else 0,
        "min_available_nodes": settings.min_nodes,
        "weighted_by_key": task.AGGREGATION_WEIGHT_KEY,
        "train_metrics_aggr_fn": per_photo_metrics,
        "evaluate_metrics_aggr_fn": per_photo_metrics,
    }
    if settings.strategy == "fedprox":
        strategy: Strategy = FedProx(proximal_mu=settings.proximal_mu, **common)
    elif settings.strategy == "fedavgm":
        strategy = FedAvgM(server_learning_rate=settings.server_learning_rate,
                           server_momentum=settings.server_momentum, **common)
    else:
        strategy = FedAvg(**common)
    if settings.dp:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, settings.dp_noise_multiplier, settings.dp_clipping_norm, num_sampled_clients=settings.min_nodes
        )
    return strategy


class _RoundClock:
    """Times rounds, notes rounds that aggregated nothing, and forwards each round's global weights
    to an optional callback.

    Flower carries on past a round in which every client failed (the Message API strategy
    aggregates no reply; SecAgg+ halts when too few clients remain) and keeps the weights as they
    were. Bit-identical global weights after a round are that signature: any aggregated update
    moves them.
    """

    def __init__(self, on_round: RoundCallback | None) -> None:
        self.on_round, self.seconds, self._last = on_round, [], time.perf_counter()
        self.failed_rounds: list[int] = []
        self._previous: dict[str, np.ndarray] | None = None

    def __call__(self, server_round: int, state: dict[str, np.ndarray]) -> None:
        now = time.perf_counter()
        if server_round > 0:
            self.seconds.append(now - self._last)
            if self._previous is not None and all(np.array_equal(state[k], v) for k, v in self._previous.items()):
                self.failed_rounds.append(server_round)
                log(WARNING, "round %d aggregated no client update: the global weights are unchanged "
                             "(see above for the clients' errors)", server_round)
        self._previous = {k: np.array(v, copy=True) for k, v in state.items()}
        if self.on_round is not None:
            self.on_round(server_round, state)
        self._last = time.perf_counter()


def _run_message_api(grid: Grid, settings: task.FederatedSettings, initial: ArrayRecord, base_version: str,
                     clock: _RoundClock) -> tuple[ArrayRecord, dict]:
    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        clock(server_round, dict(zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True)))
        return None

    result = create_strategy(settings).start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=settings.num_server_rounds,
        train_config=ConfigRecord({task.BASE_VERSION_KEY: base_version}),
        evaluate_config=ConfigRecord({task.BASE_VERSION_KEY: base_version}),
        evaluate_fn=evaluate_fn,
    )
    history = {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()}
    return result.arrays, history


def _run_secaggplus(grid: Grid, context: Context, settings: task.FederatedSettings, keys: list[str],
                    initial: list[np.ndarray], base_version: str,
                    clock: _RoundClock) -> tuple[list[np.ndarray], dict]:
    """The clients' metrics arrive only as their mean inside the masked sum (``secure_metrics``):
    every round's aggregate carries it, and it is split off before the weights are used."""
    history: dict[str, dict] = {}

    def evaluate_fn(server_round: int, arrays: list[np.ndarray], _config: dict) -> None:
        weights, metrics = secure_metrics.split_metrics(arrays)
        clock(server_round, dict(zip(keys, weights, strict=True)))
        if server_round > 0 and server_round not in clock.failed_rounds:  # a halted round repeats old metrics
            history[str(server_round)] = metrics
        return None

    strategy = LegacyFedAvg(
        fraction_fit=settings.fraction_train, fraction_evaluate=0.0, min_fit_clients=settings.min_nodes,
        min_available_clients=settings.min_nodes,
        initial_parameters=ndarrays_to_parameters(secure_metrics.with_metrics(initial, {})),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda rnd: {"server-round": rnd, task.BASE_VERSION_KEY: base_version},
        fit_metrics_aggregation_fn=lambda _results: {},  # replies carry no clear metrics
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=settings.num_server_rounds),
                           strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=task.secagg_count(settings.secagg_num_shares),
        reconstruction_threshold=task.secagg_count(settings.secagg_reconstruction_threshold),
        max_weight=task.secagg_max_weight(settings),
    ))
    workflow(grid, legacy)
    final = legacy.state.array_records["parameters"]
    return secure_metrics.split_metrics(parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(final, keep_input=True)))[0], history


def dp_manifest(settings: task.FederatedSettings) -> dict:
    """DP settings of a run and, when DP is on, the client-level (epsilon, delta) it spent."""
    record: dict[str, Any] = {"enabled": settings.dp, "noise_multiplier": settings.dp_noise_multiplier,
                              "clipping_norm": settings.dp_clipping_norm,
                              "mode": "central, client-side fixed clipping"}
    if settings.dp:
        spent = client_level_privacy(settings.dp_noise_multiplier, settings.num_server_rounds,
                                     settings.fraction_train, DEFAULT_DELTA)
        record["delta"] = DEFAULT_DELTA
        record["epsilon"] = spent.epsilon
        record["accountant"] = f"{spent.accountant}, client-level, sampling rate = fraction-train"
    return record


def tuned_photos(history: Mapping[str, Mapping[str, Any]]) -> str:
    """Which photos the trained image terms fit, from the last round's example-weighted share of
    thumbnails among the clients' photos (every client reports its own; see ``task.SMALL_SHARE_KEY``)."""
    if not history:
        return "all"
    last = history[max(history, key=int)]
    if task.SMALL_SHARE_KEY not in last:
        return "all"
    return trained_photo_kind(float(last[task.SMALL_SHARE_KEY]))


def run_server(grid: Grid, context: Context, settings: task.FederatedSettings,
               on_round: RoundCallback | None = None) -> dict:
    """Run every round; save the aggregated heads when ``out-dir`` is set; returns the manifest."""
    # Account before training: a run whose privacy cannot be stated fails here, not after its rounds.
    dp = dp_manifest(settings)
    if dp["enabled"]:
        log(INFO, "DP: client-level epsilon <= %.4g at delta %g over %d round(s) (%s)", dp["epsilon"], dp["delta"],
            settings.num_server_rounds, dp["accountant"])
    base = task.load_base(settings.heads_path)
    heads = task.build_heads(base, settings)
    clock = _RoundClock(on_round)
    if settings.secagg:
        keys = list(task.exchange_state(heads))
        final, history = _run_secaggplus(grid, context, settings, keys, task.get_weights(heads), base.version,
                                         clock)
        state: Mapping[str, Any] = dict(zip(keys, final, strict=True))
    else:
        arrays, history = _run_message_api(grid, settings, ArrayRecord(task.exchange_state(heads)), base.version,
                                           clock)
        state = arrays.to_torch_state_dict()
    if settings.num_server_rounds and len(clock.failed_rounds) == settings.num_server_rounds:
        raise FederatedError(f"no round aggregated any client update (all {settings.num_server_rounds} failed: see "
                             "the clients' errors above); no checkpoint written")
    task.load_exchange_state(heads, state)
    manifest = {
        "rounds": settings.num_server_rounds,
        "clients": settings.min_nodes,
        "partition": settings.partition,
        "strategy": settings.strategy,
        "proximal_mu": settings.proximal_mu,
        "server_momentum": settings.server_momentum if settings.strategy == "fedavgm" else 0.0,
        "local_epochs": settings.local_epochs,
        "tower_head": settings.tower_head,
        "tower_blocks": settings.tower_blocks,
        "tower_lr_scale": settings.tower_lr_scale,
        "tower_classifier": settings.tower_classifier,
        "distill": settings.distill,
        "mirror": settings.mirror,
        "train_text": settings.train_text,
        "learning_rate": settings.learning_rate,
        "lr_schedule": settings.lr_schedule,
        "anchor": settings.anchor,
        "loss": settings.loss,
        "dp": dp,
        "secagg": settings.secagg,
        "base_version": base.version,
        "round_seconds": clock.seconds,
        "failed_rounds": clock.failed_rounds,
        "train_metrics": history,
        "tuned_photos": tuned_photos(history),
    }
    if settings.out_dir:
        manifest["checkpoint"] = str(task.save_checkpoint(settings.out_dir, heads, base, manifest))
    return manifest


def create_server_app(overrides: Mapping[str, Any] | None = None, on_round: RoundCallback | None = None,
                      on_done: Callable[[dict], None] | None = None,
                      on_error: Callable[[FederatedError], None] | None = None) -> ServerApp:
    """Build the ServerApp; ``overrides`` stand in for ``--run-config`` in in-process simulation.
    ``on_error`` hears why a run failed (Flower only logs a ServerApp's exception)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        """Read the run config and run the federated fine-tuning."""
        try:
            settings = task.FederatedSettings.from_config({**context.run_config, **(overrides or {})})
            manifest = run_server(grid, context, settings, on_round)
        except FederatedError as exc:
            log(ERROR, "%s", exc)
            if on_error is not None:
                on_error(exc)
            raise
        if on_done is not None:
            on_done(manifest)

    return app


app = create_server_app()
