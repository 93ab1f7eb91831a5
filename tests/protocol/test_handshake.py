"""The authenticated handshake: agreement, pinning, user authentication and malformed messages."""

from __future__ import annotations

import os
import stat

import pytest

from pmirs.errors import InvalidMessage
from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_encode
from pmirs.protocol.handshake import ClientHandshake, ServerIdentity, respond
from pmirs.protocol.suites import SUITES

pytestmark = pytest.mark.filterwarnings("ignore:Diffie-Hellman over finite fields")
ALL_SUITES = sorted(SUITES)


def _users(user_key: bytes, user_id: str = "alice"):
    return {user_id: crypto.ed25519_public(user_key)}.get


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_both_sides_agree_and_directions_differ(suite, server_identity, user_key) -> None:
    client = ClientHandshake("alice", user_key, server_identity.fingerprint, suite)
    hello = client.hello()
    assert hello == client.hello() and hello["suite"] == suite and hello["type"] == "client_hello"
    pending, server_hello = respond(hello, server_identity, _users(user_key))
    assert pending.sid == server_hello["sid"] and len(pending.sid) == 32
    client_session, confirm = client.finish(server_hello)
    server_session = pending.confirm(confirm)
    assert client_session._send == server_session._recv and client_session._recv == server_session._send
    assert client_session._send != client_session._recv
    assert client_session._send[0] != client_session._recv[0]
    assert server_session.user_id == "alice" and client_session.sid == server_session.sid
    assert server_session.open(client_session.seal(b"q")) == b"q"


def test_sessions_are_fresh_per_handshake(handshake) -> None:
    a, _ = handshake("x25519-aes128gcm")
    b, _ = handshake("x25519-aes128gcm")
    assert a.sid != b.sid and a._send != b._send


def test_forged_server_identity_is_rejected_by_the_client(server_identity, user_key) -> None:
    client = ClientHandshake("alice", user_key, server_identity.fingerprint)
    impostor = ServerIdentity.generate()
    _, forged = respond(client.hello(), impostor, _users(user_key))
    with pytest.raises(InvalidMessage):
        client.finish(forged)  # unpinned key
    client = ClientHandshake("alice", user_key, server_identity.fingerprint)
    _, forged = respond(client.hello(), impostor, _users(user_key))
    forged["server_key"] = b64url_encode(server_identity.public_bytes)  # pinned key, impostor's signature
    with pytest.raises(InvalidMessage):
        client.finish(forged)


@pytest.mark.parametrize("field", ["share", "nonce", "sid", "suite", "sig"])
def test_tampered_server_hello_is_rejected(field, server_identity, user_key) -> None:
    client = ClientHandshake("alice", user_key, server_identity.fingerprint)
    _, server_hello = respond(client.hello(), server_identity, _users(user_key))
    _, other = respond(
        ClientHandshake("alice", user_key, "0" * 64).hello(), server_identity, _users(user_key)
    )
    server_hello[field] = other[field] if field != "suite" else "x25519-aes128gcm"
    with pytest.raises(InvalidMessage):
        client.finish(server_hello)


def test_server_signature_covers_the_client_hello(server_identity, user_key) -> None:
    client = ClientHandshake("alice", user_key, server_identity.fingerprint)
    other = ClientHandshake("alice", user_key, server_identity.fingerprint)
    _, server_hello = respond(other.hello(), server_identity, _users(user_key))  # answer to another hello
    with pytest.raises(InvalidMessage):
        client.finish(server_hello)


def test_unknown_user_and_wrong_user_key_are_rejected_by_the_server(server_identity, user_key) -> None:
    client = ClientHandshake("mallory", user_key, server_identity.fingerprint)
    with pytest.raises(InvalidMessage):
        respond(client.hello(), server_identity, _users(user_key))  # only alice is registered
    impostor_key = crypto.ed25519_generate()
    client = ClientHandshake("alice", impostor_key, server_identity.fingerprint)
    pending, server_hello = respond(client.hello(), server_identity, _users(user_key))
    _, confirm = client.finish(server_hello)
    with pytest.raises(InvalidMessage):
        pending.confirm(confirm)


def test_confirm_is_single_use_bound_to_sid_and_expires(server_identity, user_key, clock) -> None:
    def start():
        client = ClientHandshake("alice", user_key, server_identity.fingerprint)
        pending, server_hello = respond(
            client.hello(), server_identity, _users(user_key), timeout=10, _now=clock
        )
        return pending, client.finish(server_hello)[1]

    pending, confirm = start()
    other_pending, other_confirm = start()
    with pytest.raises(InvalidMessage):
        pending.confirm(other_confirm)  # another session's confirmation
    pending.confirm(confirm)
    with pytest.raises(InvalidMessage):
        pending.confirm(confirm)
    clock.t += 11
    assert other_pending.expired
    with pytest.raises(InvalidMessage):
        other_pending.confirm(other_confirm)


@pytest.mark.parametrize("y", [1, crypto.FFDHE2048_P - 1, 0, crypto.FFDHE2048_P])
def test_ffdhe2048_degenerate_client_share_is_rejected(y, server_identity, user_key) -> None:
    hello = ClientHandshake("alice", user_key, server_identity.fingerprint, "ffdhe2048-aes128gcm").hello()
    hello["share"] = b64url_encode(y.to_bytes(256, "big"))
    with pytest.raises(InvalidMessage):
        respond(hello, server_identity, _users(user_key))


def test_x25519_low_order_client_share_is_rejected(server_identity, user_key) -> None:
    hello = ClientHandshake("alice", user_key, server_identity.fingerprint).hello()
    hello["share"] = b64url_encode(bytes(32))
    with pytest.raises(InvalidMessage):
        respond(hello, server_identity, _users(user_key))


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"v": True},
        {"type": "server_hello"},
        {"suite": "rsa-rc4"},
        {"user_id": ""},
        {"user_id": 5},
        {"share": "AAAA"},
        {"nonce": "not base64!"},
        {"extra": 1},
    ],
)
def test_malformed_client_hello(change, server_identity, user_key) -> None:
    hello = {**ClientHandshake("alice", user_key, server_identity.fingerprint).hello(), **change}
    with pytest.raises(InvalidMessage):
        respond(hello, server_identity, _users(user_key))


def test_server_can_restrict_suites(server_identity, user_key) -> None:
    hello = ClientHandshake("alice", user_key, server_identity.fingerprint, "ffdhe2048-aes128gcm").hello()
    with pytest.raises(InvalidMessage):
        respond(hello, server_identity, _users(user_key), suites=("x25519-aes128gcm",))


def test_client_argument_checks_and_single_use(server_identity, user_key) -> None:
    with pytest.raises(ValueError):
        ClientHandshake("alice", user_key, "abc")
    with pytest.raises(ValueError):
        ClientHandshake("alice", user_key, server_identity.fingerprint, "rsa")
    with pytest.raises(ValueError):
        ClientHandshake("", user_key, server_identity.fingerprint)
    with pytest.raises((TypeError, ValueError)):
        ClientHandshake("alice", user_key[:31], server_identity.fingerprint)
    pinned = ":".join(server_identity.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    client = ClientHandshake("alice", user_key, pinned)  # colons and upper case accepted
    _, server_hello = respond(client.hello(), server_identity, _users(user_key))
    client.finish(server_hello)
    with pytest.raises(ValueError):
        client.finish(server_hello)


def test_server_identity_save_load(tmp_path) -> None:
    identity = ServerIdentity.generate()
    path = tmp_path / "server.pem"
    identity.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = ServerIdentity.load(path)
    assert loaded.fingerprint == identity.fingerprint == crypto.sha256(identity.public_bytes).hex()
    assert "PRIVATE" not in repr(identity) and identity.fingerprint in repr(identity)
    (tmp_path / "bad.pem").write_bytes(b"junk")
    with pytest.raises(ValueError):
        ServerIdentity.load(tmp_path / "bad.pem")
