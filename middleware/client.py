"""The trusted-side client: private indexing and search against an untrusted retriever.

Example::

    from middleware.client import PrivacyMiddleware
    from middleware.encoder import create_encoder
    from middleware.keystore import Keystore

    keystore = Keystore.open("alice.keys", passphrase)
    with PrivacyMiddleware("http://127.0.0.1:8400", keystore, create_encoder("lite")) as pm:
        pm.create_collection("holiday")
        pm.index_images("holiday", [("beach.jpg", "a photo of a beach", {"year": 2024})])
        result = pm.query_text("holiday", "sunset at the sea", k=5)
        for item in result.items:
            print(item.score, item.caption)          # decrypted on this side only
        print(result.timings_ms)                     # encode / obfuscate / encrypt / http / ...

The server sees opaque collection names, keyed item ids, obfuscated vectors, ciphertexts and
the metadata fields passed as public. ``private=False`` switches all of that off and talks to
the benchmark-only ``/v1/plain`` routes; it exists to measure the cost of privacy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np

from middleware.codecs import PlainCodec, PrivateCodec
from middleware.encoder.base import Encoder
from middleware.flows import TENANT, Flow, Flows, IndexReport, QueryResult
from middleware.keystore import Keystore
from middleware.payloads import ImageInput, ImageItem, RetrievedItem, check_image, load_image
from middleware.transport import (
    AsyncPlainChannel,
    AsyncSealedChannel,
    ClientIdentity,
    PlainChannel,
    SealedChannel,
)
from pmirs.errors import AuthenticationError, PMIRSError
from pmirs.protocol.suites import DEFAULT_SUITE

__all__ = ["AsyncPrivacyMiddleware", "IndexReport", "PrivacyMiddleware", "QueryResult", "RetrievedItem"]
T = TypeVar("T")


def _identity(server_url: str, keystore: Keystore) -> ClientIdentity:
    url = server_url.rstrip("/")
    fingerprint = keystore.server_fingerprint(url) or keystore.server_fingerprint(url + "/")
    if fingerprint is None:
        raise AuthenticationError(f"no pinned fingerprint for {server_url}: run `pmirs keys pin {server_url} "
                                  "FINGERPRINT` (the operator prints it when the server starts)")
    return ClientIdentity(keystore.user_id, keystore.identity_private_key, fingerprint)


def _image_encoder(flows: Flows, image: ImageInput) -> Callable[[], np.ndarray]:
    check_image(image)  # fail before anything is sent
    return lambda: flows.encoder.encode_images([load_image(image).image])[0]


def _text_encoder(flows: Flows, text: str) -> Callable[[], np.ndarray]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the query text must be a non-empty string")
    return lambda: flows.encoder.encode_texts([text])[0]


class _Base:
    def __init__(self, encoder: Encoder | None, keystore: Keystore | None, *, private: bool, n_blocks: int,
                 noise: float, batch_size: int) -> None:
        if private and keystore is None:
            raise ValueError("a keystore is required unless private=False")
        codec = PrivateCodec(keystore, n_blocks=n_blocks, noise=noise) if private else PlainCodec()
        self.encoder = encoder
        self.keystore = keystore
        self.private = private
        self._flows = Flows(encoder, codec, batch_size=batch_size)


class PrivacyMiddleware(_Base):
    """Blocking client; owns the encoder, the keystore and one session (handshaked lazily).

    Args:
        server_url: the retriever, e.g. ``http://127.0.0.1:8400``; its fingerprint must be pinned
            in the keystore (``pmirs keys pin``).
        keystore: the user's opened :class:`Keystore` (identity and collection keys).
        encoder: the :class:`Encoder` that embeds texts and images.
        suite: wire cipher suite (see ``pmirs.protocol.suites.SUITES``).
        timeout: HTTP timeout in seconds.
        private: False = benchmark baseline without obfuscation or encryption (``/v1/plain``).
        n_blocks, noise: :class:`BlockProjection` parameters (noise only on stored vectors).
        batch_size: items per encode/upload batch.
    """

    def __init__(self, server_url: str, keystore: Keystore | None, encoder: Encoder | None, *,
                 suite: str = DEFAULT_SUITE, timeout: float = 30.0, private: bool = True, n_blocks: int = 4,
                 noise: float = 0.0, batch_size: int = 32, http: httpx.Client | None = None,
                 _session_options: dict[str, Any] | None = None) -> None:
        super().__init__(encoder, keystore, private=private, n_blocks=n_blocks, noise=noise,
                         batch_size=batch_size)
        if private:
            self._channel: Any = SealedChannel(server_url, _identity(server_url, keystore), suite=suite,
                                               timeout=timeout, http=http, session_options=_session_options)
        else:
            self._channel = PlainChannel(server_url, timeout=timeout, http=http)

    def __enter__(self) -> PrivacyMiddleware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections (the session is simply forgotten)."""
        self._channel.close()

    def _run(self, flow: Flow[T]) -> T:
        """Drive a flow: answer its requests over the channel, throw errors back into it."""
        try:
            request = next(flow)
            while True:
                path, body = request
                try:
                    if path == TENANT:
                        if self.private and self._channel.session is None:
                            self._channel.handshake()
                        answer = {"tenant": self._channel.tenant}
                    else:
                        answer, stats = self._channel.call_timed(path, body)
                        answer["_stats"] = stats
                except PMIRSError as e:
                    request = flow.throw(e)
                    continue
                request = flow.send(answer)
        except StopIteration as stop:
            return stop.value

    def create_collection(self, name: str) -> dict[str, Any]:
        """Create keys (first time) and the server collection; returns its description."""
        return self._run(self._flows.create_collection(name))

    def list_collections(self) -> list[dict[str, Any]]:
        """The tenant's collections: name (local if known), wire_name, dim, count, key_version."""
        return self._run(self._flows.list_collections())

    def delete_collection(self, name: str) -> bool:
        """Delete the collection on the server."""
        return self._run(self._flows.delete_collection(name))

    def count(self, collection: str) -> int:
        """Items stored in the collection."""
        return self._run(self._flows.count(collection))

    def index_images(self, collection: str, images: Sequence[ImageItem | tuple | Mapping], *,
                     skip_existing: bool = True,
                     progress: Callable[[int], None] | None = None) -> IndexReport:
        """Index ``(image, caption, public_metadata)`` items (image: PIL image, path or bytes).

        Raises ``InvalidImageError`` before sending anything if any input is not a readable image.
        """
        return self._run(self._flows.index_images(collection, images, skip_existing=skip_existing,
                                                  progress=progress))

    def index_texts(self, collection: str, texts: Sequence[str], public_metadata: Any = None,
                    private_metadata: Any = None, *, skip_existing: bool = True) -> IndexReport:
        """Index text passages (metadata: one dict for all, or one per text)."""
        return self._run(self._flows.index_texts(collection, texts, public_metadata, private_metadata,
                                                 skip_existing=skip_existing))

    def existing_ids(self, collection: str, ids: Sequence[str]) -> list[str]:
        """Which ids the server already stores."""
        return self._run(self._flows.existing_ids(collection, ids))

    def delete_items(self, collection: str, ids: Sequence[str]) -> int:
        """Delete items by id."""
        return self._run(self._flows.delete_items(collection, ids))

    def query_text(self, collection: str, text: str, k: int = 5,
                   where: Mapping[str, Any] | None = None) -> QueryResult:
        """Top-k items for a text query (``where`` filters on public metadata only)."""
        return self._run(self._flows.query(collection, _text_encoder(self._flows, text), k, where))

    def query_image(self, collection: str, image: ImageInput, k: int = 5,
                    where: Mapping[str, Any] | None = None) -> QueryResult:
        """Top-k items for an image query."""
        return self._run(self._flows.query(collection, _image_encoder(self._flows, image), k, where))

    def rotate_collection(self, collection: str) -> dict[str, int]:
        """Re-key the collection (new projection and data keys) with no query downtime."""
        return self._run(self._flows.rotate(collection))

    def reindex_collection(self, collection: str) -> dict[str, int]:
        """Re-embed every item with this client's encoder (new keys too), with no query downtime."""
        return self._run(self._flows.rotate(collection, reencode=True))


def _step(flow: Flow[Any], value: Any = None, error: BaseException | None = None) -> tuple[bool, Any]:
    """One generator step that never lets StopIteration escape (it cannot cross a Future)."""
    try:
        if error is not None:
            return False, flow.throw(error)
        return False, flow.send(value)
    except StopIteration as stop:
        return True, stop.value


class AsyncPrivacyMiddleware(_Base):
    """The same client over ``httpx.AsyncClient``; CPU work runs in a worker thread."""

    def __init__(self, server_url: str, keystore: Keystore | None, encoder: Encoder | None, *,
                 suite: str = DEFAULT_SUITE, timeout: float = 30.0, private: bool = True, n_blocks: int = 4,
                 noise: float = 0.0, batch_size: int = 32, http: httpx.AsyncClient | None = None,
                 _session_options: dict[str, Any] | None = None) -> None:
        super().__init__(encoder, keystore, private=private, n_blocks=n_blocks, noise=noise,
                         batch_size=batch_size)
        if private:
            self._channel: Any = AsyncSealedChannel(server_url, _identity(server_url, keystore), suite=suite,
                                                    timeout=timeout, http=http,
                                                    session_options=_session_options)
        else:
            self._channel = AsyncPlainChannel(server_url, timeout=timeout, http=http)

    async def __aenter__(self) -> AsyncPrivacyMiddleware:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._channel.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        done, request = await asyncio.to_thread(_step, flow)
        while not done:
            path, body = request
            try:
                if path == TENANT:
                    if self.private and self._channel.session is None:
                        await self._channel.handshake()
                    answer = {"tenant": self._channel.tenant}
                else:
                    answer, stats = await self._channel.call_timed(path, body)
                    answer["_stats"] = stats
            except PMIRSError as e:
                done, request = await asyncio.to_thread(_step, flow, None, e)
                continue
            done, request = await asyncio.to_thread(_step, flow, answer)
        return request

    async def create_collection(self, name: str) -> dict[str, Any]:
        """Async :meth:`PrivacyMiddleware.create_collection`."""
        return await self._run(self._flows.create_collection(name))

    async def list_collections(self) -> list[dict[str, Any]]:
        """Async :meth:`PrivacyMiddleware.list_collections`."""
        return await self._run(self._flows.list_collections())

    async def delete_collection(self, name: str) -> bool:
        """Async :meth:`PrivacyMiddleware.delete_collection`."""
        return await self._run(self._flows.delete_collection(name))

    async def count(self, collection: str) -> int:
        """Async :meth:`PrivacyMiddleware.count`."""
        return await self._run(self._flows.count(collection))

    async def index_images(self, collection: str, images: Sequence[ImageItem | tuple | Mapping], *,
                           skip_existing: bool = True,
                           progress: Callable[[int], None] | None = None) -> IndexReport:
        """Async :meth:`PrivacyMiddleware.index_images`."""
        return await self._run(self._flows.index_images(collection, images, skip_existing=skip_existing,
                                                        progress=progress))

    async def index_texts(self, collection: str, texts: Sequence[str], public_metadata: Any = None,
                          private_metadata: Any = None, *, skip_existing: bool = True) -> IndexReport:
        """Async :meth:`PrivacyMiddleware.index_texts`."""
        return await self._run(self._flows.index_texts(collection, texts, public_metadata, private_metadata,
                                                       skip_existing=skip_existing))

    async def existing_ids(self, collection: str, ids: Sequence[str]) -> list[str]:
        """Async :meth:`PrivacyMiddleware.existing_ids`."""
        return await self._run(self._flows.existing_ids(collection, ids))

    async def delete_items(self, collection: str, ids: Sequence[str]) -> int:
        """Async :meth:`PrivacyMiddleware.delete_items`."""
        return await self._run(self._flows.delete_items(collection, ids))

    async def query_text(self, collection: str, text: str, k: int = 5,
                         where: Mapping[str, Any] | None = None) -> QueryResult:
        """Async :meth:`PrivacyMiddleware.query_text`."""
        return await self._run(self._flows.query(collection, _text_encoder(self._flows, text), k, where))

    async def query_image(self, collection: str, image: ImageInput, k: int = 5,
                          where: Mapping[str, Any] | None = None) -> QueryResult:
        """Async :meth:`PrivacyMiddleware.query_image`."""
        return await self._run(self._flows.query(collection, _image_encoder(self._flows, image), k, where))

    async def rotate_collection(self, collection: str) -> dict[str, int]:
        """Async :meth:`PrivacyMiddleware.rotate_collection`."""
        return await self._run(self._flows.rotate(collection))

    async def reindex_collection(self, collection: str) -> dict[str, int]:
        """Async :meth:`PrivacyMiddleware.reindex_collection`."""
        return await self._run(self._flows.rotate(collection, reencode=True))
