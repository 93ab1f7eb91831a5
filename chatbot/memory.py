"""Conversation memory for follow-up questions, on the trusted side only.

Two jobs, both without an LLM call:
    * keep the last few turns within a token budget, to replay them to the model;
    * turn a follow-up ("and how much is it?") into a self-contained retrieval query by
      prefixing the subject of the last stand-alone question (:func:`condense_query`). The
      retriever sees only that query (encrypted), never the history.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


def _wordset(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``, for the word lists below."""
    return frozenset(text.split())


# Words that make a short question depend on an earlier one.
_ANAPHORA = _wordset(
    "it its it's itself they them their theirs those these that this one ones he him his she her there"
    " same other another else"
)
_FOLLOW_UP_OPENERS = ("and ", "also ", "what about", "how about", "but ", "or ", "then ")
# Dropped when extracting a question's subject: question words, auxiliaries, pronouns, fillers.
STOPWORDS = _wordset(
    """a an the and or but of to in on at for with from by about as into over under near than
    is are was were be been being am do does did have has had can could will would shall should may
    might must what which who whom whose when where why how i me my mine we us our you your yours
    it its they them their this that these those there here any some all show find tell give list
    see look looking want need please get got much many more most also just like please photo
    photos picture pictures image images something anything thing things kind sort one ones not no
    yes so very really again else other"""
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_FOLLOW_UP_MAX_WORDS = 8  # longer questions are taken as stand-alone even with a pronoun


@dataclass(frozen=True)
class Turn:
    """One finished exchange: what the user asked and what the assistant answered."""

    question: str
    answer: str


def _rough_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token) for when no model is at hand."""
    return max(1, len(text) // 4)


class ConversationMemory:
    """The last ``max_turns`` turns, cut further (oldest first) to fit ``max_tokens``.

    Example:
        >>> mem = ConversationMemory(max_turns=4, max_tokens=512)
        >>> mem.add("Do you have photos of my red bicycle?", "Yes [1].")
        >>> condense_query(mem.turns, "and how much was it?")
        'red bicycle and how much was it?'
    """

    def __init__(
        self,
        max_turns: int = 6,
        max_tokens: int = 1024,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if max_turns < 0 or max_tokens < 0:
            raise ValueError("max_turns and max_tokens must be >= 0")
        self.max_turns = max_turns  # turns kept at most
        self.max_tokens = max_tokens  # token budget of the replayed turns
        self._count = count_tokens or _rough_tokens
        self._turns: list[Turn] = []

    @property
    def turns(self) -> list[Turn]:
        """The kept turns, oldest first, already within both limits."""
        return list(self._turns)

    def add(self, question: str, answer: str) -> None:
        """Record a finished turn and drop the oldest ones that no longer fit."""
        self._turns.append(Turn(question, answer))
        self._turns = fit_turns(self._turns, self.max_turns, self.max_tokens, self._count)

    def clear(self) -> None:
        """Forget everything (a new conversation)."""
        self._turns.clear()

    def messages(self) -> list[dict[str, str]]:
        """The kept turns as chat messages (user/assistant pairs), oldest first."""
        return turns_to_messages(self._turns)


def fit_turns(
    turns: Sequence[Turn], max_turns: int, max_tokens: int, count_tokens: Callable[[str], int]
) -> list[Turn]:
    """The newest turns that fit both limits (a turn is kept whole or not at all)."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns[-max_turns:] if max_turns else []):
        cost = count_tokens(turn.question) + count_tokens(turn.answer)
        if used + cost > max_tokens:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    return kept


def turns_to_messages(turns: Iterable[Turn]) -> list[dict[str, str]]:
    """Chat messages for ``turns``: a user message then an assistant message for each."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer})
    return messages


def is_follow_up(question: str) -> bool:
    """Whether a question leans on an earlier one: short and opening with "and …" or using a pronoun."""
    q = question.strip().lower()
    words = _WORD.findall(q)
    if not words or len(words) > _FOLLOW_UP_MAX_WORDS:
        return False
    return q.startswith(_FOLLOW_UP_OPENERS) or any(w in _ANAPHORA for w in words)


def subject_of(question: str) -> str:
    """The content words of a question, in order ("Do you have my red bicycle?" -> "red bicycle")."""
    return " ".join(w for w in _WORD.findall(question) if w.lower() not in STOPWORDS)


def condense_query(history: Sequence[Turn], question: str) -> str:
    """A self-contained retrieval query for ``question`` given the earlier turns.

    A stand-alone question is returned unchanged. A follow-up gets the subject of the most
    recent stand-alone question in ``history`` in front of it, so "and how much is it?" after
    "Do you have my red bicycle?" retrieves with "red bicycle and how much is it?". Cheap on
    purpose: no LLM call, so it adds nothing to the turn's latency.
    """
    question = question.strip()
    if not is_follow_up(question):
        return question
    for turn in reversed(history):
        if not is_follow_up(turn.question):
            subject = subject_of(turn.question)
            return f"{subject} {question}" if subject else question
    return question
