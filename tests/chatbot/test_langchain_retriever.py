"""PMIRSRetriever against a real retriever service: invoke/ainvoke/batch, image queries, k, where, LCEL.

LangChain's standard conformance suite (``langchain_tests.integration_tests.RetrieversIntegrationTests``)
lives in the ``langchain-tests`` package, which is not installed; these tests cover the same
contract (k respected, Documents returned, invoke == ainvoke) against a live service.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chat_harness import PASSPHRASE, demo_photo, make_keystore
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from pydantic import ValidationError

from chatbot.chat_model import LocalChatModel
from chatbot.langchain_retriever import (
    PMIRSRetriever,
    create_rag_chain,
    format_docs,
    image_query,
    parse_query,
    rag_prompt,
)
from middleware.client import AsyncPrivacyMiddleware, PrivacyMiddleware
from retriever.testing import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.service]
PHOTOS = ("sports_car", "koala", "teddy", "pizza", "school_bus", "espresso")
NOTES = ["The spare house key is under the blue flower pot.", "Grandma's birthday is on the 12th of May."]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, lite_encoder: Any) -> Iterator[dict[str, Any]]:
    """One service, one indexed collection: six demo photos (public domain tag) and two notes."""
    tmp = tmp_path_factory.mktemp("lc")
    with ServiceProcess(tmp / "data") as service:
        keystore = make_keystore(tmp, "alice", service)
        with PrivacyMiddleware(service.url, keystore, lite_encoder) as pm:
            pm.create_collection("photos")
            pm.index_images("photos", [(demo_photo(label), f"a photo of a {label.replace('_', ' ')}",
                                        {"domain": demo_photo(label).parts[-3]}) for label in PHOTOS])
            pm.index_texts("photos", NOTES, public_metadata={"domain": "notes"})
            yield {"service": service, "keystore": keystore, "pm": pm, "encoder": lite_encoder}


@pytest.fixture
def retriever(env: dict[str, Any]) -> PMIRSRetriever:
    return PMIRSRetriever(middleware=env["pm"], collection="photos", k=3)


def test_invoke_returns_documents_with_ids_scores_and_image_urls(retriever: PMIRSRetriever) -> None:
    docs = retriever.invoke("a photo of a sports car")
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.page_content == "a photo of a sports car"
    assert top.metadata["kind"] == "image" and top.metadata["collection"] == "photos"
    assert top.id == top.metadata["id"] and len(top.metadata["id"]) > 10
    assert top.metadata["public"] == {"domain": "vehicles"}
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5
    header, _, payload = top.metadata["image_url"].partition(",")
    assert header == "data:image/jpeg;base64"
    assert base64.b64decode(payload) == demo_photo("sports_car").read_bytes()  # decrypted original bytes


def test_k_and_where_are_respected(retriever: PMIRSRetriever) -> None:
    assert len(retriever.with_options(k=1).invoke("a koala")) == 1
    notes = retriever.with_options(k=5, where={"domain": "notes"}).invoke("where is the house key?")
    assert len(notes) == 2
    assert {d.metadata["kind"] for d in notes} == {"text"}
    assert notes[0].page_content == NOTES[0] and "image_url" not in notes[0].metadata
    food = retriever.with_options(where={"domain": "food"}).invoke("a photo of a koala")
    assert {d.page_content for d in food} == {"a photo of a pizza", "a photo of a espresso"}


def test_image_query_by_data_url(retriever: PMIRSRetriever) -> None:
    docs = retriever.invoke(image_query(demo_photo("koala")))
    assert docs[0].page_content == "a photo of a koala"
    assert docs[0].metadata["score"] == pytest.approx(1.0, abs=1e-3)


def test_batch(retriever: PMIRSRetriever) -> None:
    results = retriever.batch(["a teddy bear", "a yellow school bus", image_query(demo_photo("pizza"))])
    assert [r[0].page_content for r in results] == ["a photo of a teddy", "a photo of a school bus",
                                                    "a photo of a pizza"]


async def test_ainvoke_native_async_matches_invoke(env: dict[str, Any], retriever: PMIRSRetriever) -> None:
    async with AsyncPrivacyMiddleware(env["service"].url, env["keystore"], env["encoder"]) as apm:
        native = PMIRSRetriever(async_middleware=apm, collection="photos", k=3)
        docs = await native.ainvoke("a photo of a teddy bear")
        both = await native.abatch(["a pizza", image_query(demo_photo("espresso"))])
        with pytest.raises(TypeError, match="async"):
            native.invoke("a pizza")  # no blocking middleware to use
    expected = retriever.invoke("a photo of a teddy bear")
    assert [d.id for d in docs] == [d.id for d in expected]
    assert [d.metadata["score"] for d in docs] == pytest.approx([d.metadata["score"] for d in expected], abs=1e-4)
    assert [r[0].page_content for r in both] == ["a photo of a pizza", "a photo of a espresso"]


async def test_ainvoke_with_only_a_blocking_middleware(retriever: PMIRSRetriever) -> None:
    docs = await retriever.ainvoke("a photo of a koala")
    assert docs[0].page_content == "a photo of a koala"


def test_needs_a_middleware_and_valid_queries(retriever: PMIRSRetriever) -> None:
    with pytest.raises(ValidationError, match="middleware"):
        PMIRSRetriever(collection="photos")
    with pytest.raises(ValidationError):
        PMIRSRetriever(middleware=object(), collection="photos", k=0)
    assert parse_query("data:text/plain,hello") == ("text", "data:text/plain,hello")
    with pytest.raises(ValueError, match="base64"):
        retriever.invoke("data:image/jpeg;base64,!!not base64!!")


def test_format_docs_numbers_items() -> None:
    docs = [Document(page_content="a photo of a koala", metadata={"id": "a", "kind": "image", "score": 0.81}),
            Document(page_content="The key is under the pot.", metadata={"id": "b", "kind": "text", "score": 0.4})]
    assert format_docs(docs) == ("[1] image: a photo of a koala (relevance 0.81)\n"
                                 "[2] text: The key is under the pot.")
    assert format_docs([]) == "(no items found)"


def test_lcel_chain_with_local_chat_model(retriever: PMIRSRetriever, small_llm: Any) -> None:
    seen: list[Any] = []

    def record(prompt_value: Any) -> Any:
        seen.append(prompt_value)
        return prompt_value

    model = LocalChatModel(llm=small_llm, max_tokens=24)
    chain = (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | rag_prompt()
        | RunnableLambda(record)
        | model
        | StrOutputParser()
    )
    answer = chain.invoke("Do I have a photo of a pizza?")
    assert isinstance(answer, str) and answer.strip()
    messages = seen[0].to_messages()
    assert messages[0].type == "system" and "square brackets" in messages[0].content
    assert "[1] image: a photo of a pizza (relevance" in messages[1].content  # retrieved, decrypted, formatted
    assert "Question: Do I have a photo of a pizza?" in messages[1].content
    again = create_rag_chain(retriever, model).invoke("Do I have a photo of a pizza?")
    assert again == answer  # greedy decoding: the packaged chain is the same pipeline


def test_from_keystore_builds_both_middlewares(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import middleware.encoder

    monkeypatch.setattr(middleware.encoder, "create_encoder", lambda spec: env["encoder"])
    r = PMIRSRetriever.from_keystore(env["service"].url, Path(env["keystore"].path), PASSPHRASE, "photos", k=2)
    try:
        assert isinstance(r.middleware, PrivacyMiddleware) and isinstance(r.async_middleware, AsyncPrivacyMiddleware)
        assert [d.page_content for d in r.invoke("a photo of a koala")][0] == "a photo of a koala"
    finally:
        r.close()
