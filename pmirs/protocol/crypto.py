"""Thin wrappers over pyca/cryptography: the only PMIRS module that imports ``cryptography.hazmat``.

Everything else in PMIRS composes these functions and never touches a primitive directly, so
the list of algorithms in use is this file. Keys cross the API as raw ``bytes`` (easy to store,
compare and pin); key objects are rebuilt per call, which is cheap for the curves used here.

Errors: a failed MAC, tag, signature or key agreement raises :class:`pmirs.errors.InvalidMessage`
with no detail; a caller mistake (wrong type or size of an argument) raises ``TypeError`` or
``ValueError``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac as _hmac
import os
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives import hmac as _chmac
from cryptography.hazmat.primitives.asymmetric import dh, ed25519, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pmirs.errors import InvalidMessage

# RFC 7919, appendix A.1: p = 2^2048 - 2^1984 + (floor(2^1918 * e) + 560316) * 2^64 - 1, g = 2.
FFDHE2048_P = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695"
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A"
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A"
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005"
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF",
    16,
)
FFDHE2048_G = 2
FFDHE2048_BYTES = 256

AES_BLOCK_BYTES = 16
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
SHA256_BYTES = 32
KEY_AGREEMENTS = ("x25519", "ffdhe2048")


def _check_bytes(name: str, value: object, *sizes: int) -> bytes:
    """Reject non-bytes and, when ``sizes`` is given, lengths outside it (caller mistakes)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if sizes and len(value) not in sizes:
        raise ValueError(f"{name} must be {' or '.join(map(str, sizes))} bytes, got {len(value)}")
    return value


# --- randomness, hashing, MACs ------------------------------------------------------------------


def random_bytes(n: int) -> bytes:
    """Return ``n`` bytes from the OS CSPRNG (keys, IVs, nonces, salts, session ids)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError("n must be a non-negative int")
    return os.urandom(n)


def sha256(data: bytes) -> bytes:
    """SHA-256 digest (transcript hashes and key fingerprints)."""
    return hashlib.sha256(_check_bytes("data", data)).digest()


def constant_time_equal(a: bytes | str, b: bytes | str) -> bool:
    """Compare two secrets without leaking the position of the first difference."""
    if isinstance(a, str):
        a = a.encode("utf-8")
    if isinstance(b, str):
        b = b.encode("utf-8")
    return _hmac.compare_digest(a, b)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 tag of ``data``."""
    h = _chmac.HMAC(_check_bytes("key", key), hashes.SHA256())
    h.update(_check_bytes("data", data))
    return h.finalize()


def hmac_sha256_verify(key: bytes, data: bytes, tag: bytes) -> None:
    """Check an HMAC-SHA256 tag in constant time; raises ``InvalidMessage`` on mismatch."""
    h = _chmac.HMAC(_check_bytes("key", key), hashes.SHA256())
    h.update(_check_bytes("data", data))
    try:
        h.verify(_check_bytes("tag", tag))
    except InvalidSignature as e:
        raise InvalidMessage() from e


def keyed_id(key: bytes, content: bytes) -> str:
    """Hex HMAC-SHA256 of ``content``: a stable id that reveals nothing without ``key``."""
    return hmac_sha256(key, content).hex()


def hkdf_sha256(key_material: bytes, length: int, *, salt: bytes | None, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract + expand): one independent subkey per ``info`` label."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=None if salt is None else _check_bytes("salt", salt),
        info=_check_bytes("info", info),
    ).derive(_check_bytes("key_material", key_material))


def scrypt_derive(passphrase: bytes, salt: bytes, *, n: int, r: int, p: int, length: int = 32) -> bytes:
    """Stretch a passphrase into a key with scrypt (RFC 7914); slow on purpose."""
    return Scrypt(salt=_check_bytes("salt", salt), length=length, n=n, r=r, p=p).derive(
        _check_bytes("passphrase", passphrase)
    )


# --- AES-CBC + HMAC-SHA256 (encrypt-then-MAC) and AES-GCM ----------------------------------------


def _length_prefixed(*parts: bytes) -> bytes:
    """Unambiguous concatenation: each part preceded by its 8-byte big-endian length."""
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def cbc_hmac_encrypt(
    enc_key: bytes, mac_key: bytes, iv: bytes, plaintext: bytes, associated_data: bytes = b""
) -> tuple[bytes, bytes]:
    """AES-CBC with PKCS7, then HMAC-SHA256 over ``len|ad, len|iv, len|ct``; returns ``(ct, tag)``.

    The same recipe as Fernet, with separate encryption and MAC keys and authenticated header
    data. ``iv`` must be 16 fresh random bytes per message.
    """
    enc_key = _check_bytes("enc_key", enc_key, 16, 24, 32)
    mac_key = _check_bytes("mac_key", mac_key)
    if len(mac_key) < 16:
        raise ValueError("mac_key must be at least 16 bytes")
    iv = _check_bytes("iv", iv, AES_BLOCK_BYTES)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(_check_bytes("plaintext", plaintext)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    ct = encryptor.update(padded) + encryptor.finalize()
    tag = hmac_sha256(mac_key, _length_prefixed(_check_bytes("associated_data", associated_data), iv, ct))
    return ct, tag


def cbc_hmac_decrypt(
    enc_key: bytes, mac_key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, associated_data: bytes = b""
) -> bytes:
    """Verify the HMAC (constant time) and only then decrypt; any failure is ``InvalidMessage``."""
    enc_key = _check_bytes("enc_key", enc_key, 16, 24, 32)
    for name, value in (("iv", iv), ("ciphertext", ciphertext), ("tag", tag), ("ad", associated_data)):
        _check_bytes(name, value)
    hmac_sha256_verify(mac_key, _length_prefixed(bytes(associated_data), bytes(iv), bytes(ciphertext)), tag)
    if len(iv) != AES_BLOCK_BYTES or not ciphertext or len(ciphertext) % AES_BLOCK_BYTES:
        raise InvalidMessage()
    decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(iv))).decryptor()
    padded = decryptor.update(bytes(ciphertext)) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as e:  # only reachable with a valid MAC, i.e. a buggy or malicious key holder
        raise InvalidMessage() from e


def aes_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
    """AES-GCM (128/256 by key size); returns ciphertext with the 16-byte tag appended.

    ``nonce`` (12 bytes) must never repeat under one key: use :func:`random_bytes`.
    """
    aead = AESGCM(_check_bytes("key", key, 16, 24, 32))
    return aead.encrypt(
        _check_bytes("nonce", nonce, GCM_NONCE_BYTES),
        _check_bytes("plaintext", plaintext),
        _check_bytes("associated_data", associated_data),
    )


def aes_gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
    """Verify the GCM tag and decrypt; any failure (tag, nonce size, truncation) is ``InvalidMessage``."""
    aead = AESGCM(_check_bytes("key", key, 16, 24, 32))
    nonce = _check_bytes("nonce", nonce)
    ciphertext = _check_bytes("ciphertext", ciphertext)
    if len(nonce) != GCM_NONCE_BYTES or len(ciphertext) < GCM_TAG_BYTES:
        raise InvalidMessage()
    try:
        return aead.decrypt(nonce, ciphertext, _check_bytes("associated_data", associated_data))
    except InvalidTag as e:
        raise InvalidMessage() from e


# --- key agreement ------------------------------------------------------------------------------


def x25519_generate() -> bytes:
    """A fresh X25519 private key as 32 raw bytes."""
    return x25519.X25519PrivateKey.generate().private_bytes_raw()


def x25519_public(private_key: bytes) -> bytes:
    """The 32-byte raw public key of an X25519 private key."""
    key = x25519.X25519PrivateKey.from_private_bytes(_check_bytes("private_key", private_key, 32))
    return key.public_key().public_bytes_raw()


def x25519_exchange(private_key: bytes, peer_public: bytes) -> bytes:
    """X25519 shared secret; a malformed or low-order peer value raises ``InvalidMessage``."""
    key = x25519.X25519PrivateKey.from_private_bytes(_check_bytes("private_key", private_key, 32))
    peer_public = _check_bytes("peer_public", peer_public)
    try:
        peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
        return key.exchange(peer)  # raises ValueError for an all-zero (low-order) result
    except ValueError as e:
        raise InvalidMessage() from e


@functools.cache
def _ffdhe2048_parameters() -> Any:
    """The group as a cryptography object, built on first use only.

    cryptography 50 deprecated finite-field DH (``CryptographyDeprecationWarning`` on use; removal
    announced), so nothing here touches it unless an ffdhe2048 suite is actually chosen.
    """
    return dh.DHParameterNumbers(FFDHE2048_P, FFDHE2048_G).parameters()


def ffdhe2048_generate() -> tuple[Any, bytes]:
    """A fresh RFC 7919 ffdhe2048 key pair: ``(private key object, 256-byte big-endian public y)``.

    Kept for the paper's DH suites; prefer X25519 (cryptography 50 deprecated FFDH).
    """
    private = _ffdhe2048_parameters().generate_private_key()
    y = private.public_key().public_numbers().y
    return private, y.to_bytes(FFDHE2048_BYTES, "big")


def ffdhe2048_check_public(peer_public: bytes) -> int:
    """Decode a 256-byte peer value y and require 1 < y < p-1 (rejects 0, 1, p-1 and out of range)."""
    peer_public = _check_bytes("peer_public", peer_public)
    if len(peer_public) != FFDHE2048_BYTES:
        raise InvalidMessage()
    y = int.from_bytes(peer_public, "big")
    if not 1 < y < FFDHE2048_P - 1:
        raise InvalidMessage()
    return y


def ffdhe2048_exchange(private_key: Any, peer_public: bytes) -> bytes:
    """ffdhe2048 shared secret (256 bytes, left-padded); a bad peer value raises ``InvalidMessage``.

    ``private_key`` is the object returned by :func:`ffdhe2048_generate`.
    """
    y = ffdhe2048_check_public(peer_public)
    try:
        peer = dh.DHPublicNumbers(y, _ffdhe2048_parameters().parameter_numbers()).public_key()
        return private_key.exchange(peer)
    except ValueError as e:
        raise InvalidMessage() from e


class EphemeralKey:
    """A one-use key-agreement key of either kind, so the handshake code stays kind-agnostic."""

    def __init__(self, kind: str) -> None:
        if kind == "x25519":
            self._private: object = x25519_generate()
            self.public_bytes = x25519_public(self._private)  # type: ignore[arg-type]
        elif kind == "ffdhe2048":
            self._private, self.public_bytes = ffdhe2048_generate()
        else:
            raise ValueError(f"unknown key agreement {kind!r}; expected one of {KEY_AGREEMENTS}")
        self.kind = kind

    def exchange(self, peer_public: bytes) -> bytes:
        """Shared secret with the peer's public share; ``InvalidMessage`` if the share is bad."""
        if self.kind == "x25519":
            return x25519_exchange(self._private, peer_public)  # type: ignore[arg-type]
        return ffdhe2048_exchange(self._private, peer_public)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"EphemeralKey(kind={self.kind!r})"


# --- Ed25519 signatures -------------------------------------------------------------------------


def ed25519_generate() -> bytes:
    """A fresh Ed25519 private key as its 32-byte raw seed."""
    return ed25519.Ed25519PrivateKey.generate().private_bytes_raw()


def ed25519_public(private_key: bytes) -> bytes:
    """The 32-byte raw public key of an Ed25519 private key."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(_check_bytes("private_key", private_key, 32))
    return key.public_key().public_bytes_raw()


def ed25519_sign(private_key: bytes, data: bytes) -> bytes:
    """A 64-byte Ed25519 signature of ``data``."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(_check_bytes("private_key", private_key, 32))
    return key.sign(_check_bytes("data", data))


def ed25519_verify(public_key: bytes, signature: bytes, data: bytes) -> None:
    """Check an Ed25519 signature; a bad key, signature or data raises ``InvalidMessage``."""
    public_key = _check_bytes("public_key", public_key)
    signature = _check_bytes("signature", signature)
    data = _check_bytes("data", data)
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError) as e:
        raise InvalidMessage() from e


def ed25519_private_to_pem(private_key: bytes) -> bytes:
    """PKCS8 PEM (unencrypted; protect it with file permissions) of an Ed25519 private key."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(_check_bytes("private_key", private_key, 32))
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ed25519_private_from_pem(pem: bytes) -> bytes:
    """Raw 32-byte seed from a PKCS8 PEM; ``ValueError`` if it is not an unencrypted Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(_check_bytes("pem", pem), password=None)
    except (TypeError, ValueError) as e:
        raise ValueError("not an unencrypted PEM private key") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("PEM key is not an Ed25519 private key")
    return key.private_bytes_raw()


def ed25519_public_to_pem(public_key: bytes) -> bytes:
    """SubjectPublicKeyInfo PEM of a raw Ed25519 public key."""
    key = ed25519.Ed25519PublicKey.from_public_bytes(_check_bytes("public_key", public_key, 32))
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def ed25519_public_from_pem(pem: bytes) -> bytes:
    """Raw 32-byte public key from a SubjectPublicKeyInfo PEM; ``ValueError`` if not Ed25519."""
    try:
        key = serialization.load_pem_public_key(_check_bytes("pem", pem))
    except (TypeError, ValueError) as e:
        raise ValueError("not a PEM public key") from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("PEM key is not an Ed25519 public key")
    return key.public_bytes_raw()
