"""Item payloads at rest and keyed item ids."""

from __future__ import annotations

import pytest

from middleware.item_crypto import item_id, item_key_version, open_item, seal_item
from middleware.keystore import Keystore
from pmirs.errors import InvalidMessage


@pytest.fixture
def store(tmp_path) -> Keystore:
    ks = Keystore.create(tmp_path / "k", "pw", "alice", scrypt_n=2**10)
    ks.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    ks.add_collection("notes", tenant="t1", encoder_version="clip-v1")
    return ks


def test_round_trip(store) -> None:
    keys = store.collection("photos")
    for payload in (b"", b'{"caption": "a cat"}', bytes(10_000)):
        blob = seal_item(keys, "id-1", payload)
        assert open_item(keys, "id-1", blob) == payload
        assert item_key_version(blob) == 1
    assert seal_item(keys, "id-1", b"x") != seal_item(keys, "id-1", b"x")  # fresh nonce


def test_moved_tampered_or_wrong_key_fails(store) -> None:
    keys = store.collection("photos")
    blob = seal_item(keys, "id-1", b"secret caption")
    with pytest.raises(InvalidMessage):
        open_item(keys, "id-2", blob)
    with pytest.raises(InvalidMessage):
        open_item(store.collection("notes"), "id-1", blob)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 1
        with pytest.raises(InvalidMessage):
            open_item(keys, "id-1", bytes(tampered))
    with pytest.raises(InvalidMessage):
        open_item(keys, "id-1", blob[:20])


def test_rotation_uses_the_blob_version(store) -> None:
    old, new = store.rotate_collection("photos")
    blob = seal_item(old, "id-1", b"payload")
    with pytest.raises(InvalidMessage):
        open_item(new, "id-1", blob)
    keys = store.collection("photos", version=item_key_version(blob))
    assert open_item(keys, "id-1", blob) == b"payload"
    assert item_key_version(seal_item(new, "id-1", b"payload")) == 2


def test_keyed_ids(store) -> None:
    photos, notes = store.collection("photos"), store.collection("notes")
    assert item_id(photos, b"image bytes") == item_id(photos, b"image bytes")
    assert item_id(photos, b"image bytes") != item_id(notes, b"image bytes")
    assert item_id(photos, b"image bytes") != item_id(photos, b"image bytez")
    assert len(item_id(photos, b"x")) == 64
    old, new = store.rotate_collection("photos")
    assert item_id(old, b"x") == item_id(new, b"x")  # stable across rotation: re-indexing is idempotent


def test_caller_mistakes(store) -> None:
    keys = store.collection("photos")
    with pytest.raises(TypeError):
        seal_item(keys, "id", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        seal_item(keys, "", b"x")
    with pytest.raises(TypeError):
        item_id(keys, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        seal_item(object(), "id", b"x")  # type: ignore[arg-type]
