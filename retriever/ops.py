"""What each endpoint does once its body is opened: plain dicts in, plain dicts out.

Routes (sealed) and the benchmark-only plain router call the same functions, so the two paths
cannot drift apart. Errors are ``pmirs.errors`` types; ``retriever.main`` maps them to HTTP.

Vectors travel as base64url (unpadded) of little-endian float32; ciphertexts are opaque strings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pmirs.errors import ConflictError, RequestError
from pmirs.protocol.vectors import decode_vector, encode_vector
from retriever.store import CollectionInfo, StoredItem, VectorStore, check_ids, check_name, check_public

MAX_CIPHERTEXT_CHARS = 4 * 1024 * 1024

Body = dict[str, Any]
Op = Callable[[VectorStore, str, Body, "Limits"], Body]


class Limits:
    """Per-request bounds taken from the service settings."""

    def __init__(self, max_items: int, max_k: int) -> None:
        self.max_items = max_items
        self.max_k = max_k


def _vector(text: object) -> np.ndarray:
    """A request's vector; a malformed one is a caller error, not a crypto one."""
    try:
        return decode_vector(text)
    except ValueError as e:
        raise RequestError(str(e)) from e


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise RequestError(f"missing field {name!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(f"field {name!r} has the wrong type")
    return value


def _describe(info: CollectionInfo, count: int | None = None) -> dict[str, Any]:
    out = {"name": info.name, "dim": info.dim, "key_version": info.key_version, "version": info.version,
           "rotating": info.staging_version is not None}
    if info.staging_key_version is not None:
        out["staging_key_version"] = info.staging_key_version
    if count is not None:
        out["count"] = count
    return out


def create_collection(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{name, dim, key_version}`` -> the collection's description."""
    info = store.create_collection(tenant, check_name(_field(body, "name", str)), _field(body, "dim", int),
                                   _field(body, "key_version", int))
    return _describe(info)


def list_collections(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{}`` -> ``{collections: [...]}`` for the session's tenant only."""
    return {"collections": [_describe(info, n) for info, n in store.list_collections(tenant)]}


def describe_collection(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{name}`` -> the collection's description with its count."""
    name = _field(body, "name", str)
    return _describe(store.info(tenant, name), store.count(tenant, name))


def delete_collection(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{name}`` -> ``{deleted: true}``."""
    store.delete_collection(tenant, _field(body, "name", str))
    return {"deleted": True}


def add_items(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{collection, key_version, staging?, items: [{id, vector, ciphertext, public?}]}`` -> ``{added}``."""
    raw_items = _field(body, "items", list)
    if len(raw_items) > limits.max_items:
        raise RequestError(f"at most {limits.max_items} items per request")
    key_version = _field(body, "key_version", int)
    items = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            raise RequestError("each item must be an object")
        ciphertext = _field(raw, "ciphertext", str)
        if len(ciphertext) > MAX_CIPHERTEXT_CHARS:
            raise RequestError("item ciphertext too large")
        items.append(StoredItem(_field(raw, "id", str), _vector(raw.get("vector")), ciphertext,
                                key_version, check_public(raw.get("public"))))
    check_ids([it.id for it in items], limits.max_items)
    staging = _field(body, "staging", bool, False)
    added = store.add(tenant, _field(body, "collection", str), items, staging=staging)
    return {"added": added}


def delete_items(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{collection, ids}`` -> ``{deleted: n}`` (ids not present count too; deletion is idempotent)."""
    ids = check_ids(_field(body, "ids", list), limits.max_items)
    store.delete(tenant, _field(body, "collection", str), ids)
    return {"deleted": len(ids)}


def existing_items(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{collection, ids, staging?}`` -> ``{present: [...]}``: lets an upload resume."""
    ids = check_ids(_field(body, "ids", list), limits.max_items)
    present = store.existing_ids(tenant, _field(body, "collection", str), ids,
                                 staging=_field(body, "staging", bool, False))
    return {"present": present}


def list_items(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{collection, offset, limit}`` -> ``{ids, count}``: pages through ids for re-keying."""
    offset = _field(body, "offset", int, 0)
    limit = _field(body, "limit", int, limits.max_items)
    if offset < 0 or not 1 <= limit <= limits.max_items:
        raise RequestError(f"offset must be >= 0 and limit in 1..{limits.max_items}")
    name = _field(body, "collection", str)
    return {"ids": store.list_ids(tenant, name, offset, limit), "count": store.count(tenant, name)}


def get_items(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{collection, ids}`` -> ``{items: [{id, vector, ciphertext, key_version, public}]}``."""
    ids = check_ids(_field(body, "ids", list), limits.max_items)
    items = store.get(tenant, _field(body, "collection", str), ids)
    return {"items": [{"id": it.id, "vector": encode_vector(it.vector), "ciphertext": it.ciphertext,
                       "key_version": it.key_version, "public": it.public} for it in items]}


def query(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{collection, vector, k, key_version, where?}`` -> ``{results: [...], search_ms}``."""
    name = _field(body, "collection", str)
    k = _field(body, "k", int)
    if not 1 <= k <= limits.max_k:
        raise RequestError(f"k must be in 1..{limits.max_k}")
    info = store.info(tenant, name)
    if _field(body, "key_version", int) != info.key_version:
        raise ConflictError("stale key version")
    where = body.get("where")
    if where is not None and not isinstance(where, dict):
        raise RequestError("where must be an object")
    start = time.perf_counter()
    hits = store.query(tenant, name, _vector(body.get("vector")), k, where or None)
    search_ms = (time.perf_counter() - start) * 1000
    return {
        "results": [{"id": h.id, "score": h.score, "ciphertext": h.ciphertext, "key_version": h.key_version,
                     "public": h.public} for h in hits],
        "search_ms": round(search_ms, 3),
    }


def begin_rotation(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{name, key_version}`` -> description with a fresh, empty staging version."""
    name, key_version = _field(body, "name", str), _field(body, "key_version", int)
    return _describe(store.begin_rotation(tenant, name, key_version))


def commit_rotation(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{name}`` -> description after queries switched to the re-keyed version."""
    name = _field(body, "name", str)
    return _describe(store.commit_rotation(tenant, name), store.count(tenant, name))


def abort_rotation(store: VectorStore, tenant: str, body: Body, limits: Limits) -> Body:
    """``{name}`` -> description after the staging version was dropped."""
    return _describe(store.abort_rotation(tenant, _field(body, "name", str)))


# Path (under /v1 or /v1/plain) -> operation. The routers and the client both use these paths.
OPS: dict[str, Op] = {
    "/collections/create": create_collection,
    "/collections/list": list_collections,
    "/collections/describe": describe_collection,
    "/collections/delete": delete_collection,
    "/collections/rotate/begin": begin_rotation,
    "/collections/rotate/commit": commit_rotation,
    "/collections/rotate/abort": abort_rotation,
    "/items/add": add_items,
    "/items/delete": delete_items,
    "/items/exists": existing_items,
    "/items/list": list_items,
    "/items/get": get_items,
    "/query": query,
}
