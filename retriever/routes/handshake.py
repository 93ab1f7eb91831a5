"""The two plaintext steps that establish a session: hello, then the user's signed confirmation.

Every failure (unknown user, bad share, bad signature, expired or replayed confirmation) is the
same ``400 invalid message``: the server does not say whether a user id exists.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from pmirs.errors import InvalidMessage
from pmirs.protocol.handshake import respond
from retriever.deps import INVALID, Envelope, StateDep

router = APIRouter(prefix="/handshake", tags=["handshake"])

@router.post("")
def hello(client_hello: dict[str, Any], request: Request, state: StateDep) -> dict[str, Any]:
    """``client_hello`` -> ``server_hello`` signed by the server identity (``pmirs.protocol.handshake``)."""

    def lookup(user_id: str) -> bytes | None:
        record = state.users.get(user_id)
        return bytes.fromhex(record.public_key) if record else None

    settings = state.settings
    try:
        pending, server_hello = respond(
            client_hello, state.identity, lookup, timeout=settings.handshake_timeout_s,
            session_options={"max_age": settings.message_max_age_s,
                             "rekey_after_seconds": settings.session_max_age_s},
        )
    except InvalidMessage as e:
        raise HTTPException(400, INVALID) from e
    state.pending.put(pending)
    request.state.sid_prefix = pending.sid[:8]
    return server_hello


@router.post("/confirm", response_model=Envelope)
def confirm(client_confirm: dict[str, Any], request: Request, state: StateDep) -> dict[str, Any]:
    """``client_confirm`` (user's transcript signature) -> sealed ``{tenant, expires_in}``.

    The sealed answer is the client's key confirmation: only a server that derived the same
    session keys can produce it.
    """
    pending = state.pending.pop(client_confirm.get("sid"))
    if pending is None:
        raise HTTPException(400, INVALID)
    request.state.sid_prefix = pending.sid[:8]
    record = state.users.get(pending.user_id)
    try:
        if record is None:
            raise InvalidMessage()
        session = pending.confirm(client_confirm)
    except InvalidMessage as e:
        raise HTTPException(400, INVALID) from e
    entry = state.sessions.add(session, record.user_id, record.tenant)
    body = {"tenant": entry.tenant, "expires_in": round(entry.expires_at - time.time(), 3)}
    return session.seal_json({"path": "/handshake/confirm", "rid": None, "body": body})


@router.get("/identity")
def identity(state: StateDep) -> dict[str, str]:
    """The server's public identity key and fingerprint, for trust-on-first-use pinning.

    Clients should confirm the fingerprint out of band (the operator prints it at start).
    """
    from pmirs.protocol.encoding import b64url_encode

    ident = state.identity
    return {"public_key": b64url_encode(ident.public_bytes), "fingerprint": ident.fingerprint}
