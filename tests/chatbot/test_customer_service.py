"""The shop bot against a real retriever with the privately indexed catalogue, and `pmirs chat`."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chat_harness import PASSPHRASE, demo_photo, make_keystore

import middleware.encoder
import pmirs.commands.ask
from chatbot.customer_service import (
    HANDOFF_ANSWER,
    CustomerServiceBot,
    handoff_reason,
    index_catalogue,
    load_catalogue,
)
from middleware.client import PrivacyMiddleware
from pmirs.cli import main
from retriever.testing import ServiceProcess


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, lite_encoder: Any) -> Iterator[dict[str, Any]]:
    """One service with the catalogue indexed once in the collection "shop"."""
    tmp = tmp_path_factory.mktemp("shop")
    with ServiceProcess(tmp / "data") as service:
        keystore = make_keystore(tmp, "shopkeeper", service)
        with PrivacyMiddleware(service.url, keystore, lite_encoder) as pm:
            report = index_catalogue(pm, "shop")
            yield {"service": service, "keystore": keystore, "pm": pm, "report": report}


@pytest.fixture
def bot(shop: dict[str, Any], small_llm: Any) -> CustomerServiceBot:
    return CustomerServiceBot(shop["pm"], small_llm, "shop")


def test_catalogue_is_plausible_and_complete() -> None:
    cat = load_catalogue()
    assert 15 <= len(cat.products) <= 20
    assert len({p.sku for p in cat.products}) == len(cat.products)
    assert all(p.photo.is_file() and p.price > 0 for p in cat.products)
    assert {p.topic for p in cat.policies} >= {"returns", "shipping", "warranty", "payment", "contact"}


@pytest.mark.parametrize(("message", "reason"), [
    ("I want to speak to a human", "asked for a person"),
    ("Can I talk to someone please?", "asked for a person"),
    ("I want to file a complaint about my order", "complaint or compensation request"),
    ("I want a refund for a toy I bought 4 months ago", "refund beyond the returns policy"),
    ("What is your refund policy?", ""),
    ("Do you sell teddy bears?", ""),
])
def test_handoff_rules(message: str, reason: str) -> None:
    assert handoff_reason(message) == reason


@pytest.mark.slow
@pytest.mark.service
def test_indexing_is_private_and_idempotent(shop: dict[str, Any]) -> None:
    assert shop["report"] == {"products": 19, "policies": 5, "added": 24}
    assert index_catalogue(shop["pm"], "shop")["added"] == 0
    hit = shop["pm"].query_text("shop", "teddy bear", k=1).items[0]
    assert hit.public == {"type": "product"}  # all the server may see besides ciphertext
    assert hit.metadata["price"] == 22.0 and hit.metadata["sku"] == "PLU-001"  # private, decrypted here


@pytest.mark.slow
@pytest.mark.service
def test_unrelated_question_is_handed_off_without_the_model(bot: CustomerServiceBot) -> None:
    reply = bot.ask("What is the weather tomorrow?")
    assert reply.answer == HANDOFF_ANSWER and reply.handoff == "nothing relevant found"
    assert not reply.used_llm and reply.items == []
    chat = bot.assistant.chat
    assert reply.retrieved
    assert all(it.score < (chat.text_threshold if it.kind == "text" else chat.threshold) for it in reply.retrieved)


@pytest.mark.slow
@pytest.mark.service
def test_request_for_a_person_skips_retrieval(bot: CustomerServiceBot) -> None:
    reply = bot.ask("Can I speak to a human please?")
    assert reply.answer == HANDOFF_ANSWER and reply.handoff == "asked for a person"
    assert reply.retrieved == [] and "retrieval_total" not in reply.timings_ms


@pytest.mark.slow
@pytest.mark.service
def test_policy_question_cites_the_policy(bot: CustomerServiceBot) -> None:
    reply = bot.ask("What is your return policy?")
    assert reply.used_llm and not reply.handoff
    assert reply.retrieved[0].metadata["topic"] == "returns"
    assert reply.items and reply.items[0].metadata["topic"] == "returns"
    assert reply.items[0].kind == "text" and "30 days" in reply.items[0].text
    assert reply.timings_ms["ttft"] > 0 and reply.timings_ms["total"] >= reply.timings_ms["retrieval_total"]


@pytest.mark.slow
@pytest.mark.service
def test_photo_query_finds_the_product_and_follow_up_keeps_it(bot: CustomerServiceBot) -> None:
    reply = bot.ask("Do you sell this?", image=demo_photo("teddy"))
    top = reply.retrieved[0]
    assert top.metadata["sku"] == "PLU-001" and top.caption.startswith("Classic teddy bear")
    assert top.score == pytest.approx(1.0, abs=1e-3) and top.image_bytes == demo_photo("teddy").read_bytes()
    assert all(it.public == {"type": "product"} for it in reply.retrieved)  # photos search products only
    follow = bot.ask("how much is it?")
    assert follow.query.startswith("Classic teddy bear")  # condensed onto the photo's match
    assert follow.retrieved[0].metadata["sku"] == "PLU-001"


@pytest.mark.slow
@pytest.mark.service
def test_pmirs_chat_customer_service_reads_piped_stdin(shop: dict[str, Any], small_llm: Any, lite_encoder: Any,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PMIRS_SERVER", shop["service"].url)
    monkeypatch.setenv("PMIRS_KEYSTORE", str(shop["keystore"].path))
    monkeypatch.setenv("PMIRS_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(middleware.encoder, "create_encoder", lambda spec, heads=None: lite_encoder)
    monkeypatch.setattr(pmirs.commands.ask, "load_llm", lambda args: small_llm)
    teddy = demo_photo("teddy")
    lines = ["What is your return policy?", f"/image {teddy}", "I want to talk to a human", "/image /no/such.jpg",
             "/quit", "never read"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--bot", "customer-service", "--k", "3"]) == 0
    out = capsys.readouterr().out
    turns = out.split("you: ")[1:]
    assert len(turns) == 3 and "never read" not in out  # the missing photo never became a turn
    assert "Returns policy" in turns[0]
    assert "Do you sell this? [photo teddy.jpg]" in turns[1]
    assert HANDOFF_ANSWER in turns[2] and "(handed off: asked for a person)" in turns[2]
    assert "error: no such image file" in out
    assert Path(shop["keystore"].path).is_file()
