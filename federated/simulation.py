"""Run the Flower apps on the simulation engine (Ray) and lay out a real deployment on one host.

Both paths run the same ServerApp/ClientApp code: simulation builds them in-process with the
settings as overrides; deployment hands ``federated/app`` to ``flwr run`` against a SuperLink and
one SuperNode per client, each SuperNode given its own partition store through node config.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated.server_app import RoundCallback

APP_DIR = Path(__file__).resolve().parent / "app"  # the Flower app directory (pyproject only)


def simulate(
    settings: dict[str, Any],
    num_clients: int,
    num_cpus: int = 2,
    on_round: RoundCallback | None = None,
    verbose: bool = False,
) -> dict:
    """Run one federated fine-tuning on Flower's simulation engine; returns the run manifest.

    ``settings`` are run-config keys (kebab-case) over the app defaults; ``partitions-root`` must
    hold ``client-0 .. client-<n-1>``. Ray gets ``num_cpus`` CPUs, one per client actor.
    """
    from flwr.simulation import run_simulation

    from federated.client_app import create_client_app
    from federated.server_app import create_server_app
    from federated.task import FederatedSettings
    from pmirs.errors import FederatedError

    overrides = {**settings, "min-nodes": num_clients}
    FederatedSettings.from_config(overrides)  # fail fast, before Ray starts
    manifests: list[dict] = []
    errors: list[FederatedError] = []
    run_simulation(
        server_app=create_server_app(overrides, on_round=on_round, on_done=manifests.append, on_error=errors.append),
        client_app=create_client_app(overrides),
        num_supernodes=num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": num_cpus, "num_gpus": 0, "include_dashboard": False,
                          "log_to_driver": verbose, "logging_level": "error"},
        },
        verbose_logging=verbose,
    )
    if errors:
        raise errors[0]
    if not manifests:
        raise FederatedError("the federated simulation ended without finishing its rounds (see the log above)")
    return manifests[0]


@dataclass
class DeploymentPlan:
    """The commands of a one-host deployment: a SuperLink, SuperNodes, and ``flwr run``."""

    superlink: list[str]
    supernodes: list[list[str]]
    flwr_run: list[str]
    flower_config: str  # contents of $FLWR_HOME/config.toml naming the SuperLink connection
    flwr_home: Path

    def as_script(self) -> str:
        """A shell script that starts everything in the background, runs, and stops it all."""
        quote = shlex.join
        lines = [
            "#!/usr/bin/env bash",
            "# PMIRS federated fine-tuning, deployment runtime on one host (generated).",
            "set -euo pipefail",
            "export FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1",
            f"export FLWR_HOME={shlex.quote(str(self.flwr_home))}",
            "# The SuperLink starts `flower-superexec` by name: this installation's bin comes first.",
            f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"',
            'mkdir -p "$FLWR_HOME"',
            f"cat > \"$FLWR_HOME/config.toml\" <<'EOF'\n{self.flower_config}EOF",
            "pids=()",
            'trap \'kill "${pids[@]}" 2>/dev/null || true\' EXIT',
            f"{quote(self.superlink)} & pids+=($!)",
            "sleep 3",
        ]
        lines += [f"{quote(cmd)} & pids+=($!)" for cmd in self.supernodes]
        lines += ["sleep 3", quote(self.flwr_run)]
        return "\n".join(lines) + "\n"


def deployment_plan(
    partition_dirs: list[Path],
    run_config: dict[str, Any],
    flwr_home: Path,
    port: int = 9093,
    host: str = "127.0.0.1",
    first_clientappio_port: int = 9194,
    insecure: bool = True,
) -> DeploymentPlan:
    """Commands for a SuperLink on ``host:port`` and one SuperNode per partition store.

    Runtime dependency installation stays off: the SuperLink gets
    ``--disable-runtime-dependency-installation`` (SuperNodes have it off by default), and the
    app declares no dependencies. ``insecure`` is for loopback only; use TLS across machines.
    """
    tls = ["--insecure"] if insecure else []
    superlink = ["flower-superlink", *tls, "--disable-runtime-dependency-installation",
                 "--host", host, "--port", str(port)]
    supernodes = [
        ["flower-supernode", *tls, "--superlink", f"{host}:{port}",
         "--node-config", f'partition-dir="{Path(d).resolve()}"',
         "--host", host, "--port", str(first_clientappio_port + k), "--max-retries", "20"]
        for k, d in enumerate(partition_dirs)
    ]
    config = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
    flwr_run = ["flwr", "run", str(APP_DIR), "pmirs-local", "--stream", *(["--run-config", config] if config else [])]
    flower_config = (
        '[superlink]\ndefault = "pmirs-local"\n\n'
        f'[superlink.pmirs-local]\naddress = "{host}:{port}"\ninsecure = {str(insecure).lower()}\n'
    )
    return DeploymentPlan(superlink, supernodes, flwr_run, flower_config, flwr_home)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
