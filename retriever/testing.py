"""Run a real retriever (and optionally a Chroma server) in a subprocess: tests, benchmarks, demos.

Example::

    with ServiceProcess(tmp_path / "srv") as service:
        register_user(service.data_dir, "alice", public_key_hex, tenant="acme")
        ...  # talk to service.url, pin service.fingerprint

Every process started here is stopped by ``stop()`` / the context manager (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from retriever.users import UserRegistry


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_user(data_dir: Path, user_id: str, public_key: str, tenant: str) -> None:
    """What ``pmirs users add`` does; the running service picks it up without a restart."""
    UserRegistry(Path(data_dir)).add(user_id, public_key, tenant, replace=True)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"{what} exited with {proc.returncode}; log:\n{output}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout}s")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class ServiceProcess:
    """``pmirs serve`` on 127.0.0.1 in a subprocess; stderr (the JSON log) goes to ``log_path``."""

    def __init__(self, data_dir: Path, *, port: int | None = None, chroma_host: str | None = None,
                 chroma_port: int | None = None, allow_plain: bool = False,
                 extra_args: list[str] | None = None, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.chroma_host = chroma_host
        self.chroma_port = chroma_port
        self.allow_plain = allow_plain
        self.extra_args = list(extra_args or [])
        # Extra PMIRS_RETRIEVER_* settings for the child only (e.g. a larger max_items_per_batch).
        self.env = dict(env or {})
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def fingerprint(self) -> str:
        """The service identity's fingerprint (available once started)."""
        return httpx.get(f"{self.url}/v1/handshake/identity", timeout=5).json()["fingerprint"]

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        """Start and wait until ``/healthz`` answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pmirs.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.extra_args]
        if self.chroma_host:
            cmd += ["--chroma-host", self.chroma_host, "--chroma-port", str(self.chroma_port)]
        if self.allow_plain:
            cmd.append("--allow-plain")
        child_env = {**os.environ, **self.env} if self.env else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=child_env)
        try:
            _wait_http(f"{self.url}/healthz", self.proc, timeout, "retriever", self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the process (kill after 10 s) and wait for it."""
        _stop(self.proc)
        self.proc = None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same port and data directory (sessions are lost)."""
        self.stop()
        self.start(timeout)

    def log_text(self) -> str:
        """Everything the service wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChromaProcess:
    """``chroma run`` on 127.0.0.1 in a subprocess, for the remote-Chroma configuration."""

    def __init__(self, path: Path, *, port: int | None = None) -> None:
        self.path = Path(path)
        self.port = port or free_port()
        self.log_path = self.path.parent / f"{self.path.name}.chroma.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ChromaProcess:
        """Start and wait for the heartbeat."""
        exe = Path(sys.executable).with_name("chroma")
        chroma = str(exe) if exe.exists() else shutil.which("chroma")
        if chroma is None:
            raise RuntimeError("the `chroma` command (chromadb package) is not installed")
        self.path.mkdir(parents=True, exist_ok=True)
        cmd = [chroma, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", self.proc, timeout, "chroma",
                       self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        _stop(self.proc)
        self.proc = None

    def __enter__(self) -> ChromaProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
