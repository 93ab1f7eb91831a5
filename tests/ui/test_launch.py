"""``pmirs ui`` as a user runs it: prints the URL, serves on 127.0.0.1, and stops Streamlit on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from retriever.testing import free_port

pytestmark = [pytest.mark.service]


def wait_for_line(path: Path, prefix: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no line starting with {prefix!r}; output:\n{path.read_text(errors='replace')}")


def test_pmirs_ui_serves_and_stops_streamlit(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "pmirs-ui.out"
    env = {**os.environ, "PMIRS_PASSPHRASE": "unused here"}
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pmirs.cli", "ui", "--server", "http://127.0.0.1:9",
                                 "--keystore-dir", str(tmp_path), "--port", str(port)],
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # its own group, so a failure can stop Streamlit too
    try:
        line = wait_for_line(out, "PMIRS UI:", proc)
        assert line.startswith(f"PMIRS UI: http://127.0.0.1:{port}")
        assert httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).text == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):  # Streamlit went down with it
            httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left after a failure
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
