"""Grounded answers: the local LLM answers only from retrieved items and cites them as [n].

Runs on the trusted side, after the middleware has decrypted the retrieved items. The steps:
    1. keep only items scoring at least ``threshold``; if none do, answer with the fixed
       :data:`NOT_FOUND_ANSWER` without calling the model (small models never say "I don't
       know" by themselves, so this is done in code);
    2. build the prompt: a system message with the rules, the recent turns, then the numbered
       context and the question. The system message and the question are never cut; history is
       dropped oldest first, then context: lowest-score items first, then the text of the last
       item left, until prompt + ``max_tokens`` fits the model's context window;
    3. generate, parse the [n] citations, and return only the items actually cited; an answer
       without a usable [n] is attributed by word overlap and flagged (see :func:`cite`).

Example:
    >>> from chatbot.llm import LLMSettings, LocalLLM
    >>> llm = LocalLLM(LLMSettings(model="smollm2-135m", n_ctx=2048, max_tokens=48))
    >>> chat = GroundedChat(llm, threshold=0.3)
    >>> items = [ContextItem("doc-7", "text", text="The store's return window is 30 days.", score=0.8)]
    >>> result = chat.answer("How long is the return window?", items)
    >>> result.answer, [it.id for it in result.cited], result.cited_inferred
    ('The return window is 30 days.', ['doc-7'], True)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from chatbot.memory import STOPWORDS, Turn, turns_to_messages
from pmirs.errors import PromptTooLongError

NOT_FOUND_ANSWER = "I couldn't find anything relevant to that in your collection."

SYSTEM_PROMPT = (
    "You answer questions about the user's private collection of photos and documents. "
    "Use ONLY the numbered context items given with the question. "
    "Cite each item you use by its number in square brackets, like [1] or [2]. "
    "If the context items do not contain the answer, say that you don't know. "
    "Answer in one or two short sentences."
)

_MESSAGE_OVERHEAD = 8  # tokens the chat template adds around each message (ChatML uses ~5)
_SAFETY_MARGIN = 16  # tokens kept free for template details we do not count exactly
_MIN_CONTEXT_TOKENS = 24  # below this there is no room for any item: refuse instead of guessing
_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_REFUSAL = re.compile(r"\b(don't|do not|doesn't|does not|cannot|can't|couldn't) (know|find|say|tell)\b", re.I)
_ELLIPSIS = "…"


@dataclass(frozen=True)
class ContextItem:
    """One retrieved item, as the chatbot sees it after decryption (independent of the retriever)."""

    id: str  # the collection's id of the item, to show or link
    kind: Literal["image", "text"]
    caption: str = ""  # image: its caption or label phrase; text: an optional title
    text: str = ""  # text: the passage itself (unused for images)
    score: float = 0.0  # relevance from retrieval, higher is better


@dataclass(frozen=True)
class GroundedAnswer:
    """The answer and the items it cites, in citation order."""

    answer: str
    cited: list[ContextItem]
    used_llm: bool  # False when nothing was relevant enough and the fixed answer was given
    cited_inferred: bool = False  # True when the answer cited nothing and ``cited`` is the top item


@dataclass(frozen=True)
class Prompt:
    """The messages for the model and the items numbered [1]..[n] in it."""

    messages: list[dict[str, str]]
    items: list[ContextItem]
    dropped_items: int = 0  # relevant items left out to fit the context window
    truncated: bool = False  # whether the last item's text was cut to fit
    history_turns: int = 0  # earlier turns that fit
    extra: dict[str, int] = field(default_factory=dict)  # token accounting, for benchmarks and logs


class ChatLLM(Protocol):
    """What grounding needs from a model; :class:`chatbot.llm.LocalLLM` is one."""

    @property
    def n_ctx(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def stream(self, messages: Sequence[dict[str, str]]) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


def format_item(n: int, item: ContextItem, body: str | None = None) -> str:
    """One context line: ``[2] image: a photo of a tabby cat (relevance 0.71)`` or ``[1] text: …``."""
    if item.kind == "image":
        return f"[{n}] image: {body if body is not None else item.caption} (relevance {item.score:.2f})"
    text = body if body is not None else item.text
    title = f"{item.caption}: " if item.caption and body is None else ""
    return f"[{n}] text: {title}{text}"


def user_message(question: str, lines: Sequence[str]) -> str:
    """The final user message: numbered context, then the question (kept whole)."""
    return "Context:\n" + "\n".join(lines) + f"\n\nQuestion: {question}"


def build_prompt(
    question: str,
    items: Sequence[ContextItem],
    history: Sequence[Turn],
    *,
    count_tokens: Callable[[str], int],
    n_ctx: int,
    max_tokens: int,
    history_tokens: int = 512,
    system_prompt: str = SYSTEM_PROMPT,
) -> Prompt:
    """Fit system prompt, question, recent turns and the best items into ``n_ctx - max_tokens``.

    ``items`` should already be the relevant ones; they are numbered by descending score.

    Raises:
        PromptTooLongError: the system prompt and question alone leave no room for context.
    """
    ranked = sorted(items, key=lambda it: it.score, reverse=True)
    fixed = (
        count_tokens(system_prompt)
        + count_tokens(user_message(question, []))
        + 2 * _MESSAGE_OVERHEAD
        + max_tokens
        + _SAFETY_MARGIN
    )
    room = n_ctx - fixed
    if room < _MIN_CONTEXT_TOKENS:
        raise PromptTooLongError(
            f"the question needs {fixed - max_tokens} tokens with the system prompt; with max_tokens="
            f"{max_tokens} that leaves {room} of n_ctx={n_ctx} for context. Ask a shorter question."
        )
    history_budget = min(history_tokens, room - _MIN_CONTEXT_TOKENS)
    kept_turns, history_cost = _fit_history(history, history_budget, count_tokens)
    budget = room - history_cost
    lines = [format_item(i + 1, it) for i, it in enumerate(ranked)]
    costs = [count_tokens(line) + 1 for line in lines]  # +1 for the newline
    while len(lines) > 1 and sum(costs) > budget:
        lines.pop()
        costs.pop()
    truncated = False
    if lines and sum(costs) > budget:
        last = ranked[len(lines) - 1]
        lines[-1] = _truncate_item(len(lines), last, budget, count_tokens)
        truncated = True
    used = ranked[: len(lines)]
    messages = [{"role": "system", "content": system_prompt}]
    messages += turns_to_messages(kept_turns)
    messages.append({"role": "user", "content": user_message(question, lines)})
    accounting = {"fixed": fixed, "history": history_cost, "context_budget": budget}
    return Prompt(messages, used, len(ranked) - len(used), truncated, len(kept_turns), accounting)


def parse_citations(answer: str, n_items: int) -> list[int]:
    """The item numbers cited as [n] or [n, m] in ``answer``, first-cited first, within 1..n_items."""
    seen: list[int] = []
    for group in _CITATION.findall(answer):
        for part in re.split(r"[,;]", group):
            n = int(part)
            if 1 <= n <= n_items and n not in seen:
                seen.append(n)
    return seen


def cite(answer: str, items: Sequence[ContextItem]) -> tuple[list[ContextItem], bool]:
    """The items ``answer`` cites, and whether they were inferred rather than cited.

    Decisions (small models cite badly: SmolLM2-135M and Qwen2.5-0.5B mostly write no [n], and
    when shown an example they copy "[1]" whatever item they used):
        * an explicit [n] is kept unless the answer has content words and none of them occur in
          item n (then it is a copied number, not a citation);
        * an answer with no usable citation is attributed to the item sharing the most content
          words with it (ties go to the higher score), flagged ``inferred`` so a UI can label it
          "likely source": no provenance at all would be worse for a grounded chatbot;
        * an answer sharing no content word with any item, or saying it doesn't know, cites nothing.
    """
    if not items or _REFUSAL.search(answer):
        return [], False
    words = _content_words(answer)
    item_words = [_content_words(f"{it.caption} {it.text}") for it in items]
    cited = [n for n in parse_citations(answer, len(items)) if not words or words & item_words[n - 1]]
    if cited:
        return [items[n - 1] for n in cited], False
    overlaps = [len(words & w) for w in item_words]
    best = max(range(len(items)), key=lambda i: (overlaps[i], items[i].score))
    return ([items[best]], True) if overlaps[best] else ([], False)


def is_refusal(answer: str) -> bool:
    """Whether a model answer says it doesn't know / cannot find or tell (a bot may hand off then)."""
    return bool(_REFUSAL.search(answer))


def _content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters that are not stopwords, for overlap between answer and item."""
    return {w for w in re.findall(r"[a-z0-9]{3,}", text.lower()) if w not in STOPWORDS}


class GroundedChat:
    """Answers questions from retrieved items with a local model, citing them.

    Args:
        llm: the model (:class:`chatbot.llm.LocalLLM` or anything with the same methods).
        threshold: minimum retrieval score for an item to be used at all; tune it per retriever
            (cosine scores of different encoders live on different scales).
        text_threshold: the same for text items (default: ``threshold``); text-to-text cosines
            of an encoder need not share the scale of its text-to-image ones.
        history_tokens: most tokens of earlier turns replayed to the model.
        system_prompt: the rules given to the model; a bot with a persona (e.g. a shop assistant)
            replaces it but should keep the "only the numbered context, cite [n]" rules.
    """

    def __init__(
        self, llm: ChatLLM, threshold: float = 0.3, history_tokens: int = 512, system_prompt: str = SYSTEM_PROMPT,
        text_threshold: float | None = None,
    ) -> None:
        self.llm = llm
        self.threshold = threshold
        self.text_threshold = threshold if text_threshold is None else text_threshold
        self.history_tokens = history_tokens
        self.system_prompt = system_prompt

    def relevant(self, items: Sequence[ContextItem]) -> list[ContextItem]:
        """Items at or above the threshold, best first."""
        kept = [it for it in items
                if it.score >= (self.text_threshold if it.kind == "text" else self.threshold)]
        return sorted(kept, key=lambda it: it.score, reverse=True)

    def prompt(self, question: str, items: Sequence[ContextItem], history: Sequence[Turn] = ()) -> Prompt:
        """The prompt that :meth:`answer` would send (for inspection, tests and benchmarks)."""
        return build_prompt(
            question,
            self.relevant(items),
            history,
            count_tokens=self.llm.count_tokens,
            n_ctx=self.llm.n_ctx,
            max_tokens=self.llm.max_tokens,
            history_tokens=self.history_tokens,
            system_prompt=self.system_prompt,
        )

    def answer(
        self, question: str, items: Sequence[ContextItem], history: Sequence[Turn] = ()
    ) -> GroundedAnswer:
        """Answer ``question`` from ``items``; the fixed not-found answer if none is relevant."""
        result: GroundedAnswer | None = None
        for part in self.stream(question, items, history):
            if isinstance(part, GroundedAnswer):
                result = part
        if result is None:  # stream() always ends with the answer; this guards refactors
            raise RuntimeError("grounded stream ended without an answer")
        return result

    def stream(
        self, question: str, items: Sequence[ContextItem], history: Sequence[Turn] = ()
    ) -> Iterator[str | GroundedAnswer]:
        """Yield answer text pieces as the model produces them, then the final :class:`GroundedAnswer`."""
        if not self.relevant(items):
            yield NOT_FOUND_ANSWER
            yield GroundedAnswer(NOT_FOUND_ANSWER, [], used_llm=False)
            return
        prompt = self.prompt(question, items, history)
        pieces: list[str] = []
        for piece in self.llm.stream(prompt.messages):
            pieces.append(piece)
            yield piece
        text = "".join(pieces).strip()
        cited, inferred = cite(text, prompt.items)
        yield GroundedAnswer(text, cited, used_llm=True, cited_inferred=inferred)


def _fit_history(
    history: Sequence[Turn], budget: int, count_tokens: Callable[[str], int]
) -> tuple[list[Turn], int]:
    """The newest whole turns within ``budget`` tokens (template overhead included), and their cost."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(history):
        cost = count_tokens(turn.question) + count_tokens(turn.answer) + 2 * _MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    return kept, used


def _truncate_item(n: int, item: ContextItem, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The item's line with its text (or caption) cut, at a character boundary, to fit ``budget``."""
    body = item.caption if item.kind == "image" else item.text
    lo, hi = 0, len(body)
    while lo < hi:  # longest prefix whose line fits; the count is monotone enough in prefix length
        mid = (lo + hi + 1) // 2
        if count_tokens(format_item(n, item, body[:mid] + _ELLIPSIS)) + 1 <= budget:
            lo = mid
        else:
            hi = mid - 1
    return format_item(n, item, body[:lo] + _ELLIPSIS)
