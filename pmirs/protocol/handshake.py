"""Authenticated ephemeral key agreement (SIGMA-style: sign the transcript, both sides).

Message sequence (every message is a JSON-able dict; bytes are unpadded base64url)::

    client                                                       server
    hs = ClientHandshake(user_id, user_key, pinned_fingerprint)
    hello = hs.hello()                 -- client_hello -->
                                                   pending, server_hello = respond(hello, identity,
                                                                                   user_public_key)
                                       <-- server_hello --
    session, confirm = hs.finish(server_hello)
                                       -- client_confirm -->
                                                   session = pending.confirm(confirm)

- ``client_hello``: ``{"v", "type": "client_hello", "suite", "user_id", "share", "nonce"}``
- ``server_hello``: ``{"v", "type": "server_hello", "suite", "sid", "share", "nonce", "server_key",
  "sig"}``; ``sig`` is the server's long-term Ed25519 signature over the transcript hash.
- ``client_confirm``: ``{"v", "type": "client_confirm", "sid", "sig"}``; ``sig`` is the user's
  Ed25519 signature over the same transcript hash.

The transcript hash is SHA-256 of the length-prefixed version, suite, user id, both shares, both
nonces, session id and the server's identity key, so each signature covers the whole exchange
and names both parties. The client checks the server key against its pinned fingerprint before
deriving anything; the server accepts no request before ``confirm`` verified the user's
signature (the user is authenticated before the first envelope is opened). Keys: see
:func:`pmirs.protocol.suites.derive_session_keys`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pmirs.errors import InvalidMessage
from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_decode, b64url_encode, length_prefixed
from pmirs.protocol.envelope import Session
from pmirs.protocol.files import write_private_file
from pmirs.protocol.suites import (
    DEFAULT_SUITE,
    PROTOCOL_VERSION,
    SUITES,
    SessionKeys,
    derive_session_keys,
    get_suite,
)

NONCE_BYTES = 32
SID_BYTES = 16
MAX_USER_ID_CHARS = 256
SHARE_BYTES = {"x25519": 32, "ffdhe2048": crypto.FFDHE2048_BYTES}
_CLIENT_HELLO = frozenset({"v", "type", "suite", "user_id", "share", "nonce"})
_SERVER_HELLO = frozenset({"v", "type", "suite", "sid", "share", "nonce", "server_key", "sig"})
_CLIENT_CONFIRM = frozenset({"v", "type", "sid", "sig"})


def fingerprint(public_key: bytes) -> str:
    """Hex SHA-256 of a raw Ed25519 public key: what clients pin (64 lowercase hex chars)."""
    return crypto.sha256(public_key).hex()


def normalise_fingerprint(value: str) -> str:
    """Lowercase 64-hex form of a SHA-256 fingerprint (colons allowed); ``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise TypeError("fingerprint must be a str")
    fp = value.replace(":", "").strip().lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise ValueError("fingerprint must be 64 hex characters (SHA-256)")
    return fp


def transcript_hash(
    suite: str,
    user_id: str,
    client_share: bytes,
    client_nonce: bytes,
    sid: str,
    server_share: bytes,
    server_nonce: bytes,
    server_key: bytes,
) -> bytes:
    """SHA-256 over the canonical encoding of everything both parties agreed on."""
    return crypto.sha256(
        length_prefixed(
            b"pmirs/handshake", PROTOCOL_VERSION, suite, user_id,
            client_share, client_nonce, sid, server_share, server_nonce, server_key,
        )
    )  # fmt: skip


def _signed_data(role: str, th: bytes) -> bytes:
    """What each side signs: a role label (no cross-role reuse) and the transcript hash."""
    return length_prefixed(f"pmirs/handshake/{role}-signature".encode(), th)


def _check_message(msg: object, fields: frozenset[str], kind: str) -> dict[str, Any]:
    if not isinstance(msg, dict) or msg.keys() != fields:
        raise InvalidMessage()
    if msg["type"] != kind or type(msg["v"]) is not int or msg["v"] != PROTOCOL_VERSION:
        raise InvalidMessage()
    return msg


def _decode(value: object, size: int) -> bytes:
    raw = b64url_decode(value)
    if len(raw) != size:
        raise InvalidMessage()
    return raw


class ServerIdentity:
    """The retriever's long-term Ed25519 key; clients pin its :attr:`fingerprint`."""

    def __init__(self, private_key: bytes) -> None:
        self._private = bytes(private_key)
        self.public_bytes = crypto.ed25519_public(self._private)  # validates size

    @classmethod
    def generate(cls) -> ServerIdentity:
        """A fresh random identity."""
        return cls(crypto.ed25519_generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServerIdentity:
        """Read a PKCS8 PEM written by :meth:`save`; ``ValueError`` if it is not an Ed25519 key."""
        return cls(crypto.ed25519_private_from_pem(Path(path).read_bytes()))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key as PKCS8 PEM, atomically, file mode 0600."""
        write_private_file(path, crypto.ed25519_private_to_pem(self._private))

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the raw public key (what operators hand to users to pin)."""
        return fingerprint(self.public_bytes)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature with the identity key."""
        return crypto.ed25519_sign(self._private, data)

    def __repr__(self) -> str:
        return f"ServerIdentity(fingerprint={self.fingerprint!r})"


class ClientHandshake:
    """The trusted client's side of one handshake; use once.

    Args:
        user_id: the user's registered id (the server looks up its Ed25519 public key).
        user_key: the user's raw 32-byte Ed25519 private key (``Keystore.identity_private_key``).
        pinned_fingerprint: the server identity's fingerprint, obtained out of band.
        suite: one of :data:`SUITES`.
        session_options: extra keyword arguments for :class:`Session` (``max_age``, ...).
    """

    def __init__(
        self,
        user_id: str,
        user_key: bytes,
        pinned_fingerprint: str,
        suite: str = DEFAULT_SUITE,
        *,
        session_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_CHARS:
            raise ValueError(f"user_id must be a non-empty str of at most {MAX_USER_ID_CHARS} chars")
        crypto.ed25519_public(user_key)  # TypeError/ValueError now rather than at finish()
        self.user_id = user_id
        self.suite = get_suite(suite)
        self._user_key = bytes(user_key)
        self._pinned = normalise_fingerprint(pinned_fingerprint)
        self._session_options = dict(session_options or {})
        self._ephemeral = crypto.EphemeralKey(self.suite.key_agreement)
        self._nonce = crypto.random_bytes(NONCE_BYTES)
        self._done = False

    def __repr__(self) -> str:
        return f"ClientHandshake(user_id={self.user_id!r}, suite={self.suite.name!r})"

    def hello(self) -> dict[str, Any]:
        """The ``client_hello`` to send first (the same dict on every call)."""
        return {
            "v": PROTOCOL_VERSION,
            "type": "client_hello",
            "suite": self.suite.name,
            "user_id": self.user_id,
            "share": b64url_encode(self._ephemeral.public_bytes),
            "nonce": b64url_encode(self._nonce),
        }

    def finish(self, server_hello: dict[str, Any]) -> tuple[Session, dict[str, Any]]:
        """Check the server's pinned identity and signature; return the session and ``client_confirm``.

        Send ``client_confirm`` to the server before (or with) the first envelope. Any mismatch
        (unpinned key, bad signature, other suite, malformed message) raises ``InvalidMessage``.
        """
        if self._done:
            raise ValueError("this handshake was already finished; start a new ClientHandshake")
        msg = _check_message(server_hello, _SERVER_HELLO, "server_hello")
        sid = msg["sid"]
        if msg["suite"] != self.suite.name or not isinstance(sid, str):
            raise InvalidMessage()
        if len(sid) != 2 * SID_BYTES or any(c not in "0123456789abcdef" for c in sid):
            raise InvalidMessage()
        server_key = _decode(msg["server_key"], 32)
        if not crypto.constant_time_equal(fingerprint(server_key), self._pinned):
            raise InvalidMessage()
        share = _decode(msg["share"], SHARE_BYTES[self.suite.key_agreement])
        nonce = _decode(msg["nonce"], NONCE_BYTES)
        signature = _decode(msg["sig"], 64)
        th = transcript_hash(
            self.suite.name, self.user_id, self._ephemeral.public_bytes, self._nonce,
            sid, share, nonce, server_key,
        )  # fmt: skip
        crypto.ed25519_verify(server_key, signature, _signed_data("server", th))
        keys = derive_session_keys(self._ephemeral.exchange(share), th, self.suite.name)
        self._done = True
        confirm = {
            "v": PROTOCOL_VERSION,
            "type": "client_confirm",
            "sid": sid,
            "sig": b64url_encode(crypto.ed25519_sign(self._user_key, _signed_data("client", th))),
        }
        session = Session("client", sid, self.suite.name, keys, user_id=self.user_id, **self._session_options)
        return session, confirm


class PendingSession:
    """Server state between ``server_hello`` and ``client_confirm``: not usable for messages yet.

    Keep it (keyed by :attr:`sid`) for at most ``timeout`` seconds; :meth:`confirm` turns it into a
    :class:`Session` once the user proved possession of its registered key.
    """

    def __init__(
        self,
        sid: str,
        suite: str,
        user_id: str,
        user_public_key: bytes,
        th: bytes,
        keys: SessionKeys,
        *,
        timeout: float,
        session_options: Mapping[str, Any],
        _now: Callable[[], float],
    ) -> None:
        self.sid = sid
        self.suite = suite
        self.user_id = user_id
        self._user_public_key = user_public_key
        self._th = th
        self._keys = keys
        self._session_options = dict(session_options)
        self._now = _now
        self.expires_at = _now() + timeout
        self._used = False

    def __repr__(self) -> str:
        return f"PendingSession(sid={self.sid!r}, suite={self.suite!r}, user_id={self.user_id!r})"

    @property
    def expired(self) -> bool:
        """True once the client took too long to confirm; drop the pending state."""
        return self._now() > self.expires_at

    def confirm(self, client_confirm: dict[str, Any]) -> Session:
        """Verify the user's transcript signature; returns the server's :class:`Session`.

        Usable once. Wrong session id, bad signature, expiry or a second call: ``InvalidMessage``.
        """
        msg = _check_message(client_confirm, _CLIENT_CONFIRM, "client_confirm")
        if self._used or self.expired or msg["sid"] != self.sid:
            raise InvalidMessage()
        signature = _decode(msg["sig"], 64)
        crypto.ed25519_verify(self._user_public_key, signature, _signed_data("client", self._th))
        self._used = True
        options = {"_now": self._now, **self._session_options}
        return Session("server", self.sid, self.suite, self._keys, user_id=self.user_id, **options)


def respond(
    hello: dict[str, Any],
    identity: ServerIdentity,
    user_public_key: Callable[[str], bytes | None],
    *,
    suites: tuple[str, ...] = tuple(SUITES),
    timeout: float = 60.0,
    session_options: Mapping[str, Any] | None = None,
    _now: Callable[[], float] = time.time,
) -> tuple[PendingSession, dict[str, Any]]:
    """Server side: answer a ``client_hello``; returns the pending state and the ``server_hello``.

    Args:
        hello: the client's ``client_hello`` dict (untrusted input).
        identity: the server's long-term key.
        user_public_key: maps a user id to its registered raw Ed25519 public key, or None.
        suites: the suites this server accepts.
        timeout: seconds the client has to send ``client_confirm``.
        session_options: extra keyword arguments for the eventual :class:`Session`.

    Raises:
        InvalidMessage: malformed hello, unsupported suite, unknown user or a bad key share.
    """
    msg = _check_message(hello, _CLIENT_HELLO, "client_hello")
    suite_name, user_id = msg["suite"], msg["user_id"]
    if not isinstance(suite_name, str) or suite_name not in suites or suite_name not in SUITES:
        raise InvalidMessage()
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_CHARS:
        raise InvalidMessage()
    suite = SUITES[suite_name]
    client_share = _decode(msg["share"], SHARE_BYTES[suite.key_agreement])
    client_nonce = _decode(msg["nonce"], NONCE_BYTES)
    user_key = user_public_key(user_id)
    if not isinstance(user_key, bytes) or len(user_key) != 32:
        raise InvalidMessage()
    ephemeral = crypto.EphemeralKey(suite.key_agreement)
    shared = ephemeral.exchange(client_share)  # validates the client's share
    sid = crypto.random_bytes(SID_BYTES).hex()
    nonce = crypto.random_bytes(NONCE_BYTES)
    th = transcript_hash(
        suite.name, user_id, client_share, client_nonce, sid, ephemeral.public_bytes, nonce,
        identity.public_bytes,
    )  # fmt: skip
    keys = derive_session_keys(shared, th, suite.name)
    server_hello = {
        "v": PROTOCOL_VERSION,
        "type": "server_hello",
        "suite": suite.name,
        "sid": sid,
        "share": b64url_encode(ephemeral.public_bytes),
        "nonce": b64url_encode(nonce),
        "server_key": b64url_encode(identity.public_bytes),
        "sig": b64url_encode(identity.sign(_signed_data("server", th))),
    }
    pending = PendingSession(
        sid, suite.name, user_id, user_key, th, keys,
        timeout=timeout, session_options=session_options or {}, _now=_now,
    )  # fmt: skip
    return pending, server_hello
