"""Known-answer vectors pinning the key schedule, the transcript hash and the envelope format.

If one of these fails, the wire format changed: peers built from the old code can no longer talk
to the new one. Change the format on purpose only, bump ``PROTOCOL_VERSION`` and regenerate with
``python tests/protocol/test_vectors.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from pmirs.protocol.encoding import b64url_decode
from pmirs.protocol.envelope import Session
from pmirs.protocol.handshake import transcript_hash
from pmirs.protocol.suites import SUITES, derive_session_keys

VECTORS = Path(__file__).parent / "vectors"
SID = "00112233445566778899aabbccddeeff"
TS = 1_700_000_000
PAYLOAD = b'{"k":5,"query":"a red bicycle"}'


def _hex_keys(keys: Any) -> dict[str, str]:
    return {k: getattr(keys, k).hex() for k in keys.__dataclass_fields__}


def _shared_secret(suite: str) -> bytes:
    return bytes(i % 251 for i in range(256 if SUITES[suite].key_agreement == "ffdhe2048" else 32))


def generate_key_schedule() -> dict[str, Any]:
    th = bytes(range(32))
    return {
        "description": "derive_session_keys(shared_secret, transcript_hash, suite); hex",
        "vectors": [
            {
                "suite": suite,
                "shared_secret": _shared_secret(suite).hex(),
                "transcript_hash": th.hex(),
                "keys": _hex_keys(derive_session_keys(_shared_secret(suite), th, suite)),
            }
            for suite in sorted(SUITES)
        ],
    }


def generate_transcript() -> dict[str, Any]:
    inputs = {
        "suite": "x25519-aes128cbc-hmacsha256",
        "user_id": "alice",
        "client_share": bytes([1]) * 32,
        "client_nonce": bytes([2]) * 32,
        "sid": SID,
        "server_share": bytes([3]) * 32,
        "server_nonce": bytes([4]) * 32,
        "server_key": bytes([5]) * 32,
    }
    return {
        "description": "transcript_hash(**inputs); bytes given as hex",
        "inputs": {k: v.hex() if isinstance(v, bytes) else v for k, v in inputs.items()},
        "transcript_hash": transcript_hash(**inputs).hex(),
    }


def _client_session(suite: str) -> Session:
    keys = derive_session_keys(_shared_secret(suite), bytes(range(32)), suite)
    return Session("client", SID, suite, keys, _now=lambda: TS)


def generate_envelopes() -> dict[str, Any]:
    vectors = []
    for suite in sorted(SUITES):
        for seq in (0, 5):
            iv = bytes(range(16, 16 + SUITES[suite].iv_bytes))
            envelope = _client_session(suite)._seal_from_parts(PAYLOAD, iv, TS, seq=seq)
            vectors.append({"suite": suite, "seq": seq, "iv": iv.hex(), "envelope": envelope})
    return {
        "description": "client Session with the key_schedule.json keys of the suite seals payload",
        "sid": SID,
        "ts": TS,
        "payload": PAYLOAD.decode(),
        "vectors": vectors,
    }


GENERATORS = {
    "key_schedule.json": generate_key_schedule,
    "transcript.json": generate_transcript,
    "envelope.json": generate_envelopes,
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_vectors_regenerate_identically(name: str) -> None:
    assert json.loads((VECTORS / name).read_text()) == GENERATORS[name]()


def test_envelope_vectors_open_on_the_server() -> None:
    data = json.loads((VECTORS / "envelope.json").read_text())
    schedule = {v["suite"]: v for v in json.loads((VECTORS / "key_schedule.json").read_text())["vectors"]}
    for vector in data["vectors"]:
        suite = vector["suite"]
        keys = derive_session_keys(
            bytes.fromhex(schedule[suite]["shared_secret"]),
            bytes.fromhex(schedule[suite]["transcript_hash"]),
            suite,
        )
        server = Session("server", data["sid"], suite, keys, _now=lambda: data["ts"])
        assert server.open(vector["envelope"]) == data["payload"].encode()


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with the standard library only, to check the key schedule independently."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def test_documented_format_matches_an_independent_implementation() -> None:
    """Recompute HKDF keys and CBC envelope MACs from the docstrings, without pmirs.protocol.crypto."""
    schedule = json.loads((VECTORS / "key_schedule.json").read_text())["vectors"]
    for vector in schedule:
        ikm, th = bytes.fromhex(vector["shared_secret"]), bytes.fromhex(vector["transcript_hash"])
        for name, value in vector["keys"].items():
            if not value:
                continue
            direction = "c2s" if name.startswith("client") else "s2c"
            label = "key" if "gcm" in vector["suite"] else name.rsplit("_", 1)[1]
            info = f"pmirs/v1/{vector['suite']}/{direction}/{label}".encode()
            assert _hkdf(ikm, th, info, len(value) // 2).hex() == value
    data = json.loads((VECTORS / "envelope.json").read_text())
    keys = {v["suite"]: v["keys"] for v in schedule}
    for vector in data["vectors"]:
        if "cbc" not in vector["suite"]:
            continue
        env = vector["envelope"]
        header = _lp(
            b"pmirs/envelope",
            env["v"].to_bytes(8, "big", signed=True),
            env["sid"].encode(),
            env["seq"].to_bytes(8, "big", signed=True),
            env["ts"].to_bytes(8, "big", signed=True),
        )
        mac_input = _lp(header, b64url_decode(env["iv"]), b64url_decode(env["ct"]))
        mac_key = bytes.fromhex(keys[vector["suite"]]["client_to_server_mac"])
        assert hmac.new(mac_key, mac_input, hashlib.sha256).digest() == b64url_decode(env["mac"])


if __name__ == "__main__":
    for file_name, generate in GENERATORS.items():
        (VECTORS / file_name).write_text(json.dumps(generate(), indent=2, sort_keys=True) + "\n")
        print("wrote", VECTORS / file_name)
