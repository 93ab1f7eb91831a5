"""Request dependencies: service state, and opening a sealed request into a :class:`Call`.

Every failure to open an envelope gives the same ``400 {"detail": "invalid message"}``, an
unknown or expired session the same ``401``, so a client (or attacker) learns nothing about which
check failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from pmirs.errors import InvalidMessage
from pmirs.protocol.handshake import ServerIdentity
from retriever.ops import Limits
from retriever.sessions import PendingTable, SessionEntry, SessionTable
from retriever.settings import Settings
from retriever.store import VectorStore
from retriever.users import UserRegistry

PLAIN_TENANT = "__plain__"  # not a valid registered tenant name, so it cannot collide
INVALID = "invalid message"
UNAUTHENTICATED = "unknown or expired session"


@dataclass
class ServiceState:
    """Everything the routes share, built once by ``create_app``."""

    settings: Settings
    store: VectorStore
    users: UserRegistry
    sessions: SessionTable
    identity: ServerIdentity
    limits: Limits
    pending: PendingTable  # handshakes between hello and confirm


class Envelope(BaseModel):
    """A sealed message (see :mod:`pmirs.protocol.envelope`); also the shape of every response."""

    model_config = ConfigDict(strict=True, extra="forbid")

    v: int
    sid: str
    seq: int
    ts: int
    iv: str
    ct: str
    mac: str


@dataclass
class Call:
    """An opened request: the caller's tenant, the plaintext body, and how to answer it."""

    path: str
    body: dict[str, Any]
    tenant: str
    entry: SessionEntry | None  # None on the plain (benchmark) router
    rid: str | None = None

    def reply(self, result: dict[str, Any]) -> dict[str, Any]:
        """Seal ``result`` for this session (bound to the request's path and id)."""
        if self.entry is None:
            return result
        return self.entry.session.seal_json({"path": self.path, "rid": self.rid, "body": result})


def get_state(request: Request) -> ServiceState:
    """The :class:`ServiceState` attached to the app."""
    return request.app.state.pmirs


StateDep = Annotated[ServiceState, Depends(get_state)]


def _op_path(request: Request, prefix: str) -> str:
    path = request.url.path
    return path[len(prefix):] if path.startswith(prefix) else path


def open_sealed(request: Request, envelope: Envelope, state: StateDep) -> Call:
    """Find the session, open the envelope and check it was meant for this path."""
    entry = state.sessions.get(envelope.sid)
    user = state.users.get(entry.user_id) if entry is not None else None
    if entry is None or user is None or user.tenant != entry.tenant:  # removed or moved since the handshake
        raise HTTPException(401, UNAUTHENTICATED)
    request.state.sid_prefix = entry.sid[:8]
    path = _op_path(request, "/v1")
    try:
        payload = entry.session.open_json(envelope.model_dump())
        if not isinstance(payload, dict) or payload.get("path") != path:
            raise InvalidMessage()
        if not isinstance(payload.get("body"), dict):
            raise InvalidMessage()
        rid = payload.get("rid")
        if rid is not None and not isinstance(rid, str):
            raise InvalidMessage()
    except InvalidMessage as e:
        raise HTTPException(400, INVALID) from e
    return Call(path, payload["body"], entry.tenant, entry, rid)


async def open_plain(request: Request, state: StateDep) -> Call:
    """Benchmark-only: the body is the plaintext request and the tenant is a fixed sandbox."""
    if not state.settings.allow_plain:
        raise HTTPException(404, "Not Found")
    try:
        body = json.loads(await request.body())
    except ValueError as e:
        raise HTTPException(422, "request body is not valid JSON") from e
    if not isinstance(body, dict):
        raise HTTPException(422, "request body must be a JSON object")
    return Call(_op_path(request, "/v1/plain"), body, PLAIN_TENANT, None)


SealedCall = Annotated[Call, Depends(open_sealed)]
PlainCall = Annotated[Call, Depends(open_plain)]
