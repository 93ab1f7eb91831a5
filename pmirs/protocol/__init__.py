"""The wire protocol both sides share: handshake, sealed envelopes and the crypto they use.

Imports nothing from ``middleware`` or ``retriever``. Typical use::

    # client                                      # server
    hs = ClientHandshake(uid, user_key, pinned)
    hello = hs.hello()                            pending, server_hello = respond(hello, identity, lookup)
    session, confirm = hs.finish(server_hello)    session = pending.confirm(confirm)
    env = session.seal(b"query")                  payload = session.open(env)
"""

from pmirs.protocol.envelope import Session
from pmirs.protocol.handshake import (
    ClientHandshake,
    PendingSession,
    ServerIdentity,
    fingerprint,
    respond,
)
from pmirs.protocol.suites import DEFAULT_SUITE, PROTOCOL_VERSION, SUITES, SessionKeys, derive_session_keys

__all__ = [
    "DEFAULT_SUITE",
    "PROTOCOL_VERSION",
    "SUITES",
    "ClientHandshake",
    "PendingSession",
    "ServerIdentity",
    "Session",
    "SessionKeys",
    "derive_session_keys",
    "fingerprint",
    "respond",
]
