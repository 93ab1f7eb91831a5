"""Sealed envelopes: round trips, and one uninformative error for every kind of bad message."""

from __future__ import annotations

import threading

import pytest

from pmirs.errors import InvalidMessage
from pmirs.protocol.encoding import b64url_decode, b64url_encode
from pmirs.protocol.envelope import Session
from pmirs.protocol.suites import SUITES

pytestmark = pytest.mark.filterwarnings("ignore:Diffie-Hellman over finite fields")
ALL_SUITES = sorted(SUITES)


@pytest.fixture(params=ALL_SUITES)
def sessions(request, handshake) -> tuple[Session, Session]:
    return handshake(request.param)


def _reject(session: Session, envelope: object) -> str:
    with pytest.raises(InvalidMessage) as info:
        session.open(envelope)  # type: ignore[arg-type]
    return str(info.value)


def test_round_trip_both_directions(sessions) -> None:
    client, server = sessions
    for i, payload in enumerate([b"", b"x", b"q" * 15, b"q" * 16, bytes(range(256)) * 40]):
        envelope = client.seal(payload)
        assert envelope["seq"] == i and set(envelope) == {"v", "sid", "seq", "ts", "iv", "ct", "mac"}
        assert server.open(envelope) == payload
        assert client.open(server.seal(payload[::-1])) == payload[::-1]
    assert server.open_json(client.seal_json({"q": "cats", "k": 5})) == {"q": "cats", "k": 5}


def _flip(text: str, index: int) -> str:
    raw = bytearray(b64url_decode(text))
    raw[index] ^= 0x01
    return b64url_encode(bytes(raw))


def test_every_tampered_byte_and_field_is_rejected_with_one_message(sessions) -> None:
    client, server = sessions
    envelope = client.seal(b"the secret query")
    messages = set()
    for field in ("iv", "ct", "mac"):
        for i in range(len(b64url_decode(envelope[field]))):
            messages.add(_reject(server, {**envelope, field: _flip(envelope[field], i)}))
    for field, value in [("v", 2), ("sid", "0" * 32), ("seq", 1), ("ts", envelope["ts"] + 1)]:
        messages.add(_reject(server, {**envelope, field: value}))
    assert messages == {"invalid message"}
    assert server.open(envelope) == b"the secret query"  # none of it poisoned the window


@pytest.mark.parametrize(
    "change",
    [
        {"seq": "0"},
        {"seq": True},
        {"seq": -1},
        {"ts": 1.5},
        {"ts": None},
        {"v": "1"},
        {"sid": 7},
        {"iv": 5},
        {"ct": "!!!!"},
        {"mac": "AAAA="},
        {"iv": "A"},
        {"extra": 1},
    ],
)
def test_malformed_envelopes(sessions, change) -> None:
    client, server = sessions
    envelope = {**client.seal(b"x"), **change}
    assert _reject(server, envelope) == "invalid message"
    for broken in [None, [], "envelope", {k: v for k, v in envelope.items() if k != "mac"}]:
        assert _reject(server, broken) == "invalid message"


def test_non_canonical_base64_is_rejected(sessions) -> None:
    client, server = sessions
    envelope = client.seal(b"x")
    iv = envelope["iv"]  # 16 bytes -> 22 chars: the last char carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(b64url_decode(iv)) % 3:
        same_bytes = iv[:-1] + alphabet[alphabet.index(iv[-1]) ^ 1]
        assert _reject(server, {**envelope, "iv": same_bytes}) == "invalid message"
    assert server.open(envelope) == b"x"


def test_replay_and_reordering_window(handshake) -> None:
    client, server = handshake("x25519-aes128gcm", replay_window=4)
    envelopes = [client.seal(bytes([i])) for i in range(8)]
    assert server.open(envelopes[1]) == b"\x01"
    assert server.open(envelopes[0]) == b"\x00"  # out of order but inside the window
    _reject(server, envelopes[0])  # replay
    _reject(server, envelopes[1])
    assert server.open(envelopes[7]) == b"\x07"
    assert server.open(envelopes[5]) == b"\x05"
    _reject(server, envelopes[3])  # unseen but fell out of the window: cannot tell it from a replay
    _reject(server, envelopes[7])


def test_stale_and_future_messages(handshake, clock) -> None:
    client, server = handshake("x25519-aes128cbc-hmacsha256", _now=clock)
    old = client.seal(b"old")
    clock.t += 121
    assert _reject(server, old) == "invalid message"
    fresh = client.seal(b"fresh")
    clock.t += 119
    assert server.open(fresh) == b"fresh"
    clock.t -= 240  # the sender's clock is now 121 s ahead of ours
    assert (
        _reject(server, client._seal_from_parts(b"future", bytes(16), int(clock.t) + 121))
        == "invalid message"
    )


def test_max_age_is_configurable(handshake, clock) -> None:
    client, server = handshake("x25519-aes128gcm", _now=clock, max_age=5)
    envelope = client.seal(b"x")
    clock.t += 6
    _reject(server, envelope)


def test_wrong_keys_wrong_session_and_reflection(handshake) -> None:
    client, server = handshake("x25519-aes128cbc-hmacsha256")
    other_client, other_server = handshake("x25519-aes128cbc-hmacsha256")
    envelope = client.seal(b"x")
    _reject(other_server, envelope)  # other session id
    _reject(other_server, {**envelope, "sid": other_server.sid})  # right id, wrong keys
    _reject(client, envelope)  # reflected back to its sender: other direction, other keys
    _reject(client, server.seal(b"y") | {"sid": other_client.sid})
    assert server.open(envelope) == b"x"


def test_needs_rekey_after_messages_and_time(handshake, clock) -> None:
    client, server = handshake("x25519-aes128gcm", _now=clock, rekey_after_messages=3, rekey_after_seconds=60)
    assert not client.needs_rekey
    server.open(client.seal(b"1"))
    client.open(server.seal(b"2"))
    assert not client.needs_rekey
    client.seal(b"3")
    assert client.needs_rekey and not server.needs_rekey
    clock.t += 60
    assert server.needs_rekey


def test_caller_mistakes(sessions) -> None:
    client, _ = sessions
    with pytest.raises(TypeError):
        client.seal("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client._seal_from_parts(b"x", bytes(3), 0)
    with pytest.raises(ValueError):
        Session("peer", "ab", "x25519-aes128gcm", None)  # type: ignore[arg-type]


def test_concurrent_seal_and_open_use_each_seq_once(handshake) -> None:
    client, server = handshake("x25519-aes128gcm", replay_window=512)
    envelopes: list[dict] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            envelope = client.seal(b"x")
            with lock:
                envelopes.append(envelope)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["seq"] for e in envelopes) == list(range(200))
    opened = []

    def open_all(part: list[dict]) -> None:
        for envelope in part:
            opened.append(server.open(envelope))

    threads = [threading.Thread(target=open_all, args=(envelopes[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 200
    with pytest.raises(InvalidMessage):
        server.open(envelopes[-1])
