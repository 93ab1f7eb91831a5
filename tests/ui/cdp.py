"""Just enough of the Chrome DevTools Protocol to drive headless Chromium from a test.

No Selenium: Chromium is started with ``--remote-debugging-port=0``, the chosen port is read from
``DevToolsActivePort`` in its profile folder, and commands go over the page's websocket with the
``websockets`` package (a Streamlit dependency).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0")


def find_chromium() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium with one page; use as a context manager so it is always stopped."""

    def __init__(self, binary: str, profile: Path, *, width: int = 1400, height: int = 1800) -> None:
        self.binary = binary
        self.profile = profile
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        log = (self.profile.parent / "chromium.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [self.binary, *FLAGS, f"--user-data-dir={self.profile}",
                 f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._ws = connect(self._page_websocket(), max_size=None, open_timeout=30)
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the websocket and stop Chromium (kill if it lingers)."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def _page_websocket(self, timeout: float = 60.0) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if port_file.exists() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                with contextlib.suppress(httpx.TransportError):
                    pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                    for page in pages:
                        if page.get("type") == "page":
                            return str(page["webSocketDebuggerUrl"])
            time.sleep(0.2)
        raise RuntimeError("chromium did not open its DevTools port")

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Run one CDP command and return its result (events arriving meanwhile are dropped)."""
        if self._ws is None:
            raise RuntimeError("the browser is not started (use it as a context manager)")
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll ``expression`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def navigate(self, url: str) -> None:
        """Open ``url`` in the page."""
        self.send("Page.navigate", {"url": url})

    def type_text(self, text: str) -> None:
        """Type into the focused element (as an IME commit: React sees real input events)."""
        self.send("Input.insertText", {"text": text})

    def press_enter(self) -> None:
        """A real Enter key press on the focused element."""
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    def screenshot(self, path: Path) -> Path:
        """Save the viewport as PNG."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
