"""The one private path from the retriever to Chroma.

The store only ever holds what the client chose to reveal: obfuscated vectors (ids are keyed
hashes), base64 ciphertexts it cannot open, the key version, and metadata fields the client
marked public. Collections are namespaced by tenant: the Chroma collection name is a hash of
(tenant, collection, version), and a registry file maps each collection to its owner tenant and
its active version. Re-keying writes a staging version and switches atomically at commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pmirs.errors import AccessDeniedError, ConflictError, NotFoundError, RequestError
from retriever.users import write_private_json

REGISTRY_FILE = "collections.json"
_PUBLIC_PREFIX = "p:"
_KEY_VERSION = "kv"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_COMPARE_OPS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"})
_MAX_PUBLIC_FIELDS = 16
_MAX_PUBLIC_STR = 256
_MAX_WHERE_DEPTH = 4


@dataclass
class CollectionInfo:
    """Registry entry: who owns a collection and which stored version queries use."""

    name: str
    tenant: str
    dim: int
    key_version: int
    version: int = 1
    staging_version: int | None = None
    staging_key_version: int | None = None
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StoredItem:
    """One item as the server holds it (nothing here is plaintext unless marked public)."""

    id: str
    vector: np.ndarray
    ciphertext: str
    key_version: int
    public: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """One query result: cosine similarity of the obfuscated vectors plus the stored payload."""

    id: str
    score: float
    ciphertext: str
    key_version: int
    public: dict[str, Any]


def check_name(name: object) -> str:
    """Collection names on the wire are short opaque tokens (the client sends a keyed hash)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RequestError("collection name must be 1-64 of A-Z a-z 0-9 _ -")
    return name


def check_ids(ids: object, limit: int) -> list[str]:
    """Validate a list of item ids against the id alphabet and the batch limit."""
    if not isinstance(ids, list) or not all(isinstance(i, str) and _ID_RE.match(i) for i in ids):
        raise RequestError("ids must be a list of 1-128 character strings of A-Z a-z 0-9 _ -")
    if len(ids) > limit:
        raise RequestError(f"at most {limit} ids per request")
    if len(set(ids)) != len(ids):
        raise RequestError("duplicate ids in one request")
    return ids


def check_public(meta: object) -> dict[str, str | int | float | bool]:
    """Public metadata must be a small flat dict of scalars; it is stored and filterable."""
    if meta is None:
        return {}
    if not isinstance(meta, dict) or len(meta) > _MAX_PUBLIC_FIELDS:
        raise RequestError(f"public metadata must be an object with at most {_MAX_PUBLIC_FIELDS} fields")
    for key, value in meta.items():
        if not isinstance(key, str) or not _FIELD_RE.match(key):
            raise RequestError("public metadata keys must be 1-64 of A-Z a-z 0-9 _ . -")
        if isinstance(value, str) and len(value) > _MAX_PUBLIC_STR:
            raise RequestError(f"public metadata strings are at most {_MAX_PUBLIC_STR} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError("public metadata numbers must be finite")
        if not isinstance(value, str | int | float | bool):
            raise RequestError("public metadata values must be strings, numbers or booleans")
    return dict(meta)


def translate_where(where: object, depth: int = 0) -> dict[str, Any]:
    """Check a Chroma-style filter on public fields and prefix its field names.

    Only ``$and``/``$or`` and comparison operators are accepted, so a filter can never reach the
    internal metadata (key version) or the documents.
    """
    if depth > _MAX_WHERE_DEPTH or not isinstance(where, dict) or len(where) != 1:
        raise RequestError("where must be an object with exactly one field or $and/$or")
    key, value = next(iter(where.items()))
    if key in ("$and", "$or"):
        if not isinstance(value, list) or len(value) < 2:
            raise RequestError(f"{key} takes a list of at least two filters")
        return {key: [translate_where(v, depth + 1) for v in value]}
    if not isinstance(key, str) or not _FIELD_RE.match(key):
        raise RequestError("where field names must be 1-64 of A-Z a-z 0-9 _ . -")
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in _COMPARE_OPS:
            raise RequestError(f"where operators are {sorted(_COMPARE_OPS)}")
        op, operand = next(iter(value.items()))
        scalars = operand if op in ("$in", "$nin") else [operand]
        if not isinstance(scalars, list) or not scalars:
            raise RequestError(f"{op} takes a non-empty list")
        check_public({f"v{i}": s for i, s in enumerate(scalars[:_MAX_PUBLIC_FIELDS])})
        return {_PUBLIC_PREFIX + key: {op: operand}}
    check_public({"v": value})
    return {_PUBLIC_PREFIX + key: {"$eq": value}}


def chroma_name(tenant: str, name: str, version: int) -> str:
    """A Chroma-safe collection name that names neither the tenant nor the collection."""
    digest = hashlib.sha256(f"pmirs\0{tenant}\0{name}\0{version}".encode()).hexdigest()
    return f"pmirs-{digest[:40]}"


class VectorStore:
    """Tenant-scoped CRUD and top-k search over obfuscated vectors in Chroma.

    Example::

        store = VectorStore(chromadb.PersistentClient(path), data_dir)
        store.create_collection("acme", "c0ffee", dim=256, key_version=1)
        store.add("acme", "c0ffee", [StoredItem("id1", vec, "base64...", 1, {"year": 2024})])
        hits = store.query("acme", "c0ffee", query_vec, k=5, where={"year": 2024})
    """

    def __init__(self, client: Any, data_dir: Path) -> None:
        self._client = client
        self._path = Path(data_dir) / REGISTRY_FILE
        self._lock = threading.RLock()
        self._registry: dict[str, CollectionInfo] = self._read_registry()
        # Chroma collection handles by Chroma name: looking one up costs a sysdb round trip per request.
        self._handles: dict[str, Any] = {}

    # -- registry ---------------------------------------------------------------------------
    def _read_registry(self) -> dict[str, CollectionInfo]:
        if not self._path.exists():
            return {}
        raw = json.loads(self._path.read_text(encoding="utf-8"))
        return {name: CollectionInfo(**info) for name, info in raw.items()}

    def _save_registry(self) -> None:
        write_private_json(self._path, {n: asdict(i) for n, i in self._registry.items()})

    def _resolve(self, tenant: str, name: str) -> CollectionInfo:
        """The tenant check every operation goes through: not found, or not yours."""
        with self._lock:
            info = self._registry.get(check_name(name))
        if info is None:
            raise NotFoundError("no such collection")
        if info.tenant != tenant:
            raise AccessDeniedError("forbidden")
        return info

    def _chroma(self, info: CollectionInfo, *, staging: bool = False) -> Any:
        if staging and info.staging_version is None:
            raise ConflictError("no re-keying in progress for this collection")
        version = info.staging_version if staging else info.version
        name = chroma_name(info.tenant, info.name, version)
        handle = self._handles.get(name)
        if handle is None:
            handle = self._client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
            )
            self._handles[name] = handle
        return handle

    # -- collections ------------------------------------------------------------------------
    def create_collection(self, tenant: str, name: str, dim: int, key_version: int) -> CollectionInfo:
        """Create a collection owned by ``tenant`` (idempotent for the same owner and dim)."""
        if not isinstance(dim, int) or not 1 <= dim <= 8192:
            raise RequestError("dim must be an integer in 1..8192")
        if not isinstance(key_version, int) or key_version < 0:
            raise RequestError("key_version must be a non-negative integer")
        with self._lock:
            existing = self._registry.get(check_name(name))
            if existing is not None:
                if existing.tenant != tenant:
                    raise AccessDeniedError("forbidden")
                if existing.dim != dim:
                    raise ConflictError("collection exists with another dimension")
                return existing
            info = CollectionInfo(name=name, tenant=tenant, dim=dim, key_version=key_version)
            self._chroma(info)
            self._registry[name] = info
            self._save_registry()
            return info

    def list_collections(self, tenant: str) -> list[tuple[CollectionInfo, int]]:
        """The tenant's collections with their item counts."""
        with self._lock:
            mine = [i for i in self._registry.values() if i.tenant == tenant]
        return [(info, self._chroma(info).count()) for info in sorted(mine, key=lambda i: i.name)]

    def info(self, tenant: str, name: str) -> CollectionInfo:
        """Registry entry of one of the tenant's collections."""
        return self._resolve(tenant, name)

    def delete_collection(self, tenant: str, name: str) -> None:
        """Drop every stored version of the collection."""
        with self._lock:
            info = self._resolve(tenant, name)
            for version in {info.version, info.staging_version} - {None}:
                self._drop(chroma_name(tenant, name, version))
            del self._registry[name]
            self._save_registry()

    def _drop(self, chroma: str) -> None:
        self._handles.pop(chroma, None)
        # Already gone is fine; Chroma's error types differ between the embedded and HTTP clients.
        with contextlib.suppress(Exception):
            self._client.delete_collection(chroma)

    # -- items ------------------------------------------------------------------------------
    def add(self, tenant: str, name: str, items: list[StoredItem], *, staging: bool = False) -> int:
        """Upsert items; vectors must match the collection's dimension. Returns the count added."""
        info = self._resolve(tenant, name)
        if not items:
            return 0
        vectors = np.stack([np.asarray(it.vector, dtype=np.float32) for it in items])
        if vectors.shape[1] != info.dim or not np.isfinite(vectors).all():
            raise RequestError(f"vectors must be finite with dimension {info.dim}")
        expected_kv = info.staging_key_version if staging else info.key_version
        if any(it.key_version != expected_kv for it in items):
            raise ConflictError("stale key version")
        metadatas = [{_KEY_VERSION: it.key_version, **{_PUBLIC_PREFIX + k: v for k, v in it.public.items()}}
                     for it in items]
        self._chroma(info, staging=staging).upsert(
            ids=[it.id for it in items], embeddings=vectors, documents=[it.ciphertext for it in items],
            metadatas=metadatas,
        )
        return len(items)

    def delete(self, tenant: str, name: str, ids: list[str]) -> None:
        """Delete items by id from the active version (and a staging version, if any)."""
        info = self._resolve(tenant, name)
        if ids:
            self._chroma(info).delete(ids=ids)
            if info.staging_version is not None:
                self._chroma(info, staging=True).delete(ids=ids)

    def existing_ids(self, tenant: str, name: str, ids: list[str], *, staging: bool = False) -> list[str]:
        """Which of ``ids`` are stored (lets an interrupted upload resume)."""
        info = self._resolve(tenant, name)
        if not ids:
            return []
        found = set(self._chroma(info, staging=staging).get(ids=ids, include=[])["ids"])
        return [i for i in ids if i in found]

    def list_ids(self, tenant: str, name: str, offset: int, limit: int) -> list[str]:
        """A page of stored ids, for re-keying or export."""
        info = self._resolve(tenant, name)
        return list(self._chroma(info).get(offset=offset, limit=limit, include=[])["ids"])

    def count(self, tenant: str, name: str) -> int:
        """Number of items in the active version."""
        return int(self._chroma(self._resolve(tenant, name)).count())

    def get(self, tenant: str, name: str, ids: list[str]) -> list[StoredItem]:
        """Fetch stored items (with their obfuscated vectors) by id, in request order."""
        info = self._resolve(tenant, name)
        if not ids:
            return []
        got = self._chroma(info).get(ids=ids, include=["embeddings", "documents", "metadatas"])
        by_id = {
            i: StoredItem(i, np.asarray(e, dtype=np.float32), d, int(m.get(_KEY_VERSION, 0)), _public_of(m))
            for i, e, d, m in zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"],
                                  strict=True)
        }
        return [by_id[i] for i in ids if i in by_id]

    def query(self, tenant: str, name: str, vector: np.ndarray, k: int,
              where: dict[str, Any] | None = None) -> list[Hit]:
        """Top-k by cosine similarity in the active version, optionally filtered on public fields."""
        info = self._resolve(tenant, name)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != info.dim or not np.isfinite(vector).all():
            raise RequestError(f"query vector must be finite with dimension {info.dim}")
        # No count() first: Chroma returns fewer (or no) results when k exceeds the collection size.
        res = self._chroma(info).query(
            query_embeddings=vector[None, :], n_results=int(k), where=translate_where(where) if where else None,
            include=["documents", "metadatas", "distances"],
        )
        return [
            Hit(i, 1.0 - float(dist), doc, int(meta.get(_KEY_VERSION, 0)), _public_of(meta))
            for i, dist, doc, meta in zip(res["ids"][0], res["distances"][0], res["documents"][0],
                                          res["metadatas"][0], strict=True)
        ]

    # -- re-keying --------------------------------------------------------------------------
    def begin_rotation(self, tenant: str, name: str, new_key_version: int) -> CollectionInfo:
        """Open an empty staging version; queries keep using the active one meanwhile."""
        with self._lock:
            info = self._resolve(tenant, name)
            if not isinstance(new_key_version, int) or new_key_version <= info.key_version:
                raise ConflictError("new key version must be greater than the current one")
            if info.staging_version is not None:
                self._drop(chroma_name(tenant, name, info.staging_version))
            info.staging_version = info.version + 1
            info.staging_key_version = new_key_version
            self._drop(chroma_name(tenant, name, info.staging_version))
            self._chroma(info, staging=True)
            self._save_registry()
            return info

    def commit_rotation(self, tenant: str, name: str) -> CollectionInfo:
        """Switch queries to the staging version, if it holds exactly the active version's ids."""
        with self._lock:
            info = self._resolve(tenant, name)
            if info.staging_version is None:
                raise ConflictError("no re-keying in progress for this collection")
            active, staging = self._chroma(info), self._chroma(info, staging=True)
            if set(active.get(include=[])["ids"]) != set(staging.get(include=[])["ids"]):
                raise ConflictError("staging version does not hold the same items; re-run the re-keying")
            old = info.version
            info.version, info.key_version = info.staging_version, info.staging_key_version
            info.staging_version = info.staging_key_version = None
            self._save_registry()
            self._drop(chroma_name(tenant, name, old))
            return info

    def abort_rotation(self, tenant: str, name: str) -> CollectionInfo:
        """Throw the staging version away."""
        with self._lock:
            info = self._resolve(tenant, name)
            if info.staging_version is not None:
                self._drop(chroma_name(tenant, name, info.staging_version))
                info.staging_version = info.staging_key_version = None
                self._save_registry()
            return info


def _public_of(meta: dict[str, Any] | None) -> dict[str, Any]:
    return {k[len(_PUBLIC_PREFIX):]: v for k, v in (meta or {}).items() if k.startswith(_PUBLIC_PREFIX)}
