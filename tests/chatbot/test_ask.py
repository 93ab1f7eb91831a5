"""`pmirs ask` end to end (in process) against a real retriever, with the shared small model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chat_harness import PASSPHRASE, demo_photo, make_keystore

import middleware.encoder
import pmirs.commands.ask
from chatbot.grounding import NOT_FOUND_ANSWER
from middleware.client import PrivacyMiddleware
from pmirs.cli import main
from retriever.testing import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.service]
PHOTOS = ("koala", "sports_car", "pizza", "golden_retriever")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, lite_encoder: Any) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ask")
    with ServiceProcess(tmp / "data") as proc:
        keystore = make_keystore(tmp, "alice", proc)
        with PrivacyMiddleware(proc.url, keystore, lite_encoder) as pm:
            pm.create_collection("photos")
            pm.index_images("photos", [(demo_photo(p), f"a photo of a {p.replace('_', ' ')}") for p in PHOTOS])
        yield {"service": proc, "keystore": keystore}


@pytest.fixture
def cli(service: dict[str, Any], small_llm: Any, lite_encoder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client options from the environment, the session's encoder and small model."""
    monkeypatch.setenv("PMIRS_SERVER", service["service"].url)
    monkeypatch.setenv("PMIRS_KEYSTORE", str(service["keystore"].path))
    monkeypatch.setenv("PMIRS_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(middleware.encoder, "create_encoder", lambda spec, heads=None: lite_encoder)
    monkeypatch.setattr(pmirs.commands.ask, "load_llm", lambda args: small_llm)


def test_ask_json_shape_and_citation(cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "Do I have a photo of a koala?", "--collection", "photos", "--json", "--k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"answer", "items"} and isinstance(out["answer"], str) and out["answer"]
    assert out["items"], out
    assert all(set(it) >= {"id", "caption", "score"} for it in out["items"])
    assert out["items"][0]["caption"] == "a photo of a koala" and out["items"][0]["score"] > 0.5
    assert out["used_llm"] and out["timings_ms"]["retrieval_total"] > 0


def test_ask_unrelated_gives_the_fixed_answer(cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "What is my tax number?", "--collection", "photos", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == NOT_FOUND_ANSWER and out["items"] == [] and not out["used_llm"]


def test_ask_by_image_prints_answer_and_sources(cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "--image", str(demo_photo("sports_car")), "--collection", "photos", "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert "a photo of a sports car" in out and "score 1.00" in out
    assert "retrieval" in out and "first token" in out


def test_ask_usage_errors(cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "a question"]) == 2  # no --collection
    assert main(["ask", "--collection", "photos"]) == 2  # neither question nor image
    assert main(["ask", "--image", "/no/such.jpg", "--collection", "photos"]) == 2
    assert "no such image file" in capsys.readouterr().err
