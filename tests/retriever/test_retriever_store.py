"""The one path to Chroma, in process: tenant checks, filters, re-keying commit rules."""

from __future__ import annotations

from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings as ChromaSettings

from pmirs.errors import AccessDeniedError, ConflictError, NotFoundError, RequestError
from retriever.store import StoredItem, VectorStore, chroma_name, translate_where


@pytest.fixture
def store(tmp_path: Path) -> VectorStore:
    settings = ChromaSettings(anonymized_telemetry=False)
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=settings)
    return VectorStore(client, tmp_path)


def items(n: int, kv: int = 1, dim: int = 4) -> list[StoredItem]:
    rng = np.random.default_rng(0)
    return [StoredItem(f"id{i}", rng.standard_normal(dim), f"ct{i}", kv, {"i": i}) for i in range(n)]


def test_where_filters_only_reach_public_fields() -> None:
    assert translate_where({"year": 2024}) == {"p:year": {"$eq": 2024}}
    assert translate_where({"$and": [{"a": {"$in": [1, 2]}}, {"b": "x"}]}) == {
        "$and": [{"p:a": {"$in": [1, 2]}}, {"p:b": {"$eq": "x"}}]}
    for bad in ({"a": {"$regex": "x"}}, {"$contains": "x"}, {"a": 1, "b": 2}, {"a": [1]},
                {"$and": [{"a": 1}]}, {"a": {"$in": []}}, {"bad key!": 1}):
        with pytest.raises(RequestError):
            translate_where(bad)


def test_tenants_and_names(store: VectorStore, tmp_path: Path) -> None:
    store.create_collection("t1", "c", 4, 1)
    store.add("t1", "c", items(3))
    with pytest.raises(AccessDeniedError):
        store.count("t2", "c")
    with pytest.raises(AccessDeniedError):
        store.create_collection("t2", "c", 4, 1)
    with pytest.raises(NotFoundError):
        store.count("t1", "missing")
    with pytest.raises(RequestError):
        store.create_collection("t1", "../etc", 4, 1)
    assert chroma_name("t1", "c", 1).startswith("pmirs-") and "t1" not in chroma_name("t1", "c", 1)
    reopened = VectorStore(store._client, tmp_path)  # the registry survives a restart
    assert reopened.count("t1", "c") == 3
    store.delete_collection("t1", "c")
    with pytest.raises(NotFoundError):
        store.count("t1", "c")


def test_rotation_switches_atomically(store: VectorStore) -> None:
    store.create_collection("t", "c", 4, 1)
    store.add("t", "c", items(5))
    with pytest.raises(ConflictError):
        store.commit_rotation("t", "c")  # nothing staged
    with pytest.raises(ConflictError):
        store.begin_rotation("t", "c", 1)  # must increase
    store.begin_rotation("t", "c", 2)
    with pytest.raises(ConflictError):
        store.add("t", "c", items(1, kv=1), staging=True)  # staging takes the new version only
    store.add("t", "c", items(4, kv=2), staging=True)
    with pytest.raises(ConflictError):
        store.commit_rotation("t", "c")  # one item missing: refuse to switch
    assert store.info("t", "c").key_version == 1 and store.count("t", "c") == 5  # queries unaffected
    store.add("t", "c", items(5, kv=2), staging=True)
    info = store.commit_rotation("t", "c")
    assert (info.key_version, info.version, info.staging_version) == (2, 2, None)
    assert store.count("t", "c") == 5
    assert {h.key_version for h in store.query("t", "c", np.ones(4), 5)} == {2}
