"""The real service over HTTP: round trip, and every attack rejected with nothing changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from retriever_helpers import RawClient, vec

from pmirs.protocol import crypto
from pmirs.protocol.encoding import b64url_decode, b64url_encode
from retriever.testing import ServiceProcess

pytestmark = pytest.mark.service

DIM = 8
INVALID = {"detail": "invalid message"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(tmp_path_factory.mktemp("svc") / "data")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def alice(service: ServiceProcess, make_user, raw_clients) -> RawClient:
    user_id, key = make_user(service.data_dir, f"alice-{time.monotonic_ns()}", "acme")
    client = RawClient(service.url, user_id, key, service.fingerprint)
    raw_clients.append(client)
    assert client.handshake().status_code == 200
    return client


@pytest.fixture
def collection(alice: RawClient) -> str:
    """A collection of alice's with 4 unit vectors."""
    name = f"c{time.monotonic_ns()}"
    assert alice.call("/collections/create", {"name": name, "dim": DIM, "key_version": 1})[0] == 200
    items = [{"id": f"i{j}", "vector": vec(np.eye(DIM)[j]), "ciphertext": b64url_encode(bytes([j]) * 40),
              "public": {"n": j}} for j in range(4)]
    status, body = alice.call("/items/add", {"collection": name, "key_version": 1, "items": items})
    assert (status, body) == (200, {"added": 4})
    return name


def snapshot(client: RawClient, name: str) -> tuple[int, list[str]]:
    status, body = client.call("/items/list", {"collection": name, "offset": 0, "limit": 100})
    assert status == 200
    return body["count"], sorted(body["ids"])


def new_item(j: int = 9) -> dict:
    return {"id": f"new{j}", "vector": vec(np.ones(DIM)), "ciphertext": "AAAA", "public": {}}


def test_health_and_openapi(service: ServiceProcess) -> None:
    r = httpx.get(f"{service.url}/healthz")
    assert (r.status_code, r.text, r.headers["content-type"].split(";")[0]) == (200, "ok", "text/plain")
    spec = httpx.get(f"{service.url}/openapi.json").json()
    assert {"/v1/handshake", "/v1/query", "/v1/items/add", "/v1/collections/create"} <= set(spec["paths"])
    assert httpx.get(f"{service.url}/docs").status_code == 200
    assert httpx.post(f"{service.url}/v1/plain/query", json={}).status_code == 404  # benchmark routes off


def test_round_trip(alice: RawClient, collection: str) -> None:
    status, body = alice.call("/query", {"collection": collection, "k": 2, "key_version": 1,
                                         "vector": vec([1, 0.5, 0, 0, 0, 0, 0, 0])})
    assert status == 200
    assert [r["id"] for r in body["results"]] == ["i0", "i1"]
    assert body["results"][0]["score"] == pytest.approx(2 / np.sqrt(5), abs=1e-5)
    assert b64url_decode(body["results"][1]["ciphertext"]) == bytes([1]) * 40
    assert body["search_ms"] >= 0
    status, body = alice.call("/query", {"collection": collection, "k": 4, "key_version": 1,
                                         "vector": vec(np.ones(DIM)), "where": {"n": {"$gte": 2}}})
    assert sorted(r["id"] for r in body["results"]) == ["i2", "i3"]
    exists = alice.call("/items/exists", {"collection": collection, "ids": ["i1", "zz"]})
    assert exists == (200, {"present": ["i1"]})
    status, listed = alice.call("/collections/list", {})
    assert [c["count"] for c in listed["collections"] if c["name"] == collection] == [4]
    assert alice.call("/query", {"collection": collection, "k": 2, "key_version": 7,
                                 "vector": vec(np.ones(DIM))})[0] == 409  # stale key version


def test_tampered_envelope(alice: RawClient, collection: str) -> None:
    before = snapshot(alice, collection)
    for field in ("ct", "mac", "iv"):
        env = alice.seal("/items/add", {"collection": collection, "key_version": 1, "items": [new_item()]})
        raw = bytearray(b64url_decode(env[field]))
        raw[len(raw) // 2] ^= 0x01
        env[field] = b64url_encode(bytes(raw))
        r = alice.post("/items/add", env)
        assert (r.status_code, r.json()) == (400, INVALID)
    env = alice.seal("/items/add", {"collection": collection, "key_version": 1, "items": [new_item()]})
    env["ts"] += 1  # authenticated header field
    r = alice.post("/items/add", env)
    assert (r.status_code, r.json()) == (400, INVALID)
    env = alice.seal("/items/delete", {"collection": collection, "ids": ["i0"]})
    r = alice.post("/collections/delete", env)  # a valid envelope sent to another route
    assert (r.status_code, r.json()) == (400, INVALID)
    assert snapshot(alice, collection) == before


def test_replayed_message(alice: RawClient, collection: str) -> None:
    env = alice.seal("/items/delete", {"collection": collection, "ids": ["i3"]})
    assert alice.post("/items/delete", env).status_code == 200
    before = snapshot(alice, collection)
    alice.call("/items/add", {"collection": collection, "key_version": 1, "items": [new_item(3)]})
    after_add = snapshot(alice, collection)
    assert after_add[0] == before[0] + 1
    r = alice.post("/items/delete", env)  # replay
    assert (r.status_code, r.json()) == (400, INVALID)
    assert snapshot(alice, collection) == after_add


def test_stale_message(service: ServiceProcess, make_user, raw_clients, alice: RawClient,
                       collection: str) -> None:
    before = snapshot(alice, collection)
    user_id, key = make_user(service.data_dir, "skewed", "acme")
    skewed = RawClient(service.url, user_id, key, service.fingerprint)
    raw_clients.append(skewed)
    assert skewed.handshake().status_code == 200
    skewed.session._now = lambda: time.time() - 1000  # its clock is 1000 s behind from now on
    r = skewed.post("/items/delete", skewed.seal("/items/delete", {"collection": collection, "ids": ["i0"]}))
    assert (r.status_code, r.json()) == (400, INVALID)
    assert snapshot(alice, collection) == before


def test_wrong_keys(service: ServiceProcess, make_user, raw_clients, alice: RawClient,
                    collection: str) -> None:
    before = snapshot(alice, collection)
    user_id, _ = make_user(service.data_dir, "mallory", "acme")
    impostor = RawClient(service.url, user_id, crypto.ed25519_generate(), service.fingerprint)  # not her key
    raw_clients.append(impostor)
    r = impostor.handshake()
    assert (r.status_code, r.json()) == (400, INVALID)
    unknown = RawClient(service.url, "nobody", crypto.ed25519_generate(), service.fingerprint)
    raw_clients.append(unknown)
    r = unknown.handshake()
    assert (r.status_code, r.json()) == (400, INVALID)  # the same answer: no user enumeration
    # A real session of another user, but the envelope claims alice's session id.
    other_id, other_key = make_user(service.data_dir, "eve", "acme")
    eve = RawClient(service.url, other_id, other_key, service.fingerprint)
    raw_clients.append(eve)
    assert eve.handshake().status_code == 200
    env = eve.seal("/items/delete", {"collection": collection, "ids": ["i0"]})
    env["sid"] = alice.session.sid
    r = eve.post("/items/delete", env)
    assert (r.status_code, r.json()) == (400, INVALID)
    env["sid"] = "0" * 32
    assert eve.post("/items/delete", env).status_code == 401
    assert snapshot(alice, collection) == before


def test_other_tenant_is_forbidden(service: ServiceProcess, make_user, raw_clients, alice: RawClient,
                                   collection: str) -> None:
    before = snapshot(alice, collection)
    user_id, key = make_user(service.data_dir, "bob", "globex")
    bob = RawClient(service.url, user_id, key, service.fingerprint)
    raw_clients.append(bob)
    assert bob.handshake().status_code == 200
    attempts = [
        ("/items/add", {"collection": collection, "key_version": 1, "items": [new_item()]}),
        ("/items/delete", {"collection": collection, "ids": ["i0"]}),
        ("/items/get", {"collection": collection, "ids": ["i0"]}),
        ("/query", {"collection": collection, "k": 2, "key_version": 1, "vector": vec(np.ones(DIM))}),
        ("/collections/delete", {"name": collection}),
        ("/collections/create", {"name": collection, "dim": DIM, "key_version": 1}),
        ("/collections/rotate/begin", {"name": collection, "key_version": 2}),
    ]
    for path, body in attempts:
        assert bob.call(path, body) == (403, {"detail": "forbidden"}), path
    assert bob.call("/collections/list", {}) == (200, {"collections": []})
    assert snapshot(alice, collection) == before


def test_malformed_requests(service: ServiceProcess, alice: RawClient, collection: str) -> None:
    url = f"{service.url}/v1/query"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text
    r = httpx.post(url, json={"v": 1, "sid": "x"})
    assert r.status_code == 422 and "missing" in r.text.lower()
    status, body = alice.call("/query", {"collection": collection, "k": "five"})
    assert status == 400 and "wrong type" in body["detail"]
    status, body = alice.call("/items/add", {"collection": collection, "key_version": 1,
                                             "items": [{**new_item(), "vector": vec(np.ones(3))}]})
    assert status == 400 and "dimension" in body["detail"]
    assert alice.call("/query", {"collection": "nope", "k": 1, "key_version": 1,
                                 "vector": vec(np.ones(DIM))})[0] == 404


def test_oversized_body(service: ServiceProcess) -> None:
    big = b"x" * (8 * 1024 * 1024 + 1)
    r = httpx.post(f"{service.url}/v1/items/add", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(9):
            yield b"x" * (1024 * 1024)

    r = httpx.post(f"{service.url}/v1/items/add", content=chunks(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_identity_file_is_private(service: ServiceProcess) -> None:
    for name in ("identity.pem", "users.json", "collections.json"):
        path = Path(service.data_dir) / name
        assert path.stat().st_mode & 0o077 == 0, name
