"""Raw wire-protocol client for the retriever tests (no middleware, so every byte can be tampered with)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from pmirs.protocol.encoding import b64url_encode
from pmirs.protocol.handshake import ClientHandshake


def vec(values: list[float] | np.ndarray) -> str:
    """Wire form of a vector (base64url float32)."""
    return b64url_encode(np.asarray(values, dtype="<f4").tobytes())


class RawClient:
    """Speaks the wire protocol directly (no middleware), so tests can tamper with every byte."""

    def __init__(self, url: str, user_id: str, user_key: bytes, fingerprint: str,
                 session_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.user_id = user_id
        self.user_key = user_key
        self.fingerprint = fingerprint
        self.http = httpx.Client(timeout=30)
        self.session_options = session_options or {}
        self.session = None

    def handshake(self) -> httpx.Response:
        hs = ClientHandshake(self.user_id, self.user_key, self.fingerprint,
                             session_options=self.session_options)
        r = self.http.post(f"{self.url}/v1/handshake", json=hs.hello())
        if r.status_code != 200:
            return r
        session, confirm = hs.finish(r.json())
        r = self.http.post(f"{self.url}/v1/handshake/confirm", json=confirm)
        if r.status_code == 200:
            session.open_json(r.json())
            self.session = session
        return r

    def seal(self, path: str, body: dict[str, Any], rid: str = "r") -> dict[str, Any]:
        return self.session.seal_json({"path": path, "rid": rid, "body": body})

    def post(self, path: str, envelope: Any) -> httpx.Response:
        return self.http.post(f"{self.url}/v1{path}", json=envelope)

    def call(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Seal, send, and open a 200 answer; other statuses give the plain JSON error."""
        r = self.post(path, self.seal(path, body))
        if r.status_code != 200:
            return r.status_code, r.json()
        payload = self.session.open_json(r.json())
        assert payload["path"] == path and payload["rid"] == "r"
        return 200, payload["body"]

    def close(self) -> None:
        self.http.close()
