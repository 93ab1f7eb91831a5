"""Keystore: passphrase-encrypted file, permissions, rotation and sharing between users."""

from __future__ import annotations

import json
import os
import stat

import pytest

from middleware.keystore import Keystore
from pmirs.errors import InvalidMessage, KeystoreError
from pmirs.protocol.encoding import b64url_decode, b64url_encode

FAST = {"scrypt_n": 2**10}  # the file records the parameters; the defaults are tested once below
WRONG = "wrong passphrase or corrupted keystore"


@pytest.fixture
def store(tmp_path) -> Keystore:
    return Keystore.create(tmp_path / "alice.keys", "correct horse", "alice", **FAST)


def test_round_trip_with_default_scrypt_parameters(tmp_path) -> None:
    path = tmp_path / "keys.json"
    ks = Keystore.create(path, "pass phrase", "alice")
    keys = ks.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    ks.pin_server("https://retriever.example", "AB" * 32)
    header = json.loads(path.read_text())
    assert header["kdf"]["n"] == 2**15 and header["kdf"]["r"] == 8 and header["kdf"]["p"] == 1
    assert len(b64url_decode(header["kdf"]["salt"])) == 16
    again = Keystore.open(path, "pass phrase")
    assert again.collection("photos") == keys
    assert again.user_id == "alice" and again.identity_private_key == ks.identity_private_key
    assert again.server_fingerprint("https://retriever.example") == "ab" * 32
    assert again.server_fingerprint("https://other.example") is None
    assert again.list_collections() == ["photos"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_secrets_are_not_in_the_file_or_reprs(store) -> None:
    keys = store.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    raw = store.path.read_bytes()
    for secret in (keys.projection_key, keys.data_key, keys.id_key, store.identity_private_key):
        assert b64url_encode(secret).encode() not in raw and secret not in raw
        assert b64url_encode(secret) not in repr(keys) + repr(store) and secret.hex() not in repr(keys)
    assert b"correct horse" not in raw and b"photos" not in raw


def test_wrong_passphrase_and_tampering(store, tmp_path) -> None:
    store.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    with pytest.raises(KeystoreError, match=WRONG):
        Keystore.open(store.path, "wrong horse")
    original = json.loads(store.path.read_text())
    body = bytearray(b64url_decode(original["body"]))
    body[10] ^= 1
    tampered = [
        {**original, "body": b64url_encode(bytes(body))},
        {**original, "kdf": {**original["kdf"], "n": 2**11}},
        {**original, "kdf": {**original["kdf"], "n": 2**40}},
        {**original, "nonce": b64url_encode(bytes(12))},
        {**original, "cipher": "none"},
        {k: v for k, v in original.items() if k != "body"},
    ]
    path = tmp_path / "tampered.keys"
    for document in tampered:
        path.write_text(json.dumps(document))
        path.chmod(0o600)
        with pytest.raises(KeystoreError, match=WRONG):
            Keystore.open(path, "correct horse")
    path.write_text("not json")
    with pytest.raises(KeystoreError, match=WRONG):
        Keystore.open(path, "correct horse")


def test_readable_file_is_fixed_with_a_warning(store) -> None:
    store.path.chmod(0o644)
    with pytest.warns(UserWarning, match="readable"):
        Keystore.open(store.path, "correct horse")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_create_refuses_to_overwrite_and_checks_arguments(store, tmp_path) -> None:
    with pytest.raises(FileExistsError):
        Keystore.create(store.path, "x", "bob", **FAST)
    with pytest.raises(ValueError):
        Keystore.create(tmp_path / "a", "", "bob", **FAST)
    with pytest.raises(ValueError):
        Keystore.create(tmp_path / "b", "x", "bob", scrypt_n=1000)
    with pytest.raises(ValueError):
        store.add_collection("", tenant="t", encoder_version="v")
    store.add_collection("c", tenant="t", encoder_version="v")
    with pytest.raises(ValueError):
        store.add_collection("c", tenant="t", encoder_version="v")
    with pytest.raises(KeyError):
        store.collection("missing")


def test_collection_keys_are_independent_and_random(store) -> None:
    a = store.add_collection("a", tenant="t", encoder_version="v")
    b = store.add_collection("b", tenant="t", encoder_version="v")
    keys = {a.projection_key, a.data_key, a.id_key, b.projection_key, b.data_key, b.id_key}
    assert len(keys) == 6 and all(len(k) == 32 for k in keys)
    assert a.key_version == 1 and a.projection(64).version == 1


def test_rotation_keeps_ids_and_old_versions(store) -> None:
    store.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    old, new = store.rotate_collection("photos")
    assert (old.key_version, new.key_version) == (1, 2)
    assert old.projection_key != new.projection_key and old.data_key != new.data_key
    assert old.id_key == new.id_key
    reopened = Keystore.open(store.path, "correct horse")
    assert reopened.collection("photos") == new and reopened.collection("photos", version=1) == old
    assert reopened.key_versions("photos") == [1, 2]
    with pytest.raises(ValueError):
        reopened.drop_version("photos", 2)
    reopened.drop_version("photos", 1)
    with pytest.raises(KeyError):
        reopened.collection("photos", version=1)


def test_share_and_accept_between_users(store, tmp_path) -> None:
    bob = Keystore.create(tmp_path / "bob.keys", "bob pass", "bob", **FAST)
    store.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    store.rotate_collection("photos")
    wrapped = store.share_collection("photos", bob.export_public())
    assert json.loads(json.dumps(wrapped)) == wrapped
    accepted = bob.accept_share(wrapped, sender_public=store.export_public())
    assert accepted == store.collection("photos")
    assert Keystore.open(bob.path, "bob pass").collection("photos", version=1) == store.collection(
        "photos", 1
    )
    with pytest.raises(ValueError):
        bob.accept_share(wrapped)  # name taken
    assert bob.accept_share(wrapped, name="alice-photos").data_key == accepted.data_key


def test_share_cannot_be_accepted_by_someone_else(store, tmp_path) -> None:
    bob = Keystore.create(tmp_path / "bob.keys", "b", "bob", **FAST)
    carol = Keystore.create(tmp_path / "carol.keys", "c", "carol", **FAST)
    store.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    wrapped = store.share_collection("photos", bob.export_public())
    with pytest.raises(InvalidMessage):
        carol.accept_share(wrapped)
    readdressed = {**wrapped, "recipient": "carol", "recipient_key": carol.export_public()["exchange_key"]}
    with pytest.raises(InvalidMessage):
        carol.accept_share(readdressed)
    assert carol.list_collections() == []


def test_tampered_or_impersonated_share_is_rejected(store, tmp_path) -> None:
    bob = Keystore.create(tmp_path / "bob.keys", "b", "bob", **FAST)
    mallory = Keystore.create(tmp_path / "mallory.keys", "m", "mallory", **FAST)
    store.add_collection("photos", tenant="t1", encoder_version="clip-v1")
    wrapped = store.share_collection("photos", bob.export_public())
    ct = bytearray(b64url_decode(wrapped["ct"]))
    ct[0] ^= 1
    for bad in [
        {**wrapped, "ct": b64url_encode(bytes(ct))},
        {**wrapped, "label": "other"},
        {**wrapped, "sender": "mallory"},
        {k: v for k, v in wrapped.items() if k != "sig"},
    ]:
        with pytest.raises(InvalidMessage):
            bob.accept_share(bad)
    mallory.add_collection("photos", tenant="evil", encoder_version="clip-v1")
    forged = mallory.share_collection("photos", bob.export_public())
    with pytest.raises(InvalidMessage):
        bob.accept_share(forged, sender_public=store.export_public())  # not from alice
    assert bob.list_collections() == []
