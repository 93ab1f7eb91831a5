"""Sealed messages inside an established session: the only thing that crosses the wire after a handshake.

Envelope (a JSON object, exactly these keys)::

    {"v": 1, "sid": "<32 hex>", "seq": 0, "ts": 1700000000,
     "iv": "<base64url>", "ct": "<base64url>", "mac": "<base64url>"}

- ``seq``: per direction, starts at 0 and grows by one per sealed message.
- ``ts``: integer unix seconds at sealing time.
- CBC suites: ``iv`` is 16 random bytes, ``ct`` is AES-128-CBC/PKCS7, ``mac`` is HMAC-SHA256 over
  ``lp(header) | lp(iv) | lp(ct)`` with ``header = lp("pmirs/envelope") | lp(v) | lp(sid) | lp(seq) |
  lp(ts)`` (``lp`` = 8-byte big-endian length prefix, ints as 8 signed big-endian bytes).
- GCM suites: ``iv`` is a 12-byte random nonce, ``header`` is the associated data, ``ct`` is the
  ciphertext without its tag and ``mac`` is the 16-byte GCM tag.

``open`` raises :class:`~pmirs.errors.InvalidMessage` (always the same text) for a malformed,
tampered, wrong-session, replayed or stale envelope; a sequence number is remembered only after the
envelope fully verified, so a forged message cannot burn a legitimate one's slot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pmirs.errors import InvalidMessage
from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_decode, b64url_encode, length_prefixed
from pmirs.protocol.suites import PROTOCOL_VERSION, SessionKeys, get_suite

ENVELOPE_FIELDS = frozenset({"v", "sid", "seq", "ts", "iv", "ct", "mac"})
MAX_SEQ = 2**63 - 1
Role = Literal["client", "server"]


def _header(v: int, sid: str, seq: int, ts: int) -> bytes:
    """Canonical bytes of the authenticated header fields."""
    return length_prefixed(b"pmirs/envelope", v, sid, seq, ts)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _ReplayWindow:
    """Sliding window over sequence numbers (as in IPsec, RFC 4303 section 3.4.3).

    Accepts any number above the highest seen, and unseen numbers up to ``size - 1`` below it, so
    concurrent requests that arrive out of order still work.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = -1
        self.bits = 0  # bit i set: highest - i was seen

    def fresh(self, seq: int) -> bool:
        if seq > self.highest:
            return True
        offset = self.highest - seq
        return offset < self.size and not (self.bits >> offset) & 1

    def record(self, seq: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = seq
        else:
            self.bits |= 1 << (self.highest - seq)


class Session:
    """One side of an established, mutually authenticated session.

    Made by :meth:`ClientHandshake.finish` / :meth:`PendingSession.confirm`, not by hand. It is
    thread-safe: the service may open envelopes of one session from several worker threads.

    Args:
        role: ``"client"`` seals with the client-to-server keys and opens with the others.
        sid: the session id chosen by the server (32 hex chars).
        suite: wire name of the suite (see :data:`pmirs.protocol.suites.SUITES`).
        keys: the per-direction keys from :func:`derive_session_keys`.
        user_id: the authenticated user (informational; the service authorises on it).
        max_age: reject envelopes whose ``ts`` is more than this many seconds from now.
        replay_window: how far below the highest seen ``seq`` an unseen number is still accepted.
        rekey_after_messages, rekey_after_seconds: when :attr:`needs_rekey` turns true.
        _now: clock (unix seconds), injectable for tests.
    """

    def __init__(
        self,
        role: Role,
        sid: str,
        suite: str,
        keys: SessionKeys,
        *,
        user_id: str = "",
        max_age: float = 120.0,
        replay_window: int = 64,
        rekey_after_messages: int = 10_000,
        rekey_after_seconds: float = 3600.0,
        _now: Callable[[], float] = time.time,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError("role must be 'client' or 'server'")
        if not isinstance(sid, str) or not sid:
            raise ValueError("sid must be a non-empty str")
        if not isinstance(keys, SessionKeys):
            raise TypeError("keys must be SessionKeys")
        if max_age <= 0 or replay_window < 1 or rekey_after_messages < 1 or rekey_after_seconds <= 0:
            raise ValueError("max_age, replay_window and the rekey limits must be positive")
        self.role: Role = role
        self.sid = sid
        self.suite = get_suite(suite)
        self.user_id = user_id
        self.max_age = max_age
        self.rekey_after_messages = rekey_after_messages
        self.rekey_after_seconds = rekey_after_seconds
        self._now = _now
        self.created_at = _now()
        if role == "client":
            self._send = (keys.client_to_server_enc, keys.client_to_server_mac)
            self._recv = (keys.server_to_client_enc, keys.server_to_client_mac)
        else:
            self._send = (keys.server_to_client_enc, keys.server_to_client_mac)
            self._recv = (keys.client_to_server_enc, keys.client_to_server_mac)
        self._next_seq = 0
        self._opened = 0
        self._window = _ReplayWindow(replay_window)
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Session(role={self.role!r}, sid={self.sid!r}, suite={self.suite.name!r}, "
            f"user_id={self.user_id!r})"
        )

    @property
    def messages(self) -> int:
        """Envelopes sealed plus envelopes successfully opened in this session."""
        return self._next_seq + self._opened

    @property
    def needs_rekey(self) -> bool:
        """True once the session carried too many messages or lived too long: run a new handshake."""
        too_old = self._now() - self.created_at >= self.rekey_after_seconds
        return self.messages >= self.rekey_after_messages or too_old

    def seal(self, payload: bytes) -> dict[str, Any]:
        """Encrypt and authenticate ``payload`` into a JSON-able envelope with the next ``seq``."""
        return self._seal_from_parts(payload, crypto.random_bytes(self.suite.iv_bytes), int(self._now()))

    def seal_json(self, obj: Any) -> dict[str, Any]:
        """:meth:`seal` of the compact, key-sorted UTF-8 JSON of ``obj``."""
        return self.seal(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8"))

    def _seal_from_parts(self, payload: bytes, iv: bytes, ts: int, seq: int | None = None) -> dict[str, Any]:
        """:meth:`seal` with the IV, timestamp (and optionally seq) injected: known-answer tests only."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if len(iv) != self.suite.iv_bytes:
            raise ValueError(f"iv must be {self.suite.iv_bytes} bytes for {self.suite.name}")
        if not _is_int(ts):
            raise TypeError("ts must be an int")
        with self._send_lock:
            if seq is None:
                seq = self._next_seq
            if seq > MAX_SEQ:
                raise ValueError("sequence numbers exhausted; run a new handshake")
            self._next_seq = seq + 1
        header = _header(PROTOCOL_VERSION, self.sid, seq, ts)
        enc_key, mac_key = self._send
        if self.suite.aead == "cbc-hmac":
            ct, tag = crypto.cbc_hmac_encrypt(enc_key, mac_key, iv, bytes(payload), header)
        else:
            sealed = crypto.aes_gcm_encrypt(enc_key, iv, bytes(payload), header)
            ct, tag = sealed[: -crypto.GCM_TAG_BYTES], sealed[-crypto.GCM_TAG_BYTES :]
        return {
            "v": PROTOCOL_VERSION,
            "sid": self.sid,
            "seq": seq,
            "ts": ts,
            "iv": b64url_encode(iv),
            "ct": b64url_encode(ct),
            "mac": b64url_encode(tag),
        }

    def open(self, envelope: dict[str, Any]) -> bytes:
        """Verify and decrypt an envelope from the peer; every failure is ``InvalidMessage``."""
        if not isinstance(envelope, dict) or envelope.keys() != ENVELOPE_FIELDS:
            raise InvalidMessage()
        v, sid, seq, ts = envelope["v"], envelope["sid"], envelope["seq"], envelope["ts"]
        if not (_is_int(v) and _is_int(seq) and _is_int(ts) and isinstance(sid, str)):
            raise InvalidMessage()
        if v != PROTOCOL_VERSION or sid != self.sid or not 0 <= seq <= MAX_SEQ or abs(ts) >= 2**62:
            raise InvalidMessage()
        iv, ct, tag = (b64url_decode(envelope[k]) for k in ("iv", "ct", "mac"))
        if len(iv) != self.suite.iv_bytes or len(tag) != self.suite.tag_bytes:
            raise InvalidMessage()
        header = _header(v, sid, seq, ts)
        enc_key, mac_key = self._recv
        with self._recv_lock:
            if not self._window.fresh(seq):
                raise InvalidMessage()
            if self.suite.aead == "cbc-hmac":
                payload = crypto.cbc_hmac_decrypt(enc_key, mac_key, iv, ct, tag, header)
            else:
                payload = crypto.aes_gcm_decrypt(enc_key, iv, ct + tag, header)
            if abs(self._now() - ts) > self.max_age:
                raise InvalidMessage()
            self._window.record(seq)
            self._opened += 1
        return payload

    def open_json(self, envelope: dict[str, Any]) -> Any:
        """:meth:`open` and parse the payload as JSON (a non-JSON payload is ``InvalidMessage``)."""
        payload = self.open(envelope)
        try:
            return json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidMessage() from e
