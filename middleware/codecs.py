"""How a collection's names, ids, vectors and payloads look on the wire.

:class:`PrivateCodec` (the default) hides everything behind the collection's keys: the wire name
and item ids are keyed hashes, vectors are obfuscated with the keyed :class:`BlockProjection`,
payloads are sealed with ``item_crypto``. :class:`PlainCodec` is the benchmark's baseline and does
none of that; it is only ever used with ``private=False``.
"""

from __future__ import annotations

import re

import numpy as np

from middleware.item_crypto import item_id as keyed_item_id
from middleware.item_crypto import item_key_version, open_item, seal_item
from middleware.keystore import CollectionKeys, Keystore
from middleware.obfuscation import BlockProjection, rekey
from pmirs.errors import ConflictError, InvalidMessage, NotFoundError, RequestError
from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_decode, b64url_encode

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PrivateCodec:
    """Names, ids, vectors and payloads under a collection's keys from the keystore."""

    private = True

    def __init__(self, keystore: Keystore, *, n_blocks: int = 4, noise: float = 0.0) -> None:
        self.keystore = keystore
        self.n_blocks = n_blocks
        self.noise = noise
        self._projections: dict[tuple[str, int, int], BlockProjection] = {}

    def keys(self, name: str, version: int | None = None) -> CollectionKeys:
        """The collection's keys (current version by default), with a clear error when missing."""
        try:
            return self.keystore.collection(name, version)
        except KeyError as e:
            raise NotFoundError(f"no keys for collection {name!r} (version {version or 'current'}) in the "
                                "keystore; create it or accept a share") from e

    def has(self, name: str) -> bool:
        """Whether the keystore holds keys for ``name``."""
        return name in self.keystore.list_collections()

    def ensure(self, name: str, tenant: str, encoder_version: str) -> CollectionKeys:
        """Keys for ``name``, generated on first use; refuses a collection made with another encoder."""
        if not self.has(name):
            return self.keystore.add_collection(name, tenant=tenant, encoder_version=encoder_version)
        keys = self.keys(name)
        if keys.encoder_version != encoder_version:
            raise ConflictError(f"collection {name!r} was indexed with encoder {keys.encoder_version!r}, "
                                f"this client uses {encoder_version!r}")
        return keys

    def wire_name(self, name: str) -> str:
        """The opaque collection name the server sees (same for every holder of the keys)."""
        return crypto.hmac_sha256(self.keys(name).id_key, b"pmirs/collection-name").hex()[:32]

    def key_version(self, name: str) -> int:
        """Current key version of the collection."""
        return self.keys(name).key_version

    def item_id(self, name: str, content: bytes) -> str:
        """Keyed hash of the content: stable, and meaningless without the id key."""
        return keyed_item_id(self.keys(name), content)

    def projection(self, keys: CollectionKeys, dim: int) -> BlockProjection:
        """The (cached) projection of one key version."""
        cache_key = (keys.name, keys.key_version, dim)
        if cache_key not in self._projections:
            self._projections[cache_key] = keys.projection(dim, n_blocks=self.n_blocks, noise=self.noise)
        return self._projections[cache_key]

    def project(self, name: str, vectors: np.ndarray, *, for_storage: bool) -> np.ndarray:
        """Obfuscate vectors with the current key (noise, if configured, only for stored ones)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        return self.projection(self.keys(name), vectors.shape[-1]).project(vectors, for_storage=for_storage)

    def seal(self, name: str, item_id: str, payload: bytes) -> str:
        """Encrypt a payload for storage; bound to the item id and key version."""
        return b64url_encode(seal_item(self.keys(name), item_id, payload))

    def open(self, name: str, item_id: str, blob: str) -> bytes:
        """Decrypt a stored payload with the key version it names; ``InvalidMessage`` if tampered."""
        raw = b64url_decode(blob)
        try:
            keys = self.keys(name, item_key_version(raw))
        except NotFoundError as e:
            raise InvalidMessage() from e
        return open_item(keys, item_id, raw)

    def reproject(self, old: CollectionKeys, new: CollectionKeys, vectors: np.ndarray) -> np.ndarray:
        """Move stored vectors from one key version to the next (trusted side only)."""
        dim = np.asarray(vectors).shape[-1]
        return rekey(self.projection(old, dim), self.projection(new, dim), vectors)

    def reseal(self, old: CollectionKeys, new: CollectionKeys, item_id: str, blob: str) -> str:
        """Re-encrypt a stored payload under the new data key."""
        return b64url_encode(seal_item(new, item_id, open_item(old, item_id, b64url_decode(blob))))


class PlainCodec:
    """Benchmark baseline: real names, unkeyed ids, raw vectors, unencrypted payloads."""

    private = False

    def has(self, name: str) -> bool:
        """Plain collections need no keys."""
        return True

    def ensure(self, name: str, tenant: str, encoder_version: str) -> None:
        """Nothing to generate."""
        self.wire_name(name)

    def wire_name(self, name: str) -> str:
        """The name itself (restricted to the server's alphabet)."""
        if not _PLAIN_NAME.match(name):
            raise RequestError("plain collection names must be 1-64 of A-Z a-z 0-9 _ -")
        return name

    def key_version(self, name: str) -> int:
        """Plain collections have no keys."""
        return 0

    def item_id(self, name: str, content: bytes) -> str:
        """SHA-256 of the content (anyone can recompute it)."""
        return crypto.sha256(content).hex()

    def project(self, name: str, vectors: np.ndarray, *, for_storage: bool) -> np.ndarray:
        """No obfuscation."""
        return np.asarray(vectors, dtype=np.float32)

    def seal(self, name: str, item_id: str, payload: bytes) -> str:
        """No encryption: base64url of the payload."""
        return b64url_encode(payload)

    def open(self, name: str, item_id: str, blob: str) -> bytes:
        """Decode the base64url payload."""
        return b64url_decode(blob)
