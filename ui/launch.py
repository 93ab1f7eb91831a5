"""Serve the Streamlit app in a subprocess: for ``pmirs ui``, ``pmirs demo --ui`` and the browser test.

Example::

    ui = start_ui("http://127.0.0.1:8400", workspace / "keystores", passphrase=secret)
    print(f"open {ui.url}")
    ...
    stop_ui(ui)

The passphrase goes to the child through its environment (``PMIRS_PASSPHRASE``), never on the
command line where ``ps`` would show it. The app binds to ``host`` only (127.0.0.1 by default),
runs headless and sends no usage statistics.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from chatbot.model_files import DEFAULT_MODEL
from ui.config import PASSPHRASE_ENV

APP_PATH = Path(__file__).resolve().with_name("app.py")
_OFFLINE = {
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "STREAMLIT_SERVER_HEADLESS": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class UIProcess:
    """A running ``streamlit run ui/app.py``; stop it with :func:`stop_ui`."""

    proc: subprocess.Popen
    url: str  # where to point a browser, e.g. http://127.0.0.1:8501
    log_path: Path | None  # Streamlit's own output (None: inherited)

    def log_text(self) -> str:
        """What Streamlit wrote so far (empty if the output was inherited)."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def ui_command(server_url: str, keystore_dir: Path, *, host: str = "127.0.0.1", port: int = 8501,
               model: str = DEFAULT_MODEL, max_tokens: int | None = None, n_threads: int | None = None,
               k: int | None = None, encoder: str = "lite") -> list[str]:
    """The ``streamlit run`` command line (no secrets in it)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_PATH),
           "--server.address", host, "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--server.runOnSave", "false", "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
           "--", "--server", server_url, "--keystore-dir", str(keystore_dir), "--model", str(model),
           "--encoder", encoder]
    for flag, value in (("--max-tokens", max_tokens), ("--threads", n_threads), ("--k", k)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def start_ui(server_url: str, keystore_dir: str | os.PathLike[str], *, passphrase: str | None = None,
             passphrases: Mapping[str, str] | None = None, host: str = "127.0.0.1", port: int = 8501,
             model: str = DEFAULT_MODEL, max_tokens: int | None = None, n_threads: int | None = None,
             k: int | None = None, encoder: str = "lite", log_path: str | os.PathLike[str] | None = None,
             environ: Mapping[str, str] | None = None, timeout: float = 120.0) -> UIProcess:
    """Start the app and wait until it answers its health check.

    Args:
        server_url: the retriever (pinned in every keystore of ``keystore_dir``).
        keystore_dir: one keystore per user (``alice.keys``, ``bob.keys``, ...).
        passphrase: the passphrase of every keystore (else the child inherits ``PMIRS_PASSPHRASE``).
        passphrases: per-user passphrases, ``{"alice": "..."}``, when they differ.
        log_path: where Streamlit's output goes (default: inherited stdout/stderr).
        environ: the child's base environment (default: this process's).

    Raises:
        RuntimeError: the app exited or did not become healthy within ``timeout`` seconds.
    """
    env = {**(os.environ if environ is None else environ), **_OFFLINE}
    if passphrase:
        env[PASSPHRASE_ENV] = passphrase
    for user, secret in (passphrases or {}).items():
        env[f"{PASSPHRASE_ENV}_{user.upper()}"] = secret
    cmd = ui_command(server_url.rstrip("/"), Path(keystore_dir), host=host, port=port, model=model,
                     max_tokens=max_tokens, n_threads=n_threads, k=k, encoder=encoder)
    log = Path(log_path) if log_path is not None else None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log else None
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out else None)
    handle = UIProcess(proc, f"http://{host}:{port}", log)
    try:
        _wait_healthy(handle, timeout)
    except BaseException:
        stop_ui(handle)
        raise
    return handle


def stop_ui(handle: UIProcess, timeout: float = 10.0) -> None:
    """Terminate the app (kill after ``timeout`` seconds) and wait for it; safe to call twice."""
    proc = handle.proc
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _wait_healthy(handle: UIProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.proc.poll() is not None:
            raise RuntimeError(f"the UI exited with {handle.proc.returncode}:\n{handle.log_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{handle.url}/_stcore/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the UI did not answer {handle.url}/_stcore/health within {timeout}s")
