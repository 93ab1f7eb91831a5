"""A customer-service bot prototype for a small shop, answering from a privately indexed catalogue.

The catalogue (``chatbot/data/catalogue.json``: products with a photo from ``data/demo``, a name,
description and price) and the store policies (``chatbot/data/policies.json``: returns, shipping,
warranty, payment, contact) are indexed with :func:`index_catalogue`: products as image items
whose caption is "name: description" with the price in PRIVATE metadata, policies as text items.
The retriever stores only ciphertexts and the public ``{"type": "product" | "policy"}`` tag.

The bot answers product questions by text ("do you sell teddy bears?") or by photo ("do you sell
this?" + a picture), and policy questions, citing what it used. It hands off to a human ("I'll
pass you to a human colleague") instead of guessing when:
    * the customer asks for a person, complains, or wants compensation or a refund beyond policy
      (decided by rule, before any retrieval);
    * nothing scores above the relevance threshold;
    * the model says it does not know.

Example::

    with PrivacyMiddleware(url, keystore, create_encoder("lite")) as pm:
        index_catalogue(pm, "shop")
        bot = CustomerServiceBot(pm, LocalLLM(LLMSettings()), collection="shop")
        print(bot.ask("What is your return policy?").answer)
        print(bot.ask("Do you sell this?", image="data/demo/general/teddy/teddy.jpg").items[0].caption)
        print(bot.ask("I want to speak to a human").handoff)   # "asked for a person"

The photos are ImageNet samples (demo/test use only), standing in for product pictures.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.assistant import Assistant, AssistantReply, with_answer
from chatbot.grounding import ContextItem, GroundedChat, is_refusal
from chatbot.memory import ConversationMemory
from chatbot.relevance import resolve_thresholds
from middleware.datasets import DEMO_PHOTOS  # where catalogue photo paths point

DATA_DIR = Path(__file__).resolve().parent / "data"
HANDOFF_ANSWER = (
    "I'll pass you to a human colleague who can help with that; they usually reply within one business day."
)
# Tried on Qwen2.5-0.5B: a concrete example answer ("... a wooden rocking horse for 49.00 EUR [2]") was
# copied verbatim whatever the question; without any template it pasted the context line. A template
# with <placeholders> gave "Yes, we sell the plush teddy bear for 22.00 EUR [1]."
SHOP_SYSTEM_PROMPT = (
    "You are the customer-service assistant of Little Harbour Toys & Treats, a shop for toys, plush "
    "animals, model vehicles and a few foods. The context items are the shop's products (with prices) "
    "and store policies. Reply to the customer in your own words, from these items only, in one short "
    "friendly sentence such as 'Yes, we sell the <product> for <price> [n].' or 'You can <what the policy "
    "allows> [n].', where [n] is the number of the item you used. If the items do not answer the question, "
    "say that you don't know."
)
_ASKS_FOR_PERSON = re.compile(
    r"\b(human|real person|representative|live agent|operator|manager|supervisor)\b"
    r"|\b(speak|talk|chat)\s+(to|with)\s+(a |an |the |your )?(person|someone|somebody|agent|staff|colleague)\b",
    re.I,
)
_COMPLAINT = re.compile(
    r"\b(complain\w*|compensation|compensate|lawyer|legal action|sue|unacceptable|chargeback|scam|fraud\w*)\b", re.I
)
_REFUND_BEYOND_POLICY = re.compile(
    r"\brefund\b.*\b(months?|years?|exception|beyond|outside|expired|anyway|even though)\b"
    r"|\b(months?|years?|exception|beyond|outside|expired|anyway|even though)\b.*\brefund\b",
    re.I,
)


@dataclass(frozen=True)
class Product:
    """One catalogue entry."""

    sku: str  # stock-keeping unit, the shop's own id
    name: str  # shown to customers
    category: str  # e.g. "plush animals"
    price: float  # in the catalogue's currency
    description: str  # one sentence
    photo: Path  # the product picture (absolute)

    @property
    def caption(self) -> str:
        """What the bot (and the model) reads for this product: name and description."""
        return f"{self.name}: {self.description}"


@dataclass(frozen=True)
class Policy:
    """One store policy passage."""

    topic: str  # returns, shipping, warranty, payment, contact
    title: str  # heading for display
    text: str  # the passage indexed and given to the model


@dataclass(frozen=True)
class Catalogue:
    """The shop's products and policies."""

    shop: str
    currency: str
    products: list[Product]
    policies: list[Policy]


def load_catalogue(data_dir: Path = DATA_DIR, photo_root: Path = DEMO_PHOTOS) -> Catalogue:
    """Read ``catalogue.json`` and ``policies.json`` from ``data_dir``; photo paths resolve under ``photo_root``."""
    doc = json.loads((Path(data_dir) / "catalogue.json").read_text(encoding="utf-8"))
    policies = json.loads((Path(data_dir) / "policies.json").read_text(encoding="utf-8"))["policies"]
    products = [
        Product(p["sku"], p["name"], p["category"], float(p["price"]), p["description"], Path(photo_root) / p["photo"])
        for p in doc["products"]
    ]
    missing = [str(p.photo) for p in products if not p.photo.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} product photo(s) missing, e.g. {missing[0]}")
    return Catalogue(doc["shop"], doc["currency"], products, [Policy(**p) for p in policies])


def index_catalogue(middleware: Any, collection: str = "shop", catalogue: Catalogue | None = None) -> dict[str, int]:
    """Privately index the products (image items) and policies (text items); already stored items are skipped.

    Returns:
        ``{"products": n, "policies": m, "added": a}`` (``added`` counts only new items).
    """
    cat = catalogue or load_catalogue()
    middleware.create_collection(collection)
    products = [
        (p.photo, p.caption, {"type": "product"},
         {"sku": p.sku, "name": p.name, "category": p.category, "price": p.price, "currency": cat.currency})
        for p in cat.products
    ]
    added = middleware.index_images(collection, products).added
    added += middleware.index_texts(
        collection,
        [p.text for p in cat.policies],
        public_metadata={"type": "policy"},
        private_metadata=[{"topic": p.topic, "title": p.title} for p in cat.policies],
    ).added
    return {"products": len(cat.products), "policies": len(cat.policies), "added": added}


def shop_context(item: Any) -> ContextItem:
    """A product as "name: description Price: 22.00 EUR." so the model can quote prices; policies as text."""
    if item.kind == "image":
        meta: Mapping[str, Any] = item.metadata or {}
        price = f" Price: {float(meta['price']):.2f} {meta.get('currency', 'EUR')}." if "price" in meta else ""
        return ContextItem(item.id, "image", caption=f"{item.caption or ''}{price}", score=float(item.score))
    return ContextItem(item.id, "text", text=item.text or "", score=float(item.score))


def handoff_reason(message: str) -> str:
    """Why a message goes straight to a human ("" if the bot may answer it)."""
    if _ASKS_FOR_PERSON.search(message):
        return "asked for a person"
    if _COMPLAINT.search(message):
        return "complaint or compensation request"
    if _REFUND_BEYOND_POLICY.search(message):
        return "refund beyond the returns policy"
    return ""


class CustomerServiceBot:
    """The shop assistant: grounded answers about products and policies, or a hand-off to a human.

    Args:
        middleware: a ``PrivacyMiddleware`` (or async one, then use :meth:`aask`) with the shop's keys.
        llm: the local model (:class:`chatbot.llm.LocalLLM`).
        collection: where :func:`index_catalogue` put the shop.
        k: items retrieved per question.
        threshold: relevance threshold of products (None: calibrated for the encoder's heads).
    """

    def __init__(self, middleware: Any, llm: Any, collection: str = "shop", *, k: int = 3,
                 threshold: float | None = None, memory: ConversationMemory | None = None,
                 text_threshold: float | None = None) -> None:
        limits = resolve_thresholds(middleware, threshold, text_threshold)
        chat = GroundedChat(llm, threshold=limits.image, system_prompt=SHOP_SYSTEM_PROMPT, text_threshold=limits.text)
        self.assistant = Assistant(middleware, collection, chat, k=k, image_where={"type": "product"}, memory=memory,
                                   to_context=shop_context, not_found=HANDOFF_ANSWER)

    def reset(self) -> None:
        """Start a new conversation."""
        self.assistant.reset()

    def stream(self, question: str = "", image: Any = None) -> Iterator[str | AssistantReply]:
        """Answer pieces, then the :class:`AssistantReply` (``handoff`` says why, when handed off)."""
        t0 = time.perf_counter()
        reason = handoff_reason(question) if image is None else ""
        if reason:
            yield HANDOFF_ANSWER
            self.assistant.memory.add(question, HANDOFF_ANSWER)
            timings = {"total": round((time.perf_counter() - t0) * 1000, 3)}
            yield AssistantReply(HANDOFF_ANSWER, [], [], False, False, "", timings, handoff=reason)
            return
        for part in self.assistant.stream(question, image):
            if not isinstance(part, AssistantReply):
                yield part
                continue
            reply = self._finish(part)
            if reply.used_llm and reply.handoff:  # the model said it doesn't know: add the hand-off line
                yield " " + HANDOFF_ANSWER
            yield reply

    def ask(self, question: str = "", image: Any = None) -> AssistantReply:
        """The whole reply (see :meth:`stream`)."""
        reply = None
        for part in self.stream(question, image):
            reply = part
        if not isinstance(reply, AssistantReply):
            raise RuntimeError("bot stream ended without a reply")
        return reply

    async def aask(self, question: str = "", image: Any = None) -> AssistantReply:
        """Async :meth:`ask` (retrieval awaited when the middleware is async)."""
        reason = handoff_reason(question) if image is None else ""
        if reason:
            self.assistant.memory.add(question, HANDOFF_ANSWER)
            return AssistantReply(HANDOFF_ANSWER, [], [], False, False, "", {"total": 0.0}, handoff=reason)
        return self._finish(await self.assistant.aask(question, image))

    @staticmethod
    def _finish(reply: AssistantReply) -> AssistantReply:
        """Mark not-found turns as hand-offs; a model that does not know also hands off."""
        if not reply.used_llm:
            return with_answer(reply, HANDOFF_ANSWER, "nothing relevant found")
        if not reply.items and is_refusal(reply.answer):
            return with_answer(reply, f"{reply.answer} {HANDOFF_ANSWER}", "the model could not answer")
        return reply
