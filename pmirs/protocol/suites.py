"""Cipher suites and the session key schedule shared by the handshake and the envelope."""

from __future__ import annotations

from dataclasses import dataclass, field

from pmirs.protocol import crypto

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Suite:
    """One named combination of key agreement and message protection."""

    name: str  # the wire name, e.g. "x25519-aes128cbc-hmacsha256"
    key_agreement: str  # "x25519" or "ffdhe2048" (RFC 7919)
    aead: str  # "cbc-hmac" (AES-128-CBC + HMAC-SHA256, encrypt-then-MAC) or "gcm" (AES-128-GCM)

    @property
    def iv_bytes(self) -> int:
        """Size of the per-message random IV (CBC) or nonce (GCM)."""
        return crypto.AES_BLOCK_BYTES if self.aead == "cbc-hmac" else crypto.GCM_NONCE_BYTES

    @property
    def tag_bytes(self) -> int:
        """Size of the ``mac`` field: HMAC-SHA256 (32) or the GCM tag (16)."""
        return crypto.SHA256_BYTES if self.aead == "cbc-hmac" else crypto.GCM_TAG_BYTES


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("x25519-aes128cbc-hmacsha256", "x25519", "cbc-hmac"),
        Suite("ffdhe2048-aes128cbc-hmacsha256", "ffdhe2048", "cbc-hmac"),
        Suite("x25519-aes128gcm", "x25519", "gcm"),
        Suite("ffdhe2048-aes128gcm", "ffdhe2048", "gcm"),
    )
}
DEFAULT_SUITE = "x25519-aes128cbc-hmacsha256"

ENC_KEY_BYTES = 16  # AES-128
MAC_KEY_BYTES = 32  # HMAC-SHA256


def get_suite(name: str) -> Suite:
    """Look up a suite by wire name; ``ValueError`` for an unknown one."""
    try:
        return SUITES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown suite {name!r}; expected one of {sorted(SUITES)}") from None


@dataclass(frozen=True)
class SessionKeys:
    """Independent keys per direction, so a message can never be reflected back to its sender.

    GCM suites leave the MAC keys empty (the GCM tag authenticates).
    """

    client_to_server_enc: bytes = field(repr=False)
    client_to_server_mac: bytes = field(repr=False)
    server_to_client_enc: bytes = field(repr=False)
    server_to_client_mac: bytes = field(repr=False)


def derive_session_keys(shared_secret: bytes, transcript_hash: bytes, suite: str) -> SessionKeys:
    """HKDF-SHA256 key schedule: salt = transcript hash, one ``info`` label per key.

    Binding the salt to the transcript means a key exists only for exactly this handshake
    (suite, both shares and nonces, session id, user and server identity).
    """
    s = get_suite(suite)
    if len(transcript_hash) != crypto.SHA256_BYTES:
        raise ValueError("transcript_hash must be 32 bytes")

    def derive(label: str, length: int) -> bytes:
        info = f"pmirs/v{PROTOCOL_VERSION}/{s.name}/{label}".encode()
        return crypto.hkdf_sha256(shared_secret, length, salt=transcript_hash, info=info)

    if s.aead == "gcm":
        return SessionKeys(derive("c2s/key", ENC_KEY_BYTES), b"", derive("s2c/key", ENC_KEY_BYTES), b"")
    return SessionKeys(
        derive("c2s/enc", ENC_KEY_BYTES),
        derive("c2s/mac", MAC_KEY_BYTES),
        derive("s2c/enc", ENC_KEY_BYTES),
        derive("s2c/mac", MAC_KEY_BYTES),
    )
