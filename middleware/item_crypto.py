"""Item payloads at rest and item ids, under a collection's keys.

The retriever stores, for each item, an id, an obfuscated vector and an opaque payload blob
(caption, thumbnail, path...). The blob is sealed here so only key holders can read it, and
bound to its id and key version so the retriever cannot swap blobs between items unnoticed.

Blob layout: ``0x01 | key_version (4 B big-endian) | nonce (12 B) | AES-256-GCM ciphertext+tag``,
associated data ``lp("pmirs/item") | lp(item_id) | lp(key_version)``.
"""

from __future__ import annotations

from middleware.keystore import CollectionKeys
from pmirs.errors import InvalidMessage
from pmirs.protocol import crypto
from pmirs.protocol.encoding import length_prefixed

BLOB_FORMAT = 1
_HEADER_BYTES = 1 + 4 + crypto.GCM_NONCE_BYTES


def _associated_data(item_id: str, key_version: int) -> bytes:
    return length_prefixed(b"pmirs/item", item_id, key_version)


def _check(keys: CollectionKeys, item_id: str) -> None:
    if not isinstance(keys, CollectionKeys):
        raise TypeError("keys must be CollectionKeys (from Keystore.collection)")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("item_id must be a non-empty str")


def item_id(keys: CollectionKeys, content: bytes) -> str:
    """Keyed id of an item: hex HMAC-SHA256(id key, content).

    Unlike a plain hash it reveals nothing to someone who can guess the content, and it is stable
    for the collection (the id key never rotates), so re-indexing the same content is idempotent.
    """
    if not isinstance(keys, CollectionKeys):
        raise TypeError("keys must be CollectionKeys (from Keystore.collection)")
    if not isinstance(content, bytes):
        raise TypeError("content must be bytes")
    return crypto.keyed_id(keys.id_key, content)


def seal_item(keys: CollectionKeys, item_id: str, payload: bytes) -> bytes:
    """Encrypt an item's payload under the collection's data key at ``keys.key_version``."""
    _check(keys, item_id)
    if not isinstance(payload, bytes):
        raise TypeError("payload must be bytes")
    nonce = crypto.random_bytes(crypto.GCM_NONCE_BYTES)
    ct = crypto.aes_gcm_encrypt(keys.data_key, nonce, payload, _associated_data(item_id, keys.key_version))
    return bytes([BLOB_FORMAT]) + keys.key_version.to_bytes(4, "big") + nonce + ct


def item_key_version(blob: bytes) -> int:
    """The key version a blob was sealed with, so the caller can pick those keys.

    Raises ``InvalidMessage`` for something that is not a sealed item blob.
    """
    if not isinstance(blob, bytes) or len(blob) < _HEADER_BYTES + crypto.GCM_TAG_BYTES:
        raise InvalidMessage()
    if blob[0] != BLOB_FORMAT:
        raise InvalidMessage()
    return int.from_bytes(blob[1:5], "big")


def open_item(keys: CollectionKeys, item_id: str, blob: bytes) -> bytes:
    """Decrypt a blob made by :func:`seal_item` for this ``item_id``; ``InvalidMessage`` on any failure.

    ``keys`` must be of the blob's key version (see :func:`item_key_version` and
    ``Keystore.collection(name, version=...)``).
    """
    _check(keys, item_id)
    if item_key_version(blob) != keys.key_version:
        raise InvalidMessage()
    nonce, ct = blob[5:_HEADER_BYTES], blob[_HEADER_BYTES:]
    return crypto.aes_gcm_decrypt(keys.data_key, nonce, ct, _associated_data(item_id, keys.key_version))
