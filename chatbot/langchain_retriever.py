"""A LangChain retriever over a private PMIRS collection: the server never sees queries or content.

Every query goes through :meth:`PMIRSRetriever._call` (one path to the middleware, awaited or
not); :func:`to_document` turns each decrypted item into a ``Document``:

* ``page_content``: the caption of an image item, the passage of a text item;
* ``id`` and ``metadata["id"]``: the item's keyed id; ``metadata["score"]``: its cosine score;
  ``metadata["kind"]``: ``"image"`` or ``"text"``; ``metadata["collection"]``;
* ``metadata["public"]``: the public metadata (what ``where`` filters on; the server saw it);
  ``metadata["private"]``: the private metadata, decrypted on this side only;
* image items: ``metadata["image_url"]``, the picture as a ``data:image/jpeg;base64,...`` URL.

Image queries: the retriever's input is a string, so a photo is passed as a ``data:image/...``
URL (make one with :func:`image_query` from a path, bytes or PIL image). Any other string is a
text query. This keeps ``invoke``, ``batch`` and LCEL chains working unchanged for photos.

See :class:`PMIRSRetriever` for a runnable tour.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.runnables.config import run_in_executor
from PIL import Image
from pydantic import ConfigDict, Field, model_validator

from chatbot.assistant import COLLECTION_SYSTEM_PROMPT
from chatbot.grounding import ContextItem, format_item

_DATA_URL_PREFIX = "data:image/"


def image_query(image: str | os.PathLike[str] | bytes | Image.Image) -> str:
    """A photo (path, encoded bytes or PIL image) as the ``data:`` URL query that searches by image."""
    if isinstance(image, Image.Image):
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=95)
        data = out.getvalue()
    elif isinstance(image, bytes):
        data = image
    elif isinstance(image, str | os.PathLike):
        data = Path(image).read_bytes()
    else:
        raise TypeError(f"image must be a path, bytes or PIL image, not {type(image).__name__}")
    return data_url(data)


def data_url(data: bytes) -> str:
    """``data:image/png|jpeg;base64,...`` for encoded image bytes (PNG recognised by its magic)."""
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def parse_query(query: str) -> tuple[str, str | bytes]:
    """``("image", bytes)`` for a ``data:image/...;base64,`` query, else ``("text", query)``."""
    if not isinstance(query, str):
        raise TypeError(f"a retriever query must be a str (use image_query() for photos), not {type(query).__name__}")
    if query.startswith(_DATA_URL_PREFIX):
        header, _, payload = query.partition(",")
        if not header.endswith(";base64") or not payload:
            raise ValueError("an image query must be a base64 data URL (use image_query())")
        try:
            return "image", base64.b64decode(payload, validate=True)
        except ValueError as e:
            raise ValueError(f"the image query's base64 is invalid: {e}") from e
    return "text", query


def to_document(item: Any, collection: str) -> Document:
    """A decrypted ``RetrievedItem`` as a LangChain ``Document`` (see the module doc for the fields)."""
    metadata: dict[str, Any] = {
        "id": item.id,
        "score": float(item.score),
        "kind": item.kind,
        "collection": collection,
        "public": dict(item.public or {}),
        "private": dict(item.metadata or {}),
    }
    if item.kind == "image" and item.image_bytes:
        metadata["image_url"] = data_url(item.image_bytes)
    content = (item.caption or "") if item.kind == "image" else (item.text or "")
    return Document(id=item.id, page_content=content, metadata=metadata)


def format_docs(docs: Sequence[Document]) -> str:
    """Numbered context lines for a prompt, as the grounded chat writes them (``[1] image: … (relevance 0.71)``)."""
    lines = []
    for n, doc in enumerate(docs, 1):
        kind = "image" if doc.metadata.get("kind") == "image" else "text"
        item = ContextItem(str(doc.metadata.get("id", doc.id or n)), kind, caption=doc.page_content,
                           text=doc.page_content, score=float(doc.metadata.get("score", 0.0)))
        lines.append(format_item(n, item) if kind == "image" else f"[{n}] text: {doc.page_content}")
    return "\n".join(lines) if lines else "(no items found)"


def rag_prompt(system_prompt: str = COLLECTION_SYSTEM_PROMPT) -> ChatPromptTemplate:
    """The grounded-answer prompt with ``{context}`` (from :func:`format_docs`) and ``{question}``."""
    return ChatPromptTemplate.from_messages(
        [("system", system_prompt), ("human", "Context:\n{context}\n\nQuestion: {question}")]
    )


def create_rag_chain(retriever: BaseRetriever, model: Runnable, prompt: ChatPromptTemplate | None = None) -> Runnable:
    """``{context: retriever | format_docs, question} | prompt | model | StrOutputParser()``.

    Unlike :class:`chatbot.assistant.Assistant` it applies no relevance threshold: the model sees
    whatever the retriever returns.
    """
    return (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | (prompt or rag_prompt())
        | model
        | StrOutputParser()
    )


class PMIRSRetriever(BaseRetriever):
    """Top-k private search of one PMIRS collection as a LangChain retriever.

    Give ``middleware`` (a ``PrivacyMiddleware``) for ``invoke``/``batch``, ``async_middleware``
    (an ``AsyncPrivacyMiddleware``) for native ``ainvoke``/``abatch``, or both (what
    :meth:`from_keystore` builds). With only the blocking one, ``ainvoke`` runs it in a thread.
    The retriever does not own middlewares passed in; :meth:`close` / :meth:`aclose` close those
    it built.

    Runnable tour::

        from chatbot.langchain_retriever import PMIRSRetriever, create_rag_chain, image_query

        # set up: keystore (pinned to the server) + lite encoder, blocking and async connections
        retriever = PMIRSRetriever.from_keystore("http://127.0.0.1:8400", "alice.keys", passphrase,
                                                 collection="photos", k=4)
        # or: PMIRSRetriever(middleware=pm, collection="photos", k=4, where={"album": "2024"})

        # search: the server sees an obfuscated, sealed query and returns ciphertexts
        docs = retriever.invoke("a dog playing on the beach")
        docs[0].page_content, docs[0].metadata["score"], docs[0].metadata["image_url"][:30]
        docs = retriever.invoke(image_query("query.jpg"))              # by photo
        docs = await retriever.ainvoke("a red sports car")             # native async
        many = retriever.batch(["a cat", "a bus"])
        narrow = retriever.with_options(k=2, where={"label": "tabby"})  # public-metadata filter

        # use as a retriever in an LCEL chain with the local model
        from chatbot.chat_model import LocalChatModel
        from chatbot.llm import LLMSettings, LocalLLM
        chain = create_rag_chain(retriever, LocalChatModel(llm=LocalLLM(LLMSettings())))
        print(chain.invoke("Do I have a photo of a sports car?"))      # answer citing [n]
        await retriever.aclose()
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    middleware: Any = Field(default=None, exclude=True)  # PrivacyMiddleware for the blocking calls
    async_middleware: Any = Field(default=None, exclude=True)  # AsyncPrivacyMiddleware for the async calls
    collection: str  # the local collection name (keys in the middleware's keystore)
    k: int = Field(default=4, ge=1)  # number of documents returned
    where: dict[str, Any] | None = None  # filter on PUBLIC metadata only (the server applies it)
    owns_middleware: bool = Field(default=False, exclude=True)  # close() closes the middlewares

    @model_validator(mode="after")
    def _needs_a_middleware(self) -> PMIRSRetriever:
        if self.middleware is None and self.async_middleware is None:
            raise ValueError("give middleware (PrivacyMiddleware) and/or async_middleware (AsyncPrivacyMiddleware)")
        return self

    @classmethod
    def from_keystore(cls, server_url: str, keystore_path: str | os.PathLike[str], passphrase: str,
                      collection: str, *, k: int = 4, where: Mapping[str, Any] | None = None,
                      encoder: str = "lite", **middleware_options: Any) -> PMIRSRetriever:
        """Open the keystore, load the encoder, connect (sync and async) to ``server_url``.

        The server's fingerprint must already be pinned in the keystore (``pmirs keys init
        --server`` or ``pmirs keys pin``). ``middleware_options`` go to both middlewares.
        """
        from middleware.client import AsyncPrivacyMiddleware, PrivacyMiddleware
        from middleware.encoder import create_encoder
        from middleware.keystore import Keystore

        keystore = Keystore.open(keystore_path, passphrase)
        enc = create_encoder(encoder)
        return cls(middleware=PrivacyMiddleware(server_url, keystore, enc, **middleware_options),
                   async_middleware=AsyncPrivacyMiddleware(server_url, keystore, enc, **middleware_options),
                   collection=collection, k=k, where=dict(where) if where else None, owns_middleware=True)

    def with_options(self, **changes: Any) -> PMIRSRetriever:
        """A copy sharing the connections with some fields changed (e.g. ``k=2``, ``where={...}``)."""
        return self.model_copy(update={**changes, "owns_middleware": False})

    def close(self) -> None:
        """Close the blocking connection if this retriever built it (use :meth:`aclose` for both)."""
        if self.owns_middleware and self.middleware is not None:
            self.middleware.close()

    async def aclose(self) -> None:
        """Close both connections if this retriever built them."""
        self.close()
        if self.owns_middleware and self.async_middleware is not None:
            await self.async_middleware.aclose()

    # --- the one path to the store -------------------------------------------------------------------

    def _call(self, client: Any, query: str) -> Any:
        """The middleware call (a QueryResult, or an awaitable of one) for a query string."""
        kind, value = parse_query(query)
        search = client.query_image if kind == "image" else client.query_text
        return search(self.collection, value, k=self.k, where=self.where)

    def _search(self, query: str) -> list[Document]:
        if self.middleware is None:
            raise TypeError("this PMIRSRetriever has only an async middleware: use ainvoke/abatch")
        result = self._call(self.middleware, query)
        return [to_document(item, self.collection) for item in result.items]

    async def _asearch(self, query: str) -> list[Document]:
        if self.async_middleware is None:
            return await run_in_executor(None, self._search, query)
        result = await self._call(self.async_middleware, query)
        return [to_document(item, self.collection) for item in result.items]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._search(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await self._asearch(query)
