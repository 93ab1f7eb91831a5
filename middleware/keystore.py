"""The trusted side's secrets, in one passphrase-encrypted local file.

Holds the user's identities (Ed25519 to authenticate to retrievers, X25519 to receive shared
collection keys), the pinned retriever fingerprints, and per collection the keys that make its
vectors, payloads and ids unreadable to the retriever.

File format (JSON)::

    {"format": "pmirs-keystore", "version": 1,
     "kdf": {"name": "scrypt", "salt": "<b64url 16 B>", "n": 32768, "r": 8, "p": 1},
     "cipher": "aes-256-gcm", "nonce": "<b64url 12 B>", "body": "<b64url ciphertext+tag>"}

The body is AES-256-GCM under ``scrypt(passphrase, salt)`` with the header (format, version, kdf,
cipher) as associated data, so editing the KDF parameters breaks the tag instead of weakening
the key. The file is written atomically with mode 0600; every mutating method saves at once, so a
crash never loses a freshly generated collection key.

Example::

    ks = Keystore.create(tmp / "keys.json", "correct horse", "alice")
    keys = ks.add_collection("photos", tenant="alice", encoder_version="clip-v1")
    projection = keys.projection(dim=512)
"""

from __future__ import annotations

import json
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleware.obfuscation import BlockProjection
from pmirs.errors import InvalidMessage, KeystoreError
from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_decode, b64url_encode
from pmirs.protocol.files import PRIVATE_MODE, is_private, write_private_file
from pmirs.protocol.handshake import normalise_fingerprint
from pmirs.protocol.keywrap import unwrap_record, wrap_record

FORMAT = "pmirs-keystore"
FORMAT_VERSION = 1
KEY_BYTES = 32
_SALT_BYTES = 16
_MAX_SCRYPT_N = 2**20  # refuse a tampered header that would make opening take minutes
_WRONG = "wrong passphrase or corrupted keystore"


@dataclass(frozen=True)
class CollectionKeys:
    """The keys of one collection at one key version (key bytes are hidden from ``repr``)."""

    name: str  # local name of the collection
    tenant: str  # the retriever-side tenant / namespace it lives in
    key_version: int  # increases by one per rotate_collection(); stored by the service per item
    encoder_version: str  # Encoder.version the vectors were made with
    projection_key: bytes = field(repr=False)  # BlockProjection key (rotates with the version)
    data_key: bytes = field(repr=False)  # AES-256-GCM key for item payloads (rotates with the version)
    id_key: bytes = field(repr=False)  # HMAC key for item ids (never rotates: ids stay stable)

    def projection(self, dim: int, n_blocks: int = 4, noise: float = 0.0) -> BlockProjection:
        """The :class:`BlockProjection` of this key version."""
        return BlockProjection(
            self.projection_key, dim, n_blocks=n_blocks, noise=noise, version=self.key_version
        )


def _normalise_passphrase(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be str or bytes")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return passphrase


def _header_ad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{kind} must be a non-empty str of at most 256 characters")
    return value


def _clean_record(record: dict[str, Any]) -> dict[str, Any]:
    """Copy of a (signed, decrypted, but still foreign) collection record, keeping only known fields.

    Anything that does not fit the schema raises ``InvalidMessage``.
    """
    try:
        clean = {k: record[k] for k in ("tenant", "encoder_version", "id_key", "current")}
        clean["versions"] = {
            v: {k: keys[k] for k in ("projection_key", "data_key")} for v, keys in record["versions"].items()
        }
        ok = all(isinstance(clean[k], str) and clean[k] for k in ("tenant", "encoder_version"))
        ok = ok and len(b64url_decode(clean["id_key"])) == KEY_BYTES
        ok = ok and type(clean["current"]) is int and str(clean["current"]) in clean["versions"]
        for version, keys in clean["versions"].items():
            ok = ok and version.isdigit() and int(version) >= 1
            ok = ok and all(len(b64url_decode(keys[k])) == KEY_BYTES for k in keys)
    except (KeyError, TypeError, AttributeError) as e:
        raise InvalidMessage() from e
    if not ok:
        raise InvalidMessage()
    return clean


class Keystore:
    """A user's keys, decrypted in memory; open with :meth:`open`, make with :meth:`create`."""

    def __init__(self, path: Path, header: dict[str, Any], file_key: bytes, data: dict[str, Any]) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self.path = path
        self._header = header
        self._file_key = file_key  # scrypt output; the passphrase itself is never kept
        self._data = data

    def __repr__(self) -> str:
        return (
            f"Keystore(path={str(self.path)!r}, user_id={self.user_id!r}, "
            f"collections={self.list_collections()})"
        )

    # --- lifecycle --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str | bytes,
        user_id: str,
        *,
        scrypt_n: int = 2**15,
        scrypt_r: int = 8,
        scrypt_p: int = 1,
    ) -> Keystore:
        """Make a new keystore with fresh identity keys; ``FileExistsError`` rather than overwrite."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"keystore {path} already exists")
        _check_name("user_id", user_id)
        if scrypt_n < 2 or scrypt_n & (scrypt_n - 1) or scrypt_n > _MAX_SCRYPT_N:
            raise ValueError(f"scrypt_n must be a power of two in [2, {_MAX_SCRYPT_N}]")
        salt = crypto.random_bytes(_SALT_BYTES)
        kdf = {"name": "scrypt", "salt": b64url_encode(salt), "n": scrypt_n, "r": scrypt_r, "p": scrypt_p}
        header = {"format": FORMAT, "version": FORMAT_VERSION, "kdf": kdf, "cipher": "aes-256-gcm"}
        file_key = crypto.scrypt_derive(
            _normalise_passphrase(passphrase), salt, n=scrypt_n, r=scrypt_r, p=scrypt_p
        )
        data = {
            "user_id": user_id,
            "identity_key": b64url_encode(crypto.ed25519_generate()),
            "exchange_key": b64url_encode(crypto.x25519_generate()),
            "servers": {},
            "collections": {},
        }
        keystore = cls(path, header, file_key, data)
        keystore.save()
        return keystore

    @classmethod
    def open(cls, path: str | os.PathLike[str], passphrase: str | bytes) -> Keystore:
        """Decrypt a keystore file; ``KeystoreError`` for a wrong passphrase or any tampering.

        A file readable by group or others is fixed to 0600 with a warning (its keys may have
        leaked: consider rotating).
        """
        path = Path(path)
        passphrase = _normalise_passphrase(passphrase)
        if not is_private(path):
            warnings.warn(
                f"keystore {path} was readable by other users; permissions reset to 0600", stacklevel=2
            )
            os.chmod(path, PRIVATE_MODE)
        try:
            stored = json.loads(path.read_bytes())
            header = {k: stored[k] for k in ("format", "version", "kdf", "cipher")}
            kdf = header["kdf"]
            n, r, p = kdf["n"], kdf["r"], kdf["p"]
            if header["format"] != FORMAT or header["version"] != FORMAT_VERSION or kdf["name"] != "scrypt":
                raise KeystoreError(_WRONG)
            if not all(type(v) is int and v >= 1 for v in (n, r, p)):
                raise KeystoreError(_WRONG)
            if n > _MAX_SCRYPT_N or n * r > _MAX_SCRYPT_N * 8 or p > 16:
                raise KeystoreError(_WRONG)
            salt = b64url_decode(kdf["salt"])
            file_key = crypto.scrypt_derive(passphrase, salt, n=n, r=r, p=p)
            body = crypto.aes_gcm_decrypt(
                file_key, b64url_decode(stored["nonce"]), b64url_decode(stored["body"]), _header_ad(header)
            )
            data = json.loads(body)
        except KeystoreError:
            raise
        except (InvalidMessage, ValueError, KeyError, TypeError) as e:  # JSON, base64, scrypt, tag
            raise KeystoreError(_WRONG) from e
        return cls(path, header, file_key, data)

    def save(self) -> None:
        """Encrypt with a fresh nonce and write atomically (mode 0600)."""
        nonce = crypto.random_bytes(crypto.GCM_NONCE_BYTES)
        body = json.dumps(self._data, sort_keys=True, separators=(",", ":")).encode("utf-8")
        sealed = crypto.aes_gcm_encrypt(self._file_key, nonce, body, _header_ad(self._header))
        stored = {**self._header, "nonce": b64url_encode(nonce), "body": b64url_encode(sealed)}
        write_private_file(self.path, json.dumps(stored, indent=1, sort_keys=True).encode("utf-8"))

    # --- identities and servers -------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        """The user's id at the retrievers."""
        return self._data["user_id"]

    @property
    def identity_private_key(self) -> bytes:
        """Raw Ed25519 private key: pass to ``ClientHandshake(user_key=...)``. Never log it."""
        return b64url_decode(self._data["identity_key"])

    @property
    def identity_public_key(self) -> bytes:
        """Raw Ed25519 public key: what a retriever registers for this user."""
        return crypto.ed25519_public(self.identity_private_key)

    @property
    def exchange_public_key(self) -> bytes:
        """Raw X25519 public key others wrap shared collection keys to."""
        return crypto.x25519_public(b64url_decode(self._data["exchange_key"]))

    def export_public(self) -> dict[str, str]:
        """``{"user_id", "identity_key", "exchange_key"}`` (base64url): safe to publish or register."""
        return {
            "user_id": self.user_id,
            "identity_key": b64url_encode(self.identity_public_key),
            "exchange_key": b64url_encode(self.exchange_public_key),
        }

    def pin_server(self, url: str, fingerprint: str) -> None:
        """Remember the fingerprint of the retriever at ``url`` (trust on first use or out of band)."""
        self._data["servers"][_check_name("url", url)] = normalise_fingerprint(fingerprint)
        self.save()

    def server_fingerprint(self, url: str) -> str | None:
        """The pinned fingerprint for ``url``, or None if never pinned."""
        return self._data["servers"].get(url)

    # --- collections ------------------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        """Names of the collections this keystore holds keys for."""
        return sorted(self._data["collections"])

    def _record(self, name: str) -> dict[str, Any]:
        try:
            return self._data["collections"][name]
        except KeyError:
            raise KeyError(f"no collection named {name!r} in this keystore") from None

    def add_collection(self, name: str, tenant: str, encoder_version: str) -> CollectionKeys:
        """Generate fresh keys (version 1) for a new collection; ``ValueError`` if the name is taken."""
        _check_name("name", name)
        if name in self._data["collections"]:
            raise ValueError(f"collection {name!r} already exists")
        self._data["collections"][name] = {
            "tenant": _check_name("tenant", tenant),
            "encoder_version": _check_name("encoder_version", encoder_version),
            "id_key": b64url_encode(crypto.random_bytes(KEY_BYTES)),
            "current": 1,
            "versions": {"1": self._fresh_version_keys()},
        }
        self.save()
        return self.collection(name)

    @staticmethod
    def _fresh_version_keys() -> dict[str, str]:
        return {
            "projection_key": b64url_encode(crypto.random_bytes(KEY_BYTES)),
            "data_key": b64url_encode(crypto.random_bytes(KEY_BYTES)),
        }

    def collection(self, name: str, version: int | None = None) -> CollectionKeys:
        """Keys of ``name`` at ``version`` (default: current); ``KeyError`` if unknown or dropped."""
        record = self._record(name)
        version = record["current"] if version is None else version
        try:
            keys = record["versions"][str(version)]
        except KeyError:
            raise KeyError(f"collection {name!r} has no key version {version}") from None
        return CollectionKeys(
            name=name,
            tenant=record["tenant"],
            key_version=int(version),
            encoder_version=record["encoder_version"],
            projection_key=b64url_decode(keys["projection_key"]),
            data_key=b64url_decode(keys["data_key"]),
            id_key=b64url_decode(record["id_key"]),
        )

    def key_versions(self, name: str) -> list[int]:
        """Key versions still held for ``name`` (old ones are kept until :meth:`drop_version`)."""
        return sorted(int(v) for v in self._record(name)["versions"])

    def rotate_collection(self, name: str) -> tuple[CollectionKeys, CollectionKeys]:
        """New projection and data keys at version + 1; returns ``(old, new)``.

        The id key stays, so item ids do not change. The old version is kept so items not yet
        re-projected / re-sealed can still be read; call :meth:`drop_version` once migrated.
        """
        record = self._record(name)
        old = self.collection(name)
        record["versions"][str(old.key_version + 1)] = self._fresh_version_keys()
        record["current"] = old.key_version + 1
        self.save()
        return old, self.collection(name)

    def set_encoder_version(self, name: str, encoder_version: str) -> None:
        """Record that ``name``'s stored vectors now come from another encoder (after re-indexing)."""
        self._record(name)["encoder_version"] = _check_name("encoder_version", encoder_version)
        self.save()

    def drop_version(self, name: str, version: int) -> None:
        """Forget an old key version after every item moved to a newer one."""
        record = self._record(name)
        if version == record["current"]:
            raise ValueError("cannot drop the current key version")
        if record["versions"].pop(str(version), None) is None:
            raise KeyError(f"collection {name!r} has no key version {version}")
        self.save()

    def share_collection(self, name: str, recipient_public: dict[str, str]) -> dict[str, Any]:
        """Wrap all held key versions of ``name`` to another user's ``export_public()`` dict.

        Ephemeral X25519 + HKDF + AES-256-GCM, with sender, recipient and collection name bound as
        associated data, signed with this user's Ed25519 key. Send the returned dict to the
        recipient; it reveals nothing but those names.
        """
        return wrap_record(
            self._record(name),
            name,
            sender_id=self.user_id,
            sender_identity_key=self.identity_private_key,
            recipient_public=recipient_public,
        )

    def accept_share(
        self,
        wrapped: dict[str, Any],
        sender_public: dict[str, str] | None = None,
        *,
        name: str | None = None,
    ) -> CollectionKeys:
        """Unwrap a share addressed to this user and store it (under ``name`` or the sender's name).

        Pass the sender's ``export_public()`` dict (obtained over a trusted channel) as
        ``sender_public`` to check who sent it; without it the signature only proves integrity.
        Raises ``InvalidMessage`` for a share not addressed to us or tampered with, and
        ``ValueError`` if the collection name is already taken.
        """
        collection_name, record = unwrap_record(
            wrapped,
            recipient_id=self.user_id,
            recipient_exchange_key=b64url_decode(self._data["exchange_key"]),
            sender_public=sender_public,
        )
        record = _clean_record(record)
        name = _check_name("name", collection_name if name is None else name)
        if name in self._data["collections"]:
            raise ValueError(f"collection {name!r} already exists; pass name= to store it under another")
        self._data["collections"][name] = record
        self.save()
        return self.collection(name)
