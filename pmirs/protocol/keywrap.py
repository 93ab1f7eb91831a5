"""Wrapping a small JSON record (collection keys) to another user's X25519 key, signed by the sender.

Used to share a collection: the record travels through any channel (even the retriever) and only
the named recipient can open it; the sender's Ed25519 signature lets the recipient check who sent
it, so nobody can push attacker-chosen keys to a victim.

Wrapped format (JSON)::

    {"v": 1, "type": "pmirs-key-share", "label": "<what is wrapped, e.g. a collection name>",
     "sender": "<user id>", "sender_key": "<b64url Ed25519 public>",
     "recipient": "<user id>", "recipient_key": "<b64url X25519 public>",
     "epk": "<b64url ephemeral X25519 public>", "nonce": "<b64url 12 B>", "ct": "<b64url>",
     "sig": "<b64url Ed25519 signature>"}

Key: HKDF-SHA256(X25519(ephemeral, recipient), salt = epk | recipient_key, info
"pmirs/keywrap/v1"), AES-256-GCM with every other field as associated data; ``sig`` covers the
associated data, nonce and ciphertext.
"""

from __future__ import annotations

import json
from typing import Any

from pmirs.errors import InvalidMessage
from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_decode, b64url_encode, length_prefixed

WRAP_VERSION = 1
_FIELDS = frozenset(
    {"v", "type", "label", "sender", "sender_key", "recipient", "recipient_key", "epk", "nonce", "ct", "sig"}
)


def _associated_data(msg: dict[str, Any], sender_key: bytes, recipient_key: bytes, epk: bytes) -> bytes:
    return length_prefixed(
        b"pmirs/keywrap", WRAP_VERSION, msg["label"], msg["sender"], sender_key,
        msg["recipient"], recipient_key, epk,
    )  # fmt: skip


def _public_keys(public: dict[str, str]) -> tuple[str, bytes, bytes]:
    """``(user_id, Ed25519 identity key, X25519 exchange key)`` from an ``export_public()`` dict."""
    if not isinstance(public, dict) or not isinstance(public.get("user_id"), str):
        raise ValueError("expected an export_public() dict with user_id, identity_key, exchange_key")
    try:
        identity, exchange = b64url_decode(public["identity_key"]), b64url_decode(public["exchange_key"])
    except (KeyError, InvalidMessage) as e:
        raise ValueError("export_public() dict has missing or malformed keys") from e
    if len(identity) != 32 or len(exchange) != 32:
        raise ValueError("export_public() keys must be 32 bytes")
    return public["user_id"], identity, exchange


def wrap_record(
    record: dict[str, Any],
    label: str,
    *,
    sender_id: str,
    sender_identity_key: bytes,
    recipient_public: dict[str, str],
) -> dict[str, Any]:
    """Encrypt ``record`` (JSON-able) to the recipient of an ``export_public()`` dict and sign it."""
    recipient_id, _, recipient_key = _public_keys(recipient_public)
    if not isinstance(label, str) or not isinstance(sender_id, str):
        raise TypeError("label and sender_id must be str")
    ephemeral = crypto.x25519_generate()
    epk = crypto.x25519_public(ephemeral)
    shared = crypto.x25519_exchange(ephemeral, recipient_key)
    key = crypto.hkdf_sha256(shared, 32, salt=epk + recipient_key, info=b"pmirs/keywrap/v1")
    sender_key = crypto.ed25519_public(sender_identity_key)
    msg: dict[str, Any] = {
        "v": WRAP_VERSION,
        "type": "pmirs-key-share",
        "label": label,
        "sender": sender_id,
        "sender_key": b64url_encode(sender_key),
        "recipient": recipient_id,
        "recipient_key": b64url_encode(recipient_key),
        "epk": b64url_encode(epk),
    }
    ad = _associated_data(msg, sender_key, recipient_key, epk)
    nonce = crypto.random_bytes(crypto.GCM_NONCE_BYTES)
    ct = crypto.aes_gcm_encrypt(key, nonce, json.dumps(record, sort_keys=True).encode("utf-8"), ad)
    msg["nonce"], msg["ct"] = b64url_encode(nonce), b64url_encode(ct)
    msg["sig"] = b64url_encode(crypto.ed25519_sign(sender_identity_key, length_prefixed(ad, nonce, ct)))
    return msg


def unwrap_record(
    wrapped: dict[str, Any],
    *,
    recipient_id: str,
    recipient_exchange_key: bytes,
    sender_public: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Verify and decrypt a wrapped record addressed to us; returns ``(label, record)``.

    Raises ``InvalidMessage`` (one error for every failure) if the message is malformed, addressed
    to someone else, signed by someone other than ``sender_public`` (when given) or tampered with.
    """
    if not isinstance(wrapped, dict) or wrapped.keys() != _FIELDS:
        raise InvalidMessage()
    if type(wrapped["v"]) is not int or wrapped["v"] != WRAP_VERSION or wrapped["type"] != "pmirs-key-share":
        raise InvalidMessage()
    if not all(isinstance(wrapped[k], str) for k in ("label", "sender", "recipient")):
        raise InvalidMessage()
    sender_key, recipient_key, epk, nonce, ct, sig = (
        b64url_decode(wrapped[k]) for k in ("sender_key", "recipient_key", "epk", "nonce", "ct", "sig")
    )
    my_key = crypto.x25519_public(recipient_exchange_key)
    if wrapped["recipient"] != recipient_id or not crypto.constant_time_equal(recipient_key, my_key):
        raise InvalidMessage()
    if sender_public is not None:
        try:
            expected_id, expected_key, _ = _public_keys(sender_public)
        except ValueError as e:
            raise InvalidMessage() from e
        if wrapped["sender"] != expected_id or not crypto.constant_time_equal(sender_key, expected_key):
            raise InvalidMessage()
    ad = _associated_data(wrapped, sender_key, recipient_key, epk)
    crypto.ed25519_verify(sender_key, sig, length_prefixed(ad, nonce, ct))
    shared = crypto.x25519_exchange(recipient_exchange_key, epk)
    key = crypto.hkdf_sha256(shared, 32, salt=epk + recipient_key, info=b"pmirs/keywrap/v1")
    try:
        record = json.loads(crypto.aes_gcm_decrypt(key, nonce, ct, ad))
    except ValueError as e:
        raise InvalidMessage() from e
    if not isinstance(record, dict):
        raise InvalidMessage()
    return wrapped["label"], record
