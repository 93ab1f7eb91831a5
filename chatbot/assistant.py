"""One chat turn over a private collection: condense, retrieve privately, answer grounded, cite.

Shared by ``pmirs ask``, ``pmirs chat``, the UI and the customer-service bot, so they all behave
the same. A turn is:
    1. a text question is condensed with the conversation memory into a stand-alone retrieval
       query (no LLM call); a photo ("what is this?" + image) is searched by the image instead;
    2. private top-k retrieval through the middleware (``query_text`` / ``query_image``) in each
       collection; results are merged by score. The retriever sees only the encrypted query;
    3. the decrypted items become :class:`ContextItem` s (an image as its caption and score, a
       text as its passage); below the relevance threshold the fixed not-found answer is given
       without calling the model; otherwise :class:`GroundedChat` answers and cites [n].

Thresholds default to the values calibrated for the encoder's heads (:mod:`chatbot.relevance`).
Those of the zero-shot base heads (cosine scores through the private pipeline; centring lifts
every cosine, unrelated ones included, so the values are high) came from ``pmirs bench relevance``
(``benchmarks/results/relevance.json``): on ``data/demo`` (168 photos) the best photo for 12 related
questions scored 0.78-0.95 (median 0.85) and for 10 unrelated ones ("what is the capital of Peru?",
"explain recursion in python", ...) 0.70-0.77: :data:`DEFAULT_THRESHOLD` = 0.78 sits in that narrow
gap. Text items score higher against text questions: on the shop's policies 8 answerable questions
scored 0.81-0.91 and 10 unrelated ones 0.70-0.73, hence :data:`DEFAULT_TEXT_THRESHOLD` = 0.77. Other
heads carry their own values (``pmirs bench relevance`` measures them).

Example::

    from chatbot.assistant import create_assistant
    from chatbot.llm import LLMSettings, LocalLLM

    with PrivacyMiddleware(url, keystore, create_encoder("lite")) as pm:
        bot = create_assistant(pm, "demo", LocalLLM(LLMSettings()))  # or Assistant(pm, "demo", GroundedChat(...))
        reply = bot.ask("Do I have a photo of a sports car?")
        print(reply.answer, [(it.caption, round(it.score, 2)) for it in reply.items], reply.timings_ms)
        reply = bot.ask("what is this?", image="query.jpg")        # search by photo
        for part in bot.stream("and what colour is it?"):          # follow-up, streamed
            print(part if isinstance(part, str) else "", end="")
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chatbot.grounding import NOT_FOUND_ANSWER, ContextItem, GroundedAnswer, GroundedChat
from chatbot.memory import ConversationMemory, condense_query, is_follow_up
from chatbot.relevance import BASE_THRESHOLDS, resolve_thresholds

DEFAULT_THRESHOLD = BASE_THRESHOLDS.image  # base heads, image items: related >= 0.779, unrelated <= 0.771
DEFAULT_TEXT_THRESHOLD = BASE_THRESHOLDS.text  # base heads, text items: related >= 0.809, unrelated <= 0.735
IMAGE_QUESTION = "What is this?"  # the question when a photo comes without one
# The grounding rules phrased for a personal collection. Qwen2.5-0.5B answered "No, I don't know." to
# "Do I have a photo of a sports car?" with "[1] image: a photo of a sports car" in context under the
# generic prompt; saying that every item is something the user HAS, plus one answer template, fixed it
# ("Yes, you have a photo of a sports car [1].").
COLLECTION_SYSTEM_PROMPT = (
    "You help the user find things in their own photos and documents. Every context item is something "
    "the user has: an 'image' item is one of their photos (its caption says what it shows), a 'text' item "
    "is one of their notes. Answer from the items only, in one full sentence that ends with the number "
    "of the item you used in square brackets, for example: Yes, you have a photo of a red bicycle [2]."
)
_PHOTO_TURN = re.compile(r"\[photo: ([^\]]+)\]")
_IMAGE_HINT = " (The user sent a photo; the context items are the closest matches found for it.)"


@dataclass(frozen=True)
class CitedItem:
    """A retrieved item as callers show it: what it is, how well it matched, and its picture."""

    id: str  # the item's (keyed) id in its collection
    kind: str  # "image" or "text"
    caption: str  # image caption; for a text item its first line
    score: float  # retrieval score (cosine for the lite encoder), higher is better
    text: str = ""  # the passage of a text item
    collection: str = ""  # which collection it came from
    image_bytes: bytes | None = field(default=None, repr=False)  # the decrypted JPEG/PNG of an image item
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)  # private metadata (decrypted here)
    public: dict[str, Any] = field(default_factory=dict, repr=False)  # public metadata (the server saw it)


@dataclass(frozen=True)
class AssistantReply:
    """The outcome of one turn."""

    answer: str
    items: list[CitedItem]  # the items the answer cites, in citation order
    retrieved: list[CitedItem]  # everything retrieved (top-k over all collections), best first
    used_llm: bool  # False: nothing was relevant enough (or a bot answered by rule) and the model was skipped
    cited_inferred: bool  # the answer cited nothing explicitly; ``items`` is the likely source
    query: str  # the retrieval query sent (encrypted); "" for a photo
    timings_ms: dict[str, float]  # retrieval_<stage>, retrieval_total, ttft, llm_total, total
    handoff: str = ""  # why a bot passed the user to a human ("" when it did not)


@dataclass(frozen=True)
class Retrieval:
    """Merged retrieval results of one query and where its time went."""

    query: str  # the text query sent (condensed with the memory); "" for a photo
    items: list[Any]  # middleware RetrievedItems, best first, at most k
    collections: dict[str, str]  # item id -> collection it came from
    timings_ms: dict[str, float]  # retrieval_<stage> summed over collections, and retrieval_total


def context_item(item: Any) -> ContextItem:
    """What the model sees of a retrieved item: an image as its caption, a text as its passage."""
    if item.kind == "image":
        return ContextItem(item.id, "image", caption=item.caption or "", score=float(item.score))
    return ContextItem(item.id, "text", text=item.text or "", score=float(item.score))


def cited_item(item: Any, collection: str = "") -> CitedItem:
    """A middleware ``RetrievedItem`` as a :class:`CitedItem`."""
    text = item.text or ""
    caption = item.caption or (text.strip().splitlines()[0] if text.strip() else "")
    return CitedItem(item.id, item.kind, caption, float(item.score), text, collection, item.image_bytes,
                     dict(item.metadata or {}), dict(item.public or {}))


class Assistant:
    """Private retrieval + grounded answers + memory, over one or several collections.

    Args:
        middleware: a ``PrivacyMiddleware`` (for :meth:`ask` / :meth:`stream`) or an
            ``AsyncPrivacyMiddleware`` (for :meth:`aask` / :meth:`astream`; the async methods also
            accept a blocking one and run it in a thread).
        collections: the collection name, or several (each is searched; results merged by score).
        chat: the grounded answerer; its ``threshold`` decides "nothing relevant".
        k: items retrieved per turn (over all collections).
        where: public-metadata filter passed to every query.
        image_where: filter for photo queries instead of ``where`` (e.g. only products in a shop).
        memory: conversation memory for follow-ups (a fresh one by default).
        to_context: turns a retrieved item into what the model sees (a bot may add e.g. a price).
        not_found: the answer when nothing scores above the threshold (the model is not called).
    """

    def __init__(self, middleware: Any, collections: str | Sequence[str], chat: GroundedChat, *, k: int = 4,
                 where: Mapping[str, Any] | None = None, image_where: Mapping[str, Any] | None = None,
                 memory: ConversationMemory | None = None,
                 to_context: Callable[[Any], ContextItem] = context_item,
                 not_found: str = NOT_FOUND_ANSWER) -> None:
        names = [collections] if isinstance(collections, str) else list(collections)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("give at least one collection name")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.middleware = middleware
        self.collections = names
        self.chat = chat
        self.k = k
        self.where = dict(where) if where else None
        self.image_where = dict(image_where) if image_where else self.where
        self.memory = memory if memory is not None else ConversationMemory(count_tokens=chat.llm.count_tokens)
        self.to_context = to_context
        self.not_found = not_found
        self._async = inspect.iscoroutinefunction(getattr(middleware, "query_text", None))

    @property
    def threshold(self) -> float:
        """The minimum retrieval score an item needs to be given to the model."""
        return self.chat.threshold

    def reset(self) -> None:
        """Start a new conversation (forget the memory)."""
        self.memory.clear()

    # --- retrieval: the one path to the middleware ----------------------------------------------------

    def _plan(self, question: str, image: Any) -> tuple[str, Any, dict[str, Any] | None]:
        """(middleware method, its query argument, the filter) for a turn.

        A follow-up right after a photo turn ("how much is it?") is condensed onto the caption of
        the photo's best match, which memory keeps as ``[photo: caption]``.
        """
        if image is not None:
            return "query_image", image, self.image_where
        if not question or not question.strip():
            raise ValueError("ask a question or give a photo")
        turns = self.memory.turns
        photo = _PHOTO_TURN.match(turns[-1].question) if turns else None
        if photo and is_follow_up(question):
            return "query_text", f"{photo.group(1)} {question.strip()}", self.where
        return "query_text", condense_query(turns, question), self.where

    def _merge(self, query: str, results: Sequence[tuple[str, Any]]) -> Retrieval:
        """Top-k over all collections' results, and their stage timings summed."""
        owner: dict[str, str] = {}
        items: list[Any] = []
        timings: dict[str, float] = {}
        for name, result in results:
            for item in result.items:
                owner[item.id] = name
                items.append(item)
            for stage, ms in result.timings_ms.items():
                key = "retrieval_total" if stage == "total" else f"retrieval_{stage}"
                timings[key] = round(timings.get(key, 0.0) + float(ms), 3)
        items.sort(key=lambda it: it.score, reverse=True)
        return Retrieval(query, items[: self.k], owner, timings)

    def retrieve(self, question: str = "", image: Any = None) -> Retrieval:
        """Private top-k for a text question (condensed with the memory) or a photo."""
        if self._async:
            raise TypeError("this Assistant has an async middleware: use aask/astream/aretrieve")
        method, arg, where = self._plan(question, image)
        search = getattr(self.middleware, method)
        query = arg if method == "query_text" else ""
        return self._merge(query, [(c, search(c, arg, k=self.k, where=where)) for c in self.collections])

    async def aretrieve(self, question: str = "", image: Any = None) -> Retrieval:
        """Async :meth:`retrieve`; collections are searched concurrently."""
        method, arg, where = self._plan(question, image)
        search = getattr(self.middleware, method)
        query = arg if method == "query_text" else ""
        if self._async:
            calls = [search(c, arg, k=self.k, where=where) for c in self.collections]
        else:
            calls = [asyncio.to_thread(search, c, arg, k=self.k, where=where) for c in self.collections]
        return self._merge(query, list(zip(self.collections, await asyncio.gather(*calls), strict=True)))

    # --- answering --------------------------------------------------------------------------------

    def stream(self, question: str = "", image: Any = None) -> Iterator[str | AssistantReply]:
        """Yield answer pieces as the model writes them, then the :class:`AssistantReply`."""
        t0 = time.perf_counter()
        found = self.retrieve(question, image)
        yield from self._answer(question, image, found, t0)

    def ask(self, question: str = "", image: Any = None) -> AssistantReply:
        """The whole answer to one turn (see :meth:`stream`)."""
        return _last(self.stream(question, image))

    async def astream(self, question: str = "", image: Any = None) -> AsyncIterator[str | AssistantReply]:
        """Async :meth:`stream`: retrieval is awaited, the model runs in one worker thread."""
        t0 = time.perf_counter()
        found = await self.aretrieve(question, image)
        async for part in _in_thread(lambda: self._answer(question, image, found, t0)):
            yield part

    async def aask(self, question: str = "", image: Any = None) -> AssistantReply:
        """Async :meth:`ask`."""
        reply = None
        async for part in self.astream(question, image):
            reply = part
        if not isinstance(reply, AssistantReply):
            raise RuntimeError("assistant stream ended without a reply")
        return reply

    def _answer(self, question: str, image: Any, found: Retrieval, t0: float) -> Iterator[str | AssistantReply]:
        """Grounded answer over retrieved items; records the turn in memory."""
        question = (question or "").strip() or IMAGE_QUESTION
        by_id = {it.id: cited_item(it, found.collections.get(it.id, "")) for it in found.items}
        retrieved = list(by_id.values())
        timings = dict(found.timings_ms)
        contexts = [self.to_context(it) for it in found.items]
        if not self.chat.relevant(contexts):
            yield self.not_found
            timings["total"] = round((time.perf_counter() - t0) * 1000, 3)
            self.memory.add(_remembered(question, image, None), self.not_found)
            yield AssistantReply(self.not_found, [], retrieved, False, False, found.query, timings)
            return
        llm_question = question + _IMAGE_HINT if image is not None else question
        # Earlier turns are replayed only to a follow-up: a stand-alone question or a photo has all it
        # needs in its own context, and small models copy the previous answer when shown one (a photo of
        # a sports car was answered "we sell the teddy bear" after a teddy-bear turn).
        history = self.memory.turns if image is None and is_follow_up(question) else []
        t_llm = time.perf_counter()
        first: float | None = None
        final: GroundedAnswer | None = None
        for part in self.chat.stream(llm_question, contexts, history):
            if isinstance(part, GroundedAnswer):
                final = part
                continue
            if first is None:
                first = time.perf_counter()
            yield part
        end = time.perf_counter()
        if final is None:
            raise RuntimeError("grounded stream ended without an answer")
        timings.update(ttft=round(((first or end) - t_llm) * 1000, 3), llm_total=round((end - t_llm) * 1000, 3),
                       total=round((end - t0) * 1000, 3))
        best = self.chat.relevant(contexts)[0]
        self.memory.add(_remembered(question, image, by_id[best.id].caption), final.answer)
        cited = [by_id[c.id] for c in final.cited if c.id in by_id]
        yield AssistantReply(final.answer, cited, retrieved, final.used_llm, final.cited_inferred, found.query,
                             timings)


def create_assistant(middleware: Any, collections: str | Sequence[str], llm: Any, *, k: int = 4,
                     threshold: float | None = None, system_prompt: str = COLLECTION_SYSTEM_PROMPT,
                     text_threshold: float | None = None, **options: Any) -> Assistant:
    """The assistant ``pmirs ask``/``chat`` and the UI use: calibrated thresholds, collection prompt.

    ``llm`` is a :class:`chatbot.llm.LocalLLM` (or anything with its methods); thresholds left as
    None are those calibrated for the middleware's encoder; ``options`` go to :class:`Assistant`
    (``where``, ``memory``, ``to_context``, ``not_found`` ...).
    """
    limits = resolve_thresholds(middleware, threshold, text_threshold)
    chat = GroundedChat(llm, threshold=limits.image, system_prompt=system_prompt, text_threshold=limits.text)
    return Assistant(middleware, collections, chat, k=k, **options)


def with_answer(reply: AssistantReply, answer: str, handoff: str = "") -> AssistantReply:
    """A copy of ``reply`` with another answer (e.g. a bot's hand-off), citing nothing."""
    return replace(reply, answer=answer, items=[], cited_inferred=False, handoff=handoff)


def _remembered(question: str, image: Any, best: str | None) -> str:
    """How a turn is kept in memory: a photo turn as ``[photo: best match] question``."""
    if image is None:
        return question
    return f"[photo: {best}] {question}" if best else f"[photo] {question}"


def _last(parts: Iterator[str | AssistantReply]) -> AssistantReply:
    reply = None
    for part in parts:
        reply = part
    if not isinstance(reply, AssistantReply):
        raise RuntimeError("assistant stream ended without a reply")
    return reply


async def _in_thread(make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
    """Iterate a blocking generator in ONE worker thread (llama.cpp's lock must stay on one thread)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    def run() -> None:
        try:
            for part in make():
                loop.call_soon_threadsafe(queue.put_nowait, (False, part))
        except BaseException as e:  # handed to the awaiting side, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, (True, e))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, (True, None))

    threading.Thread(target=run, name="pmirs-assistant-llm", daemon=True).start()
    while True:
        done, value = await queue.get()
        if done:
            if value is not None:
                raise value
            return
        yield value
