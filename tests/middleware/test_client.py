"""PrivacyMiddleware against a real retriever: private top-k equals plain top-k, and failure modes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from client_harness import HashEncoder, jpeg_bytes, make_keystore, picture

from middleware.client import AsyncPrivacyMiddleware, PrivacyMiddleware
from pmirs.errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidImageError,
    NotFoundError,
    ServerUnavailableError,
)
from retriever.testing import ServiceProcess, free_port

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.service

TEXTS = [
    "the red fox jumps over the lazy dog", "a quiet lake at dawn", "confidential merger plans for acme",
    "grandmother's apple pie recipe", "the dog sleeps by the fire", "stock prices fell sharply today",
    "a red sports car on the highway", "fox cubs playing in the snow", "notes from the doctor visit",
    "the lazy cat and the quiet dog", "sunset over the red desert", "a recipe for lemon cake",
]
ENCODER = HashEncoder()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(tmp_path_factory.mktemp("client-svc") / "data", allow_plain=True)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(service: ServiceProcess, tmp_path: Path) -> Iterator[PrivacyMiddleware]:
    keystore = make_keystore(tmp_path, f"alice{time.monotonic_ns()}", service)
    with PrivacyMiddleware(service.url, keystore, ENCODER, batch_size=5) as pm:
        yield pm


def plain_topk(query: np.ndarray, vectors: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(vectors @ query), kind="stable")[:k])


def test_private_topk_equals_plain_topk(client: PrivacyMiddleware) -> None:
    client.create_collection("notes")
    report = client.index_texts("notes", TEXTS, public_metadata=[{"i": i} for i in range(len(TEXTS))])
    assert (report.added, report.skipped, len(set(report.ids))) == (len(TEXTS), 0, len(TEXTS))
    vectors = ENCODER.encode_texts(TEXTS)
    for query in ("red fox", "lazy dog", "recipe cake", "quiet lake"):
        result = client.query_text("notes", query, k=4)
        expected = plain_topk(ENCODER.encode_texts([query])[0], vectors, 4)
        assert [TEXTS.index(item.text) for item in result.items] == expected
        plain_scores = vectors[expected] @ ENCODER.encode_texts([query])[0]
        assert [item.score for item in result.items] == pytest.approx(list(plain_scores), abs=1e-4)
        assert result.rejected == 0
        assert {"encode", "obfuscate", "encrypt", "http", "server_search", "decrypt", "total"} <= set(
            result.timings_ms)
    filtered = client.query_text("notes", "red fox", k=3, where={"i": {"$gte": 6}})
    assert all(item.public["i"] >= 6 for item in filtered.items) and len(filtered.items) == 3


def test_images_round_trip_and_resume(client: PrivacyMiddleware, tmp_path: Path) -> None:
    client.create_collection("photos")
    pics = [picture(i) for i in range(6)]
    path = tmp_path / "p5.jpg"
    path.write_bytes(jpeg_bytes(pics[5]))
    items = [(pics[i], f"caption {i}", {"n": i}) for i in range(5)] + [(path, "caption 5", {"n": 5})]
    first = client.index_images("photos", items[:4])
    assert (first.added, first.skipped) == (4, 0)
    second = client.index_images("photos", items)  # resumed: the first four are skipped
    assert (second.added, second.skipped) == (2, 4)
    assert second.ids[:4] == first.ids and client.count("photos") == 6
    result = client.query_image("photos", pics[2], k=2)
    top = result.items[0]
    assert (top.kind, top.caption, top.public) == ("image", "caption 2", {"n": 2})
    assert top.score == pytest.approx(1.0)
    assert top.open_image().size == (32, 32)
    assert client.query_image("photos", path, k=1).items[0].image_bytes == path.read_bytes()  # original kept


def test_non_image_upload_is_refused_before_sending(client: PrivacyMiddleware, tmp_path: Path) -> None:
    client.create_collection("photos2")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a picture")
    with pytest.raises(InvalidImageError, match="holiday.jpg"):
        client.index_images("photos2", [(picture(1), "ok", None), (fake, "bad", None)])
    with pytest.raises(InvalidImageError):
        client.query_image("photos2", b"\x89PNG garbage")
    assert client.count("photos2") == 0  # the valid first image was not sent either


def test_server_restart_rehandshakes(service: ServiceProcess, client: PrivacyMiddleware) -> None:
    client.create_collection("restart")
    client.index_texts("restart", TEXTS)
    before = client.query_text("restart", "red fox", k=3)
    handshakes = client._channel.handshakes
    service.restart()
    after = client.query_text("restart", "red fox", k=3)  # old session unknown -> 401 -> new handshake
    assert client._channel.handshakes == handshakes + 1
    assert [i.id for i in after.items] == [i.id for i in before.items]
    assert client.count("restart") == len(TEXTS)


def test_forged_server_identity(service: ServiceProcess, client: PrivacyMiddleware, tmp_path: Path) -> None:
    client.create_collection("pinned")
    client.index_texts("pinned", TEXTS[:3])
    keystore = make_keystore(tmp_path, "trudy", service, pin="ab" * 32)  # pinned to another server key
    with PrivacyMiddleware(service.url, keystore, ENCODER) as other, pytest.raises(
            AuthenticationError, match="pinned fingerprint"):
        other.create_collection("pinned")
    assert client.count("pinned") == 3


def test_dead_server(tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path, "dave", None)
    url = f"http://127.0.0.1:{free_port()}"
    keystore.pin_server(url, "cd" * 32)
    with PrivacyMiddleware(url, keystore, ENCODER, timeout=2) as pm, pytest.raises(
            ServerUnavailableError, match="unreachable"):
        pm.create_collection("x")


def test_unknown_collection_and_missing_pin(service: ServiceProcess, client: PrivacyMiddleware,
                                            tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="create_collection"):
        client.query_text("never-made", "hello")
    keystore = make_keystore(tmp_path, "erin", None)
    with pytest.raises(AuthenticationError, match="pmirs keys pin"):
        PrivacyMiddleware(service.url, keystore, ENCODER)


def test_shares_respect_tenants(service: ServiceProcess, client: PrivacyMiddleware, tmp_path: Path) -> None:
    client.create_collection("shared")
    client.index_texts("shared", TEXTS)
    expected = [i.id for i in client.query_text("shared", "lazy dog", k=3).items]
    carol_keys = make_keystore(tmp_path, "carol", service, tenant="acme")
    bob_keys = make_keystore(tmp_path, "bob", service, tenant="globex")
    for keys in (carol_keys, bob_keys):
        keys.accept_share(client.keystore.share_collection("shared", keys.export_public()),
                          client.keystore.export_public())
    with PrivacyMiddleware(service.url, carol_keys, ENCODER) as carol:  # same tenant: allowed
        assert [i.id for i in carol.query_text("shared", "lazy dog", k=3).items] == expected
    with PrivacyMiddleware(service.url, bob_keys, ENCODER) as bob, pytest.raises(AccessDeniedError):
        bob.query_text("shared", "lazy dog", k=3)  # has the keys, but another tenant: 403


def test_rotation_keeps_results(service: ServiceProcess, client: PrivacyMiddleware) -> None:
    client.create_collection("rotating")
    client.index_texts("rotating", TEXTS, private_metadata=[{"row": i} for i in range(len(TEXTS))])
    before = client.query_text("rotating", "red fox", k=5)
    old_wire = client._flows.codec.wire_name("rotating")
    report = client.rotate_collection("rotating")
    assert report == {"moved": len(TEXTS), "old_version": 1, "new_version": 2}
    assert client.keystore.key_versions("rotating") == [2]
    after = client.query_text("rotating", "red fox", k=5)
    assert [(i.id, i.text, i.metadata) for i in after.items] == [
        (i.id, i.text, i.metadata) for i in before.items]
    assert [i.score for i in after.items] == pytest.approx([i.score for i in before.items], abs=1e-5)
    assert client._flows.codec.wire_name("rotating") == old_wire  # same name and ids, new keys
    info = [c for c in client.list_collections() if c["name"] == "rotating"][0]
    assert (info["key_version"], info["count"], info["rotating"]) == (2, len(TEXTS), False)


class ShiftedHashEncoder(HashEncoder):
    """A "new encoder version": the same words land in other directions (vectors incomparable)."""

    @property
    def version(self) -> str:
        return "hash-v2"

    def encode_texts(self, texts, batch_size: int = 64) -> np.ndarray:
        return super().encode_texts([f"{t} v2" for t in texts], batch_size)


def test_reindex_reembeds_items_with_a_new_encoder(service: ServiceProcess, tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path, "reindexer", service)
    with PrivacyMiddleware(service.url, keystore, ENCODER) as old_client:
        old_client.create_collection("notes")
        old_client.index_texts("notes", TEXTS)
        old_client.index_images("notes", [(picture(5), "a random picture", None)])
    new_encoder = ShiftedHashEncoder()
    expected = new_encoder.encode_texts(TEXTS) @ new_encoder.encode_texts(["red fox"])[0]
    with PrivacyMiddleware(service.url, keystore, new_encoder) as client:
        stale = client.query_text("notes", "red fox", k=3)  # new query vs old vectors: scores disagree
        assert [i.score for i in stale.items] != pytest.approx(sorted(expected, reverse=True)[:3], abs=1e-4)
        report = client.reindex_collection("notes")
        assert report == {"moved": len(TEXTS) + 1, "old_version": 1, "new_version": 2}
        after = client.query_text("notes", "red fox", k=3)
        assert [i.score for i in after.items] == pytest.approx(sorted(expected, reverse=True)[:3], abs=1e-4)
        assert [i.text for i in after.items] == [TEXTS[j] for j in np.argsort(-expected)[:3]]
        assert client.query_image("notes", picture(5), k=1).items[0].caption == "a random picture"
    assert keystore.collection("notes").encoder_version == "hash-v2"


def test_server_log_has_no_plaintext(service: ServiceProcess, client: PrivacyMiddleware) -> None:
    secret_caption, secret_query = "zanzibar-caption-4711", "quixotic-query-0815"
    client.create_collection("secrets")
    client.index_images("secrets", [(picture(9), secret_caption, None)])
    client.index_texts("secrets", [f"{secret_caption} as text"])
    client.query_text("secrets", secret_query, k=2)
    log = service.log_text()
    assert '"event": "request"' in log
    for secret in (secret_caption, secret_query, "secrets", client.keystore.user_id):
        assert secret not in log


def test_plain_pipeline(service: ServiceProcess) -> None:
    with PrivacyMiddleware(service.url, None, ENCODER, private=False) as plain:
        plain.create_collection("bench_plain")
        plain.index_texts("bench_plain", TEXTS)
        result = plain.query_text("bench_plain", "red fox", k=3)
    expected = plain_topk(ENCODER.encode_texts(["red fox"])[0], ENCODER.encode_texts(TEXTS), 3)
    assert [TEXTS.index(i.text) for i in result.items] == expected


async def test_async_client(service: ServiceProcess, tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path, "async-alice", service)
    async with AsyncPrivacyMiddleware(service.url, keystore, ENCODER) as pm:
        await pm.create_collection("async")
        report = await pm.index_texts("async", TEXTS)
        assert report.added == len(TEXTS)
        result = await pm.query_text("async", "quiet lake", k=2)
        assert result.items[0].text == "a quiet lake at dawn"
        image_result = await pm.query_image("async", picture(3), k=1)
        assert len(image_result.items) == 1
        with pytest.raises(InvalidImageError):
            await pm.query_image("async", b"not an image")
