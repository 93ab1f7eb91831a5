"""Shared fixtures for the wire-protocol tests: identities and a helper that runs a handshake."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pmirs.protocol import crypto
from pmirs.protocol.envelope import Session
from pmirs.protocol.handshake import ClientHandshake, ServerIdentity, respond


class Clock:
    """A settable clock for ``_now`` injection."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="session")
def server_identity() -> ServerIdentity:
    return ServerIdentity.generate()


@pytest.fixture(scope="session")
def user_key() -> bytes:
    return crypto.ed25519_generate()


@pytest.fixture
def clock() -> Clock:
    """A fresh settable clock at a fixed instant."""
    return Clock()


@pytest.fixture
def handshake(server_identity: ServerIdentity, user_key: bytes) -> Callable[..., tuple[Session, Session]]:
    """``handshake(suite, **session_options) -> (client_session, server_session)``."""

    def run(suite: str, user_id: str = "alice", **options: object) -> tuple[Session, Session]:
        users = {user_id: crypto.ed25519_public(user_key)}
        client = ClientHandshake(
            user_id, user_key, server_identity.fingerprint, suite, session_options=options
        )
        pending, server_hello = respond(client.hello(), server_identity, users.get, session_options=options)
        client_session, confirm = client.finish(server_hello)
        return client_session, pending.confirm(confirm)

    return run
