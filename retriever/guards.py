"""ASGI guards around the whole app: body size limit, request timeout, structured access log.

They are plain ASGI middleware (not ``BaseHTTPMiddleware``) so the size limit applies while the
body streams in, before anything buffers or parses it. The access log records only sizes,
timings and a session-id prefix: never a body, a caption, a query or a key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("pmirs.retriever.access")


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Refuse bodies over ``max_body_bytes`` (413), stop requests after ``timeout_s`` (504), log each one."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})
        stats: dict[str, Any] = {"status": 500, "in": 0, "out": 0, "started": False, "rejected": False}

        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                stats["status"] = 413
                await _send_json(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                self._log(scope, stats, start)
                return

        async def limited_receive() -> Message:
            if stats["rejected"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                stats["in"] += len(message.get("body", b""))
                if stats["in"] > self.max_body_bytes:
                    # Answer 413 now and tell the app the client left, so it stops reading.
                    stats["rejected"] = True
                    if not stats["started"]:
                        stats["status"], stats["started"] = 413, True
                        await _send_json(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def counting_send(message: Message) -> None:
            if stats["rejected"]:
                return  # we already answered 413; drop whatever the app says after the disconnect
            if message["type"] == "http.response.start":
                stats["status"], stats["started"] = message["status"], True
            elif message["type"] == "http.response.body":
                stats["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, counting_send), self.timeout_s)
        except TimeoutError:
            if not stats["started"]:
                stats["status"] = 504
                await _send_json(send, 504, "request timed out")
        finally:
            self._log(scope, stats, start)

    @staticmethod
    def _log(scope: Scope, stats: dict[str, Any], start: float) -> None:
        state = scope.get("state") or {}
        log.info(json.dumps({
            "event": "request",
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": stats["status"],
            "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            "sid": state.get("sid_prefix"),
            "bytes_in": stats["in"],
            "bytes_out": stats["out"],
        }))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; messages that already are JSON objects are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname,
                                 "logger": record.name}
        message = record.getMessage()
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            entry.update(parsed)
        else:
            entry["message"] = message
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__  # the type only: tracebacks can quote data
        return json.dumps(entry)


def configure_logging(level: str = "INFO") -> None:
    """Send ``pmirs.*`` logs to stderr as JSON lines (used by ``pmirs serve``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("pmirs")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
