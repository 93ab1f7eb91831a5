"""The privacy inspector: what the retriever saw for one query next to what stayed on this machine.

Nothing here asks the server anything. The wire side is recorded from the HTTP client's own
event hooks (sealed envelope sizes, session id, sequence number); the obfuscated query vector is
recomputed on the trusted side with the collection's :class:`~middleware.codecs.PrivateCodec`,
which is deterministic for queries (noise only ever goes on stored vectors), so it is exactly the
vector inside the sealed request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from middleware.codecs import PrivateCodec
from middleware.encoder.base import Encoder
from pmirs.protocol.vectors import encode_vector

PREVIEW = 6  # vector components shown


@dataclass
class WireCall:
    """One HTTP exchange with the retriever, as the retriever (or anyone on the path) saw it."""

    path: str  # e.g. /v1/query (the route name is visible, the body is not)
    request_bytes: int  # size of the sealed request envelope
    sid: str | None = None  # session id carried in clear in every envelope
    seq: int | None = None  # per-session sequence number (replay protection)
    ciphertext_bytes: int | None = None  # the sealed body alone
    response_bytes: int | None = None
    status: int | None = None


class WireRecorder:
    """Records every request/response of one ``httpx.Client`` through its event hooks.

    Pass ``httpx.Client(event_hooks=recorder.hooks())`` to :class:`PrivacyMiddleware` (its public
    ``http=`` argument); call :meth:`start` before an operation and read :attr:`calls` after it.
    """

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._calls: list[WireCall] = []
        self._lock = threading.Lock()

    def hooks(self) -> dict[str, list[Any]]:
        """The ``event_hooks`` mapping for ``httpx.Client``."""
        return {"request": [self._on_request], "response": [self._on_response]}

    def start(self) -> None:
        """Forget earlier calls, so :attr:`calls` holds one operation's exchanges."""
        with self._lock:
            self._calls.clear()

    @property
    def calls(self) -> list[WireCall]:
        """The recorded exchanges, oldest first."""
        with self._lock:
            return list(self._calls)

    def _on_request(self, request: httpx.Request) -> None:
        body = request.content
        call = WireCall(path=request.url.path, request_bytes=len(body))
        try:
            envelope = json.loads(body) if body else None
        except ValueError:
            envelope = None
        if isinstance(envelope, dict):
            call.sid = envelope.get("sid") if isinstance(envelope.get("sid"), str) else None
            call.seq = envelope.get("seq") if isinstance(envelope.get("seq"), int) else None
            if isinstance(envelope.get("ct"), str):
                call.ciphertext_bytes = len(envelope["ct"]) * 3 // 4  # base64url without padding
        with self._lock:
            self._calls.append(call)
            del self._calls[:-self.keep]

    def _on_response(self, response: httpx.Response) -> None:
        response.read()
        with self._lock:
            for call in reversed(self._calls):
                if call.path == response.request.url.path and call.response_bytes is None:
                    call.response_bytes = len(response.content)
                    call.status = response.status_code
                    break


class RecordingEncoder(Encoder):
    """Delegates to a real encoder and keeps the last query embedding, which never leaves this side.

    The middleware encodes inside its query flow; wrapping the encoder is how the UI gets the
    very vector it used without encoding twice.
    """

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.last: np.ndarray | None = None

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def relevance(self) -> dict[str, float] | None:
        return self.inner.relevance

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = self.inner.encode_texts(texts, batch_size)
        self.last = np.array(out[-1]) if len(out) else None
        return out

    def encode_images(self, images: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        out = self.inner.encode_images(images, batch_size)
        self.last = np.array(out[-1]) if len(out) else None
        return out


@dataclass
class Inspection:
    """One query, split into what the server saw and what stayed local."""

    suite: str
    wire_collection: str  # keyed hash of the collection name
    key_version: int
    k: int
    dim: int
    obfuscated_preview: list[float]  # first numbers of the projected vector the server searched with
    vector_wire_chars: int  # size of that vector in the (sealed) request body, base64url
    calls: list[WireCall]
    result_ids: list[str]  # keyed item ids the server returned
    result_scores: list[float]  # cosine scores the server computed
    handshake: bool  # whether this query opened a new session first
    question: str  # stayed local from here on
    retrieval_query: str
    plain_preview: list[float]
    cosine_plain_vs_obfuscated: float  # ~0: the coordinates are unrelated
    norms: tuple[float, float]  # equal: the projection is an isometry
    captions: list[str] = field(default_factory=list)
    query_image: str | None = None  # the uploaded image's name (its pixels never leave)

    @property
    def query_call(self) -> WireCall | None:
        """The sealed ``/v1/query`` exchange, if it was recorded."""
        return next((c for c in reversed(self.calls) if c.path.endswith("/query")), None)

    @property
    def session_prefix(self) -> str:
        """First characters of the session id (enough to correlate with the server log)."""
        call = self.query_call
        return f"{call.sid[:8]}…" if call and call.sid else "n/a"


def inspect_query(*, codec: PrivateCodec, collection: str, embedding: np.ndarray, calls: list[WireCall],
                  items: Sequence[Any], k: int, suite: str, question: str, retrieval_query: str,
                  query_image: str | None = None) -> Inspection:
    """Rebuild the wire view of a finished query from its plaintext embedding and the keystore.

    ``codec`` must be built like the client's (same keystore and ``n_blocks``); it caches the
    projection. ``items`` are the decrypted results (anything with ``id``, ``score``, ``caption``, ``text``).
    """
    plain = np.asarray(embedding, dtype=np.float32).reshape(-1)
    projected = codec.project(collection, plain, for_storage=False)
    denom = float(np.linalg.norm(plain) * np.linalg.norm(projected)) or 1.0
    return Inspection(
        suite=suite,
        wire_collection=codec.wire_name(collection),
        key_version=codec.key_version(collection),
        k=k,
        dim=int(plain.shape[0]),
        obfuscated_preview=[round(float(x), 4) for x in projected[:PREVIEW]],
        vector_wire_chars=len(encode_vector(projected)),
        calls=calls,
        result_ids=[it.id for it in items],
        result_scores=[round(float(it.score), 4) for it in items],
        handshake=any(c.path.endswith("/handshake") for c in calls),
        question=question,
        retrieval_query=retrieval_query,
        plain_preview=[round(float(x), 4) for x in plain[:PREVIEW]],
        cosine_plain_vs_obfuscated=round(float(plain @ projected) / denom, 4),
        norms=(round(float(np.linalg.norm(plain)), 4), round(float(np.linalg.norm(projected)), 4)),
        captions=[it.caption or (it.text or "")[:80] for it in items],
        query_image=query_image,
    )
