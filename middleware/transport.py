"""Talking to the retriever: lazy handshake, sealed calls, one transparent retry, clear errors.

A channel turns ``call(path, body) -> dict`` into an HTTP POST of a sealed envelope to
``/v1{path}`` and opens the sealed answer. It re-handshakes when the session is worn out
(``needs_rekey``) or the server forgot it (401, e.g. after a restart) and retries the call once.
The plain channels exist only for the latency benchmark (``/v1/plain``, no privacy at all).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from pmirs.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConflictError,
    InvalidMessage,
    NotFoundError,
    RequestError,
    ServerUnavailableError,
)
from pmirs.protocol import crypto
from pmirs.protocol.envelope import Session
from pmirs.protocol.handshake import ClientHandshake
from pmirs.protocol.suites import DEFAULT_SUITE

_STATUS_ERRORS: dict[int, type[Exception]] = {403: AccessDeniedError, 404: NotFoundError, 409: ConflictError}


@dataclass(frozen=True)
class ClientIdentity:
    """Who the client is and which server key it trusts (from the keystore)."""

    user_id: str
    user_key: bytes  # raw Ed25519 private key; never logged
    pinned_fingerprint: str

    def __repr__(self) -> str:
        return f"ClientIdentity(user_id={self.user_id!r}, pinned_fingerprint={self.pinned_fingerprint!r})"


@dataclass
class CallStats:
    """Timings of the last call, for the latency breakdown."""

    encrypt_ms: float = 0.0
    http_ms: float = 0.0
    decrypt_ms: float = 0.0
    response_bytes: int = 0


class _Retry(Exception):
    """The session is gone (401) or worn out: handshake again and resend once."""


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or response.reason_phrase or "error")


def raise_for_status(response: httpx.Response, url: str) -> None:
    """Map an HTTP error status to the PMIRS error a caller can act on."""
    status = response.status_code
    if status < 400:
        return
    if status >= 500:
        raise ServerUnavailableError(f"retriever at {url} failed with HTTP {status}")
    detail = _detail(response)
    if status == 400 and detail == "invalid message":
        raise InvalidMessage()
    if status == 401:
        raise AuthenticationError(f"retriever at {url} refused the session ({detail})")
    if status in _STATUS_ERRORS:
        raise _STATUS_ERRORS[status](detail)
    raise RequestError(f"HTTP {status}: {detail}")


def _unavailable(url: str, exc: Exception) -> ServerUnavailableError:
    return ServerUnavailableError(f"retriever at {url} is unreachable ({type(exc).__name__}); is it running?")


class _SealedBase:
    """What the sync and async channels share: building, opening and checking messages."""

    def __init__(self, base_url: str, identity: ClientIdentity, *, suite: str = DEFAULT_SUITE,
                 session_options: dict[str, Any] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self.suite = suite
        self._session_options = dict(session_options or {})
        self.session: Session | None = None
        self.tenant: str | None = None
        self.handshakes = 0

    def _new_handshake(self) -> ClientHandshake:
        ident = self.identity
        return ClientHandshake(ident.user_id, ident.user_key, ident.pinned_fingerprint, self.suite,
                               session_options=self._session_options)

    def _finish(self, hs: ClientHandshake, response: httpx.Response) -> tuple[Session, dict[str, Any]]:
        if response.status_code == 400:
            raise AuthenticationError("the retriever refused the handshake: is this user registered with "
                                      "this public key (pmirs users add)?")
        raise_for_status(response, self.base_url)
        try:
            return hs.finish(response.json())
        except (InvalidMessage, ValueError) as e:
            raise AuthenticationError("the retriever's identity does not match the pinned fingerprint (or "
                                      "its handshake signature is invalid): refusing to talk to it") from e

    def _confirmed(self, session: Session, response: httpx.Response) -> None:
        if response.status_code == 400:
            raise AuthenticationError("the retriever refused our signature: is the registered public key "
                                      "the one in this keystore?")
        raise_for_status(response, self.base_url)
        body = self._open(session, response, "/handshake/confirm", None)
        self.session, self.tenant = session, body.get("tenant")
        self.handshakes += 1

    @staticmethod
    def _seal(session: Session, path: str, body: dict[str, Any],
              stats: CallStats) -> tuple[dict[str, Any], str]:
        start = time.perf_counter()
        rid = crypto.random_bytes(12).hex()
        envelope = session.seal_json({"path": path, "rid": rid, "body": body})
        stats.encrypt_ms = (time.perf_counter() - start) * 1000
        return envelope, rid

    @staticmethod
    def _open(session: Session, response: httpx.Response, path: str, rid: str | None,
              stats: CallStats | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            payload = session.open_json(response.json())
        except ValueError as e:
            raise InvalidMessage() from e
        if not isinstance(payload, dict) or payload.get("path") != path or payload.get("rid") != rid:
            raise InvalidMessage()  # an answer to another request: replayed or swapped
        body = payload.get("body")
        if not isinstance(body, dict):
            raise InvalidMessage()
        if stats is not None:
            stats.decrypt_ms = (time.perf_counter() - start) * 1000
        return body

    def _answer(self, session: Session, response: httpx.Response, path: str, rid: str,
                stats: CallStats) -> dict[str, Any]:
        if response.status_code == 401:
            raise _Retry
        raise_for_status(response, self.base_url)
        stats.response_bytes = len(response.content)
        return self._open(session, response, path, rid, stats)


class SealedChannel(_SealedBase):
    """Blocking channel over ``httpx.Client``; thread-safe (one handshake at a time)."""

    def __init__(self, base_url: str, identity: ClientIdentity, *, suite: str = DEFAULT_SUITE,
                 timeout: float = 30.0, http: httpx.Client | None = None,
                 session_options: dict[str, Any] | None = None) -> None:
        super().__init__(base_url, identity, suite=suite, session_options=session_options)
        self._http = http or httpx.Client(timeout=timeout)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def _post(self, path: str, json_body: dict[str, Any]) -> httpx.Response:
        try:
            return self._http.post(f"{self.base_url}/v1{path}", json=json_body)
        except httpx.TransportError as e:
            raise _unavailable(self.base_url, e) from e

    def handshake(self) -> Session:
        """Run a fresh handshake now (normally lazy)."""
        with self._lock:
            hs = self._new_handshake()
            session, confirm = self._finish(hs, self._post("/handshake", hs.hello()))
            self._confirmed(session, self._post("/handshake/confirm", confirm))
            return session

    def _session(self) -> Session:
        session = self.session
        if session is None or session.needs_rekey:
            session = self.handshake()
        return session

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Seal ``body`` for ``/v1{path}``, send, open the answer; re-handshake and retry once on 401."""
        return self.call_timed(path, body)[0]

    def call_timed(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], CallStats]:
        """:meth:`call`, also returning the timings of the attempt that succeeded."""
        for attempt in range(2):
            stats = CallStats()
            session = self._session()
            envelope, rid = self._seal(session, path, body, stats)
            start = time.perf_counter()
            response = self._post(path, envelope)
            stats.http_ms = (time.perf_counter() - start) * 1000
            try:
                return self._answer(session, response, path, rid, stats), stats
            except _Retry:
                self.session = None
                if attempt:
                    break
        raise AuthenticationError(f"retriever at {self.base_url} refused a fresh session")


class AsyncSealedChannel(_SealedBase):
    """The same channel over ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, identity: ClientIdentity, *, suite: str = DEFAULT_SUITE,
                 timeout: float = 30.0, http: httpx.AsyncClient | None = None,
                 session_options: dict[str, Any] | None = None) -> None:
        super().__init__(base_url, identity, suite=suite, session_options=session_options)
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._lock: Any = None  # asyncio.Lock, created inside the running loop

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def _post(self, path: str, json_body: dict[str, Any]) -> httpx.Response:
        try:
            return await self._http.post(f"{self.base_url}/v1{path}", json=json_body)
        except httpx.TransportError as e:
            raise _unavailable(self.base_url, e) from e

    async def handshake(self) -> Session:
        """Run a fresh handshake now (normally lazy)."""
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            hs = self._new_handshake()
            session, confirm = self._finish(hs, await self._post("/handshake", hs.hello()))
            self._confirmed(session, await self._post("/handshake/confirm", confirm))
            return session

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Async :meth:`SealedChannel.call`."""
        return (await self.call_timed(path, body))[0]

    async def call_timed(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], CallStats]:
        """Async :meth:`SealedChannel.call_timed`."""
        for attempt in range(2):
            stats = CallStats()
            session = self.session
            if session is None or session.needs_rekey:
                session = await self.handshake()
            envelope, rid = self._seal(session, path, body, stats)
            start = time.perf_counter()
            response = await self._post(path, envelope)
            stats.http_ms = (time.perf_counter() - start) * 1000
            try:
                return self._answer(session, response, path, rid, stats), stats
            except _Retry:
                self.session = None
                if attempt:
                    break
        raise AuthenticationError(f"retriever at {self.base_url} refused a fresh session")


class PlainChannel:
    """Benchmark only: plaintext JSON to ``/v1/plain{path}`` (the server must run with allow_plain)."""

    tenant = "__plain__"

    def __init__(self, base_url: str, *, timeout: float = 30.0, http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as is; returns the parsed answer."""
        return self.call_timed(path, body)[0]

    def call_timed(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], CallStats]:
        """:meth:`call` with timings (only ``http_ms`` is non-zero)."""
        stats = CallStats()
        start = time.perf_counter()
        try:
            response = self._http.post(f"{self.base_url}/v1/plain{path}", json=body)
        except httpx.TransportError as e:
            raise _unavailable(self.base_url, e) from e
        stats.http_ms = (time.perf_counter() - start) * 1000
        raise_for_status(response, self.base_url)
        stats.response_bytes = len(response.content)
        return response.json(), stats


class AsyncPlainChannel:
    """Async :class:`PlainChannel`."""

    tenant = "__plain__"

    def __init__(self, base_url: str, *, timeout: float = 30.0,
                 http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as is; returns the parsed answer."""
        return (await self.call_timed(path, body))[0]

    async def call_timed(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], CallStats]:
        """Async :meth:`PlainChannel.call_timed`."""
        stats = CallStats()
        start = time.perf_counter()
        try:
            response = await self._http.post(f"{self.base_url}/v1/plain{path}", json=body)
        except httpx.TransportError as e:
            raise _unavailable(self.base_url, e) from e
        stats.http_ms = (time.perf_counter() - start) * 1000
        raise_for_status(response, self.base_url)
        stats.response_bytes = len(response.content)
        return response.json(), stats


def fetch_server_fingerprint(base_url: str, *, timeout: float = 10.0) -> str:
    """Trust on first use: ask a retriever for its identity fingerprint (pin it, then verify out of band)."""
    url = base_url.rstrip("/")
    try:
        response = httpx.get(f"{url}/v1/handshake/identity", timeout=timeout)
    except httpx.TransportError as e:
        raise _unavailable(url, e) from e
    raise_for_status(response, url)
    return str(response.json()["fingerprint"])
