"""The deployment runtime for real on loopback: a SuperLink, 2 SuperNodes, `flwr run`, 1 round.

Every process the test starts gets its own session and is stopped (its whole group) at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.simulation import deployment_plan
from middleware.encoder.heads import load_heads


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    processes: list[subprocess.Popen] = []
    yield processes
    for process in reversed(processes):
        _stop(process)


@pytest.mark.service
def test_superlink_two_supernodes_one_round(
    tmp_path: Path, stores: Path, base_heads: Path, started: list[subprocess.Popen]
) -> None:
    out = tmp_path / "checkpoints"
    plan = deployment_plan(
        [stores / "client-0", stores / "client-1"],
        {"num-server-rounds": 1, "min-nodes": 2, "batch-size": 4, "heads-path": str(base_heads),
         "out-dir": str(out)},
        flwr_home=tmp_path / "flwr-home", port=_free_port(), first_clientappio_port=_free_port(),
    )
    assert "--disable-runtime-dependency-installation" in plan.superlink
    plan.flwr_home.mkdir()
    (plan.flwr_home / "config.toml").write_text(plan.flower_config)
    bin_dir = Path(os.sys.executable).parent
    # The SuperLink spawns `flower-superexec` by name: the venv's bin must be on PATH even when the
    # tests run as `.venv/bin/pytest` without an activated venv (as `make test` does).
    env = {**os.environ, "FLWR_HOME": str(plan.flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start(cmd: list[str], log: str) -> subprocess.Popen:
        handle = (tmp_path / log).open("w")
        process = subprocess.Popen([str(bin_dir / cmd[0]), *cmd[1:]], env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    start(plan.superlink, "superlink.log")
    time.sleep(2)
    for k, cmd in enumerate(plan.supernodes):
        start(cmd, f"supernode-{k}.log")
    run = start(plan.flwr_run, "flwr-run.log")
    try:
        run.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("flwr run did not finish in 180 s:\n" + (tmp_path / "flwr-run.log").read_text()[-3000:])
    log = (tmp_path / "flwr-run.log").read_text()
    assert run.returncode == 0, log[-3000:]
    checkpoints = sorted(out.glob("fed-heads-*.pt"))
    assert len(checkpoints) == 1, log[-3000:]
    assert load_heads(checkpoints[0]).config.extra["federated"]["rounds"] == 1
    assert "eval-top1" in log  # the clients' evaluate replies reached the server
