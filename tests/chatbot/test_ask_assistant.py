"""The Assistant pipeline with a fake middleware and model: condensing, merging, thresholds, memory, async."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from chatbot.assistant import Assistant, AssistantReply, context_item
from chatbot.grounding import NOT_FOUND_ANSWER, GroundedChat
from middleware.flows import QueryResult
from middleware.payloads import RetrievedItem

STAGES = {"encode": 2.0, "obfuscate": 0.1, "encrypt": 0.1, "http": 3.0, "server_search": 1.0, "decrypt": 0.2,
          "total": 6.4}


class FakeLLM:
    """Replies with a fixed text, one word at a time; records the messages it was given."""

    n_ctx = 2048
    max_tokens = 32

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[list[dict[str, str]]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages: Sequence[dict[str, str]]) -> str:
        return "".join(self.stream(messages))

    def stream(self, messages: Sequence[dict[str, str]]) -> Iterator[str]:
        self.calls.append(list(messages))
        for i, word in enumerate(self.reply.split()):
            yield word if i == 0 else " " + word


class FakeMiddleware:
    """query_text/query_image over fixed items per collection; records each call."""

    def __init__(self, items: dict[str, list[RetrievedItem]]) -> None:
        self.items = items
        self.calls: list[tuple[str, str, Any, int, Any]] = []

    def _result(self, method: str, collection: str, query: Any, k: int, where: Any) -> QueryResult:
        self.calls.append((method, collection, query, k, where))
        return QueryResult(list(self.items[collection])[:k], dict(STAGES))

    def query_text(self, collection: str, text: str, k: int = 5, where: Any = None) -> QueryResult:
        return self._result("text", collection, text, k, where)

    def query_image(self, collection: str, image: Any, k: int = 5, where: Any = None) -> QueryResult:
        return self._result("image", collection, image, k, where)


class AsyncFakeMiddleware(FakeMiddleware):
    async def query_text(self, collection: str, text: str, k: int = 5, where: Any = None) -> QueryResult:
        return self._result("text", collection, text, k, where)

    async def query_image(self, collection: str, image: Any, k: int = 5, where: Any = None) -> QueryResult:
        return self._result("image", collection, image, k, where)


BIKE = RetrievedItem("img-bike", 0.74, "image", caption="a photo of a red bicycle", image_bytes=b"\xff\xd8jpeg")
CAT = RetrievedItem("img-cat", 0.41, "image", caption="a photo of a tabby cat")
NOTE = RetrievedItem("doc-bike", 0.66, "text", text="The red bicycle cost 450 euros.", metadata={"year": 2023})
WEAK = RetrievedItem("img-weak", 0.12, "image", caption="a photo of a barn")


def make(reply: str = "The red bicycle cost 450 euros [1].", **items: list[RetrievedItem]) -> tuple[Assistant, Any]:
    llm = FakeLLM(reply)
    mw = FakeMiddleware(items or {"photos": [BIKE, CAT], "notes": [NOTE]})
    return Assistant(mw, list(items or ["photos", "notes"]), GroundedChat(llm, threshold=0.35), k=2), llm


def test_merges_collections_by_score_and_cites_with_timings() -> None:
    bot, llm = make()
    reply = bot.ask("How much did the red bicycle cost?")
    assert [(it.id, it.collection) for it in reply.retrieved] == [("img-bike", "photos"), ("doc-bike", "notes")]
    assert reply.used_llm and reply.answer == "The red bicycle cost 450 euros [1]."
    assert [it.id for it in reply.items] == ["img-bike"] and reply.items[0].image_bytes == b"\xff\xd8jpeg"
    assert "[1] image: a photo of a red bicycle (relevance 0.74)" in llm.calls[0][-1]["content"]
    assert "[2] text: The red bicycle cost 450 euros." in llm.calls[0][-1]["content"]
    t = reply.timings_ms
    assert t["retrieval_total"] == pytest.approx(12.8) and t["retrieval_encode"] == pytest.approx(4.0)
    assert {"ttft", "llm_total", "total"} <= set(t) and t["total"] >= t["llm_total"] >= t["ttft"]


def test_below_threshold_gives_fixed_answer_without_the_model() -> None:
    bot, llm = make(photos=[WEAK])
    reply = bot.ask("Where is my passport?")
    assert reply.answer == NOT_FOUND_ANSWER and not reply.used_llm and reply.items == []
    assert llm.calls == [] and [it.id for it in reply.retrieved] == ["img-weak"]


def test_follow_up_is_condensed_and_history_replayed() -> None:
    bot, llm = make()
    bot.ask("Do I have photos of my red bicycle?")
    reply = bot.ask("and how much was it?")
    assert reply.query == "red bicycle and how much was it?"
    assert bot.middleware.calls[-1][2] == "red bicycle and how much was it?"
    assert llm.calls[-1][1] == {"role": "user", "content": "Do I have photos of my red bicycle?"}
    bot.ask("Do I have any photos of my tabby cat?")  # stand-alone: earlier turns are not replayed to the model
    assert all(m["role"] != "assistant" for m in llm.calls[-1])
    bot.reset()
    assert bot.ask("and how much was it?").query == "and how much was it?"


def test_photo_question_searches_by_image_and_follow_up_uses_its_match() -> None:
    bot, llm = make()
    reply = bot.ask(image=b"photo bytes")
    assert bot.middleware.calls[0][:3] == ("image", "photos", b"photo bytes") and reply.query == ""
    assert "Question: What is this? (The user sent a photo" in llm.calls[0][-1]["content"]
    assert bot.ask("how much is it?").query == "a photo of a red bicycle how much is it?"


def test_stream_yields_pieces_then_the_reply() -> None:
    bot, _ = make(reply="A red bicycle [1].")
    parts = list(bot.stream("Do I have a red bicycle?"))
    assert parts[:-1] == ["A", " red", " bicycle", " [1]."] and isinstance(parts[-1], AssistantReply)


def test_where_and_image_where_reach_the_middleware() -> None:
    mw = FakeMiddleware({"shop": [BIKE]})
    bot = Assistant(mw, "shop", GroundedChat(FakeLLM("ok"), threshold=0.35), where={"type": "any"},
                    image_where={"type": "product"})
    bot.ask("a bicycle")
    bot.ask(image=b"x")
    assert [c[4] for c in mw.calls] == [{"type": "any"}, {"type": "product"}]


def test_rejects_bad_arguments() -> None:
    chat = GroundedChat(FakeLLM("x"))
    with pytest.raises(ValueError):
        Assistant(FakeMiddleware({}), [], chat)
    with pytest.raises(ValueError):
        Assistant(FakeMiddleware({}), "c", chat, k=0)
    bot, _ = make()
    with pytest.raises(ValueError, match="question"):
        bot.ask("   ")


def test_context_item_uses_caption_for_images_and_text_for_passages() -> None:
    assert context_item(BIKE).caption == "a photo of a red bicycle" and context_item(BIKE).kind == "image"
    assert context_item(NOTE).text == "The red bicycle cost 450 euros." and context_item(NOTE).score == 0.66


async def test_async_middleware_and_streaming() -> None:
    llm = FakeLLM("The red bicycle cost 450 euros [1].")
    mw = AsyncFakeMiddleware({"photos": [BIKE], "notes": [NOTE]})
    bot = Assistant(mw, ["photos", "notes"], GroundedChat(llm, threshold=0.35), k=2)
    with pytest.raises(TypeError, match="async"):
        bot.ask("bicycle")
    parts = [p async for p in bot.astream("How much was the red bicycle?")]
    assert "".join(p for p in parts if isinstance(p, str)) == "The red bicycle cost 450 euros [1]."
    reply = parts[-1]
    assert isinstance(reply, AssistantReply) and [it.id for it in reply.items] == ["img-bike"]
    assert (await bot.aask("and how much was it?")).query.startswith("red bicycle")


async def test_async_methods_accept_a_blocking_middleware() -> None:
    bot, _ = make()
    reply = await bot.aask("How much did the red bicycle cost?")
    assert reply.used_llm and len(bot.middleware.calls) == 2
