"""The client's operations, written once as generators so sync and async clients share them.

A flow yields ``(path, body)`` requests and is sent back each answer (a dict, with the call's
:class:`~middleware.transport.CallStats` under ``"_stats"``); its return value is the result.
The pseudo-request :data:`TENANT` asks the driver for the session's tenant (handshaking if
needed). The CPU work (encoding, projection, sealing) happens inside the flow, so the async
driver can run each step in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from middleware.encoder.base import Encoder
from middleware.payloads import (
    ImageItem,
    RetrievedItem,
    as_image_item,
    check_image,
    image_id_content,
    image_payload,
    load_image,
    parse_payload,
    text_id_content,
    text_payload,
)
from pmirs.errors import ConflictError, InvalidMessage, NotFoundError
from pmirs.protocol.vectors import decode_vector, encode_vector

T = TypeVar("T")
Request = tuple[str, dict[str, Any]]
Flow = Generator[Request, dict[str, Any], T]
TENANT = "__tenant__"
MAX_BATCH_BYTES = 3 * 1024 * 1024  # sealed + base64 roughly doubles this; the server takes 8 MiB


@dataclass
class QueryResult:
    """Decrypted top-k plus where the time went (ms): encode, obfuscate, encrypt, http,
    server_search, decrypt, total. ``rejected`` counts results whose payload failed to verify."""

    items: list[RetrievedItem]
    timings_ms: dict[str, float]
    rejected: int = 0


@dataclass
class IndexReport:
    """What an indexing call did; ``ids`` are all requested items' ids, in input order."""

    added: int = 0
    skipped: int = 0
    ids: list[str] = field(default_factory=list)


class Flows:
    """Every client operation over an encoder and a codec (private or plain)."""

    def __init__(self, encoder: Encoder | None, codec: Any, *, batch_size: int = 32) -> None:
        self._encoder = encoder
        self.codec = codec
        self.batch_size = batch_size

    @property
    def encoder(self) -> Encoder:
        """The encoder; only re-keying and deletions work without one."""
        if self._encoder is None:
            raise ValueError("this operation needs an encoder (the client was made with encoder=None)")
        return self._encoder

    # -- collections ------------------------------------------------------------------------
    def create_collection(self, name: str) -> Flow[dict[str, Any]]:
        """Generate keys on first use, then create the server side (idempotent)."""
        tenant = (yield (TENANT, {}))["tenant"]
        self.codec.ensure(name, tenant, self.encoder.version)
        answer = yield ("/collections/create", {"name": self.codec.wire_name(name), "dim": self.encoder.dim,
                                                "key_version": self.codec.key_version(name)})
        return {**_strip(answer), "name": name}

    def list_collections(self) -> Flow[list[dict[str, Any]]]:
        """The tenant's collections, with local names where this keystore holds the keys."""
        answer = yield ("/collections/list", {})
        local = {}
        if self.codec.private:
            local = {self.codec.wire_name(n): n for n in self.codec.keystore.list_collections()}
        return [{**c, "wire_name": c["name"], "name": local.get(c["name"], c["name"])}
                for c in answer["collections"]]

    def delete_collection(self, name: str) -> Flow[bool]:
        """Delete the server side (the keys stay in the keystore)."""
        yield ("/collections/delete", {"name": self.codec.wire_name(name)})
        return True

    def count(self, name: str) -> Flow[int]:
        """Number of items stored in the collection."""
        answer = yield ("/collections/describe", {"name": self.codec.wire_name(name)})
        return int(answer["count"])

    # -- indexing ---------------------------------------------------------------------------
    def index_images(self, collection: str, images: Sequence[ImageItem | tuple | Mapping], *,
                     skip_existing: bool = True,
                     progress: Callable[[int], None] | None = None) -> Flow[IndexReport]:
        """Validate every image first, then per batch: id, skip existing, encode, project, seal, send."""
        items = [as_image_item(x) for x in images]
        for item in items:
            if not isinstance(item.caption, str):
                raise TypeError("captions must be strings")
            check_image(item.image)
        self._require(collection)
        report = IndexReport()
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            loaded = [load_image(it.image) for it in chunk]
            ids = [self.codec.item_id(collection, image_id_content(img, it.caption))
                   for img, it in zip(loaded, chunk, strict=True)]
            todo = yield from self._missing(collection, ids, skip_existing)
            if todo:
                vectors = self.encoder.encode_images([loaded[i].image for i in todo])
                payloads = [image_payload(loaded[i], chunk[i].caption, chunk[i].private) for i in todo]
                publics = [chunk[i].public for i in todo]
                yield from self._store(collection, [ids[i] for i in todo], vectors, payloads, publics)
            report.ids.extend(ids)
            report.added += len(todo)
            report.skipped += len(chunk) - len(todo)
            if progress:
                progress(len(chunk))
        return report

    def index_texts(self, collection: str, texts: Sequence[str],
                    public_metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
                    private_metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
                    skip_existing: bool = True) -> Flow[IndexReport]:
        """Index text passages; ``public_metadata`` is one dict for all or one per text."""
        texts = list(texts)
        if not all(isinstance(t, str) and t for t in texts):
            raise TypeError("texts must be non-empty strings")
        publics = _per_item(public_metadata, len(texts))
        privates = _per_item(private_metadata, len(texts))
        self._require(collection)
        report = IndexReport()
        for start in range(0, len(texts), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(texts)))
            ids = [self.codec.item_id(collection, text_id_content(texts[i])) for i in chunk]
            todo = yield from self._missing(collection, ids, skip_existing)
            if todo:
                rows = [chunk[i] for i in todo]
                vectors = self.encoder.encode_texts([texts[i] for i in rows])
                payloads = [text_payload(texts[i], privates[i]) for i in rows]
                yield from self._store(collection, [ids[i] for i in todo], vectors, payloads,
                                       [publics[i] for i in rows])
            report.ids.extend(ids)
            report.added += len(todo)
            report.skipped += len(ids) - len(todo)
        return report

    def existing_ids(self, collection: str, ids: Sequence[str]) -> Flow[list[str]]:
        """Which of ``ids`` the server already stores."""
        present: list[str] = []
        for start in range(0, len(ids), self.batch_size):
            answer = yield ("/items/exists", {"collection": self.codec.wire_name(collection),
                                              "ids": list(ids[start:start + self.batch_size])})
            present.extend(answer["present"])
        return present

    def delete_items(self, collection: str, ids: Sequence[str]) -> Flow[int]:
        """Delete items by id."""
        for start in range(0, len(ids), self.batch_size):
            yield ("/items/delete", {"collection": self.codec.wire_name(collection),
                                     "ids": list(ids[start:start + self.batch_size])})
        return len(ids)

    def _require(self, collection: str) -> None:
        if not self.codec.has(collection):
            raise NotFoundError(f"no keys for collection {collection!r}: create_collection() it first")

    def _missing(self, collection: str, ids: list[str], skip_existing: bool) -> Flow[list[int]]:
        """Indices of ``ids`` to upload: first occurrence only, minus what the server has."""
        first = list({item_id: i for i, item_id in reversed(list(enumerate(ids)))}.values())
        first.sort()
        if not skip_existing:
            return first
        present = set((yield from self.existing_ids(collection, [ids[i] for i in first])))
        return [i for i in first if ids[i] not in present]

    def _store(self, collection: str, ids: list[str], vectors: np.ndarray, payloads: list[bytes],
               publics: list[Mapping[str, Any] | None]) -> Flow[int]:
        projected = self.codec.project(collection, vectors, for_storage=True)
        wire = [{"id": item_id, "vector": encode_vector(vec), "public": dict(pub or {}),
                 "ciphertext": self.codec.seal(collection, item_id, payload)}
                for item_id, vec, payload, pub in zip(ids, projected, payloads, publics, strict=True)]
        batch: list[dict[str, Any]] = []
        size = 0
        for item in wire:
            item_size = len(item["ciphertext"]) + len(item["vector"]) + 256
            if batch and size + item_size > MAX_BATCH_BYTES:
                yield from self._send(collection, batch)
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            yield from self._send(collection, batch)
        return len(wire)

    def _send(self, collection: str, items: list[dict[str, Any]], *, staging: bool = False,
              key_version: int | None = None) -> Flow[int]:
        answer = yield ("/items/add", {"collection": self.codec.wire_name(collection), "items": items,
                                       "staging": staging,
                                       "key_version": self.codec.key_version(collection)
                                       if key_version is None else key_version})
        return int(answer["added"])

    # -- search -----------------------------------------------------------------------------
    def query(self, collection: str, encode: Callable[[], np.ndarray], k: int = 5,
              where: Mapping[str, Any] | None = None) -> Flow[QueryResult]:
        """Encode, obfuscate, send sealed, open and decrypt the top-k; records per-stage timings."""
        self._require(collection)
        t0 = time.perf_counter()
        vector = np.asarray(encode(), dtype=np.float32).reshape(-1)
        t1 = time.perf_counter()
        projected = self.codec.project(collection, vector, for_storage=False)
        t2 = time.perf_counter()
        body: dict[str, Any] = {"collection": self.codec.wire_name(collection), "k": int(k),
                                "vector": encode_vector(projected),
                                "key_version": self.codec.key_version(collection)}
        if where:
            body["where"] = dict(where)
        try:
            answer = yield ("/query", body)
        except ConflictError as e:
            raise ConflictError(f"{e}: the collection was re-keyed; finish `pmirs keys rotate` or accept "
                                "the new keys from its owner") from e
        t3 = time.perf_counter()
        items, rejected = [], 0
        for hit in answer["results"]:
            try:
                payload = self.codec.open(collection, hit["id"], hit["ciphertext"])
                items.append(parse_payload(hit["id"], float(hit["score"]), payload, hit.get("public") or {}))
            except InvalidMessage:
                rejected += 1  # tampered or swapped by the server: never shown
        t4 = time.perf_counter()
        stats = answer["_stats"]
        timings = {"encode": t1 - t0, "obfuscate": t2 - t1, "encrypt": stats.encrypt_ms / 1000,
                   "http": stats.http_ms / 1000, "server_search": float(answer.get("search_ms", 0)) / 1000,
                   "decrypt": stats.decrypt_ms / 1000 + (t4 - t3)}
        timings_ms = {key: round(v * 1000, 3) for key, v in timings.items()}
        timings_ms["total"] = round((t4 - t0) * 1000, 3)
        return QueryResult(items, timings_ms, rejected)

    # -- re-keying --------------------------------------------------------------------------
    def rotate(self, collection: str, *, page: int = 64, reencode: bool = False) -> Flow[dict[str, int]]:
        """New keys; re-project and re-seal every item into a staging version; switch atomically.

        With ``reencode`` every item is instead decrypted here and embedded again with this
        client's encoder (a new encoder version makes old vectors incomparable), then projected
        with the new key. Resumable: if an earlier run rotated the keystore but did not commit,
        the same new version is reused. Queries keep working on the old version until the commit.
        """
        if not self.codec.private:
            raise ConflictError("plain collections have no keys to rotate")
        wire = self.codec.wire_name(collection)
        info = yield ("/collections/describe", {"name": wire})
        if reencode and self.encoder.dim != info["dim"]:
            raise ConflictError(f"the collection stores {info['dim']}-d vectors but this encoder makes "
                                f"{self.encoder.dim}-d ones: index into a new collection instead")
        current = self.codec.keys(collection)
        if current.key_version == info["key_version"]:
            old, new = self.codec.keystore.rotate_collection(collection)
        elif current.key_version > info["key_version"]:
            old, new = self.codec.keys(collection, info["key_version"]), current
        else:
            raise ConflictError("the server has a newer key version than this keystore; accept the new keys")
        yield ("/collections/rotate/begin", {"name": wire, "key_version": new.key_version})
        offset, moved = 0, 0
        while True:
            listed = yield ("/items/list", {"collection": wire, "offset": offset, "limit": page})
            if not listed["ids"]:
                break
            got = yield ("/items/get", {"collection": wire, "ids": listed["ids"]})
            if reencode:
                moved_vectors = self._reencode(old, new, got["items"])
            else:
                vectors = np.stack([decode_vector(it["vector"]) for it in got["items"]])
                moved_vectors = self.codec.reproject(old, new, vectors)
            batch = [{"id": it["id"], "vector": encode_vector(vec), "public": it["public"],
                      "ciphertext": self.codec.reseal(old, new, it["id"], it["ciphertext"])}
                     for it, vec in zip(got["items"], moved_vectors, strict=True)]
            moved += yield from self._send(collection, batch, staging=True, key_version=new.key_version)
            offset += len(listed["ids"])
        yield ("/collections/rotate/commit", {"name": wire})
        self.codec.keystore.drop_version(collection, old.key_version)
        if reencode:
            self.codec.keystore.set_encoder_version(collection, self.encoder.version)
        return {"moved": moved, "old_version": old.key_version, "new_version": new.key_version}

    def _reencode(self, old: Any, new: Any, items: list[dict[str, Any]]) -> np.ndarray:
        """Decrypt stored payloads with the old keys and embed their content with this encoder."""
        from middleware.item_crypto import open_item
        from pmirs.protocol.encoding import b64url_decode

        parsed = [parse_payload(it["id"], 0.0, open_item(old, it["id"], b64url_decode(it["ciphertext"])), {})
                  for it in items]
        vectors = np.zeros((len(parsed), self.encoder.dim), dtype=np.float32)
        images = [i for i, p in enumerate(parsed) if p.kind == "image"]
        texts = [i for i, p in enumerate(parsed) if p.kind != "image"]
        if images:
            vectors[images] = self.encoder.encode_images([load_image(parsed[i].image_bytes).image for i in images])
        if texts:
            vectors[texts] = self.encoder.encode_texts([parsed[i].text or "" for i in texts])
        return self.codec.projection(new, vectors.shape[1]).project(vectors, for_storage=True)


def _strip(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "_stats"}


def _per_item(value: Any, n: int) -> list[Any]:
    if value is None or isinstance(value, Mapping):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"expected {n} metadata entries, got {len(values)}")
    return values
