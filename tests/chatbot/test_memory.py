"""Conversation memory and follow-up condensing (no model needed)."""

from __future__ import annotations

from chatbot.memory import ConversationMemory, Turn, condense_query, is_follow_up, subject_of


def test_follow_up_gets_subject_of_last_standalone_question() -> None:
    history = [Turn("Do you have photos of my red bicycle?", "Yes, [1] shows it.")]
    assert condense_query(history, "and how much is it?") == "red bicycle and how much is it?"


def test_chained_follow_ups_keep_the_original_subject() -> None:
    history = [
        Turn("Show me the tabby cat on the sofa", "Here it is [1]."),
        Turn("and where was it taken?", "In the living room [1]."),
    ]
    assert condense_query(history, "when was that?") == "tabby cat sofa when was that?"


def test_standalone_question_is_unchanged() -> None:
    history = [Turn("Do you have photos of my red bicycle?", "Yes.")]
    q = "What is the store's return window for online orders?"
    assert condense_query(history, q) == q
    assert condense_query([], "and how much is it?") == "and how much is it?"


def test_is_follow_up_and_subject() -> None:
    assert is_follow_up("And the blue one?")
    assert is_follow_up("how much is it?")
    assert not is_follow_up("Find photos of beaches at sunset")
    assert subject_of("Where are my photos of the Eiffel Tower?") == "Eiffel Tower"


def test_memory_keeps_newest_turns_within_budget() -> None:
    mem = ConversationMemory(max_turns=3, max_tokens=10, count_tokens=lambda s: len(s.split()))
    for i in range(5):
        mem.add(f"question {i}", f"answer {i}")  # 4 tokens a turn
    assert [t.question for t in mem.turns] == ["question 3", "question 4"]
    assert mem.messages()[0] == {"role": "user", "content": "question 3"}
    assert mem.messages()[-1] == {"role": "assistant", "content": "answer 4"}
    mem.clear()
    assert mem.turns == []
