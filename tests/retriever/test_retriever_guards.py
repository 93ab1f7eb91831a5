"""The ASGI guards in process: size limit, timeout, and a log line without payloads."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from retriever.guards import GuardMiddleware


async def slow_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app: echoes the body, or sleeps first on /slow."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def client(max_body: int = 1024, timeout: float = 0.2) -> httpx.AsyncClient:
    app = GuardMiddleware(slow_echo, max_body_bytes=max_body, timeout_s=timeout)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_guards(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pmirs.retriever.access")
    async with client() as c:
        ok = await c.post("/echo", content=b"secret caption")
        assert (ok.status_code, ok.content) == (200, b"secret caption")
        assert (await c.post("/echo", content=b"x" * 2000)).status_code == 413
        slow = await c.post("/slow", content=b"hi")
        assert (slow.status_code, slow.json()) == (504, {"detail": "request timed out"})
    entries = [json.loads(r.getMessage()) for r in caplog.records]
    assert [e["status"] for e in entries] == [200, 413, 504]
    assert entries[0]["bytes_in"] == len(b"secret caption") and "secret" not in caplog.text
