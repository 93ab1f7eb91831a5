"""Prompt building, trimming, citations and the no-LLM not-found path, with a fake model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from chatbot.grounding import (
    NOT_FOUND_ANSWER,
    SYSTEM_PROMPT,
    ContextItem,
    GroundedAnswer,
    GroundedChat,
    build_prompt,
    cite,
    format_item,
    parse_citations,
)
from chatbot.memory import Turn
from pmirs.errors import PromptTooLongError


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


class FakeLLM:
    """Records the prompts it gets and replies with a canned answer."""

    def __init__(self, reply: str = "It is 30 days [1].", n_ctx: int = 2048, max_tokens: int = 48) -> None:
        self.reply = reply
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.calls: list[list[dict[str, str]]] = []

    def chat(self, messages: Sequence[dict[str, str]]) -> str:
        return "".join(self.stream(messages))

    def stream(self, messages: Sequence[dict[str, str]]) -> Iterator[str]:
        self.calls.append(list(messages))
        yield from (w + " " for w in self.reply.split())

    def count_tokens(self, text: str) -> int:
        return words(text)


RETURNS = ContextItem("doc-1", "text", text="The store's return window is 30 days.", score=0.8)
CAT = ContextItem("img-2", "image", caption="a photo of a tabby cat", score=0.71)


def test_item_formats() -> None:
    assert format_item(2, CAT) == "[2] image: a photo of a tabby cat (relevance 0.71)"
    assert format_item(1, RETURNS) == "[1] text: The store's return window is 30 days."


def test_nothing_relevant_gives_fixed_answer_without_llm() -> None:
    llm = FakeLLM()
    chat = GroundedChat(llm, threshold=0.5)
    low = [
        ContextItem("x", "text", text="Unrelated.", score=0.2),
        ContextItem("y", "image", caption="a dog", score=0.1),
    ]
    result = chat.answer("What is the capital of Peru?", low)
    assert result == GroundedAnswer(NOT_FOUND_ANSWER, [], used_llm=False)
    assert llm.calls == []


def test_answer_cites_items_and_builds_numbered_prompt() -> None:
    llm = FakeLLM(reply="The cat [2] and returns take 30 days [1].")
    chat = GroundedChat(llm, threshold=0.3)
    low = ContextItem("z", "text", text="noise", score=0.1)
    result = chat.answer("How long is the return window?", [CAT, low, RETURNS])
    assert result.used_llm
    assert [it.id for it in result.cited] == ["img-2", "doc-1"]
    messages = llm.calls[0]
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = messages[-1]["content"]
    assert "[1] text: The store's return window is 30 days." in user
    assert "[2] image: a photo of a tabby cat (relevance 0.71)" in user
    assert "noise" not in user  # below the threshold: never shown to the model
    assert user.endswith("Question: How long is the return window?")


def test_stream_yields_pieces_then_answer() -> None:
    chat = GroundedChat(FakeLLM(reply="30 days [1]."), threshold=0.3)
    parts = list(chat.stream("Return window?", [RETURNS]))
    assert isinstance(parts[-1], GroundedAnswer)
    assert "".join(p for p in parts[:-1] if isinstance(p, str)).strip() == "30 days [1]."
    assert parts[-1].cited == [RETURNS]


def test_parse_citations() -> None:
    assert parse_citations("See [1], [3] and [2, 5] and [1] again; [9].", 4) == [1, 3, 2]
    assert parse_citations("no sources", 3) == []


def test_uncited_answer_is_attributed_by_word_overlap_and_flagged() -> None:
    assert cite("The return window is 30 days.", [RETURNS, CAT]) == ([RETURNS], True)
    assert cite("It is a tabby cat.", [RETURNS, CAT]) == ([CAT], True)
    assert cite("Paris is in France.", [RETURNS, CAT]) == ([], False)
    assert cite("I don't know.", [RETURNS, CAT]) == ([], False)


def test_copied_citation_number_is_corrected() -> None:
    # The model wrote [1] but used item 2: the number is not trusted, the overlap wins.
    assert cite("A tabby cat [1].", [RETURNS, CAT]) == ([CAT], True)
    assert cite("Yes [2].", [RETURNS, CAT]) == ([CAT], False)  # nothing to check against: kept


def test_huge_context_is_trimmed_and_question_kept() -> None:
    question = "What does the very long manual say about warranty claims for broken screens?"
    items = [ContextItem(f"doc-{i}", "text", text="word " * 1000, score=0.9 - i * 0.1) for i in range(5)]
    prompt = build_prompt(question, items, [], count_tokens=words, n_ctx=600, max_tokens=48)
    total = sum(words(m["content"]) + 8 for m in prompt.messages)
    assert total + 48 <= 600
    assert prompt.messages[0]["content"] == SYSTEM_PROMPT
    assert prompt.messages[-1]["content"].endswith(f"Question: {question}")
    assert [it.id for it in prompt.items] == ["doc-0"]  # lowest scores dropped first
    assert prompt.dropped_items == 4 and prompt.truncated
    assert "…" in prompt.messages[-1]["content"]


def test_two_items_fit_when_budget_allows() -> None:
    items = [ContextItem(f"doc-{i}", "text", text="word " * 50, score=0.9 - i * 0.1) for i in range(4)]
    prompt = build_prompt("q?", items, [], count_tokens=words, n_ctx=260, max_tokens=48)
    assert [it.id for it in prompt.items] == ["doc-0", "doc-1"]
    assert not prompt.truncated


def test_history_is_dropped_oldest_first() -> None:
    history = [Turn(f"old question {i}", "answer " * 30) for i in range(6)]
    prompt = build_prompt(
        "q?", [RETURNS], history, count_tokens=words, n_ctx=400, max_tokens=48, history_tokens=120
    )
    assert prompt.history_turns == 2
    assert prompt.messages[1]["content"] == "old question 4"


def test_question_too_long_for_window() -> None:
    with pytest.raises(PromptTooLongError):
        build_prompt("why " * 500, [RETURNS], [], count_tokens=words, n_ctx=512, max_tokens=48)


def test_text_items_can_have_their_own_threshold() -> None:
    items = [
        ContextItem("a", "image", caption="a photo of a koala", score=0.6),
        ContextItem("b", "text", text="returns within 30 days", score=0.7),
        ContextItem("c", "text", text="shipping takes 3 days", score=0.85),
    ]
    chat = GroundedChat(FakeLLM(), threshold=0.5, text_threshold=0.8)
    assert [it.id for it in chat.relevant(items)] == ["c", "a"]
    assert [it.id for it in GroundedChat(FakeLLM(), threshold=0.5).relevant(items)] == ["c", "b", "a"]
