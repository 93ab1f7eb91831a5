"""The Streamlit app driven by AppTest against a real retriever, real encoder and the small local model."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui.app import CONFIG_KEY
from ui.config import MAX_UPLOAD_MB
from ui.views import INSPECTOR_LABEL, LATENCY_LABEL

pytestmark = [pytest.mark.slow, pytest.mark.service]
APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TIMEOUT = 240  # seconds per run: the first one loads the encoder and the model on a busy machine


def start(env, **overrides: object) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[CONFIG_KEY] = env.config(**overrides)
    return at.run()


def assistant_messages(at: AppTest) -> list:
    return [m for m in at.chat_message if m.name == "assistant"]


def test_chat_turn_shows_answer_gallery_and_inspector(ui_env) -> None:
    at = start(ui_env)
    assert not at.exception
    assert at.sidebar.selectbox[0].options == ["alice", "bob"]
    assert at.sidebar.selectbox[1].options == ["photos"]

    at.chat_input[0].set_value("Do I have a photo of a cat?").run()
    assert not at.exception
    [message] = assistant_messages(at)
    assert message.markdown[0].value.strip()  # the streamed answer
    images = message.get("image")
    assert images, "no retrieved picture in the gallery"
    captions = [c for image in images for c in image.captions]
    assert any("tabby" in c for c in captions)
    assert all(" · " in c for c in captions)  # caption · score
    labels = [e.label for e in message.expander]
    assert INSPECTOR_LABEL in labels and LATENCY_LABEL in labels
    inspector = next(e for e in message.expander if e.label == INSPECTOR_LABEL)
    text = "\n".join(m.value for m in inspector.markdown)
    assert "Server saw" in text and "Stayed on this machine" in text
    assert "Do I have a photo of a cat?" in text  # the question is listed on the local side only
    assert "session `" in text and "sealed request" in text
    latency = next(e for e in message.expander if e.label == LATENCY_LABEL)
    stages = list(latency.dataframe[0].value["stage"])
    for stage in ("encode (local)", "obfuscate (local)", "HTTP round trip", "LLM first token", "turn total"):
        assert stage in stages


def test_follow_up_keeps_history(ui_env) -> None:
    at = start(ui_env)
    at.chat_input[0].set_value("Show me a school bus").run()
    at.chat_input[0].set_value("and what colour is it?").run()
    assert not at.exception
    assert len(assistant_messages(at)) == 2
    inspector = next(e for e in assistant_messages(at)[1].expander if e.label == INSPECTOR_LABEL)
    assert "school bus and what colour is it?" in "\n".join(m.value for m in inspector.markdown)


def test_users_see_only_their_collections(ui_env) -> None:
    at = start(ui_env)
    table = at.sidebar.dataframe[0].value
    assert list(table["collection"])[0] == "photos" and list(table["keys"]) == ["yes", "none"]
    assert list(table["collection"])[1].endswith("…")  # bob's collection: an opaque name, no keys
    at.sidebar.selectbox[0].set_value("bob").run()
    assert not at.exception
    assert at.sidebar.selectbox[1].options == ["notes"]
    table = at.sidebar.dataframe[0].value
    assert list(table["collection"])[0] == "notes" and "photos" not in list(table["collection"])


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"server_url": "http://127.0.0.1:9"}, "no pinned fingerprint"),
    ({"passphrases": {"": "wrong passphrase"}}, "wrong passphrase"),
    ({"passphrases": {}}, "no passphrase for alice"),
])
def test_setup_problems_are_shown_not_raised(ui_env, overrides: dict, expected: str) -> None:
    at = start(ui_env, **overrides)
    assert not at.exception
    assert any(expected in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert at.chat_input[0].disabled


def test_image_query_finds_the_same_photo(ui_env, demo_dir: Path) -> None:
    at = start(ui_env)
    photo = (demo_dir / "food/pizza/pizza.jpg").read_bytes()
    at.sidebar.file_uploader[0].set_value(("pizza.jpg", photo, "image/jpeg")).run()
    assert not at.sidebar.error
    at.chat_input[0].set_value("What is this?").run()
    assert not at.exception
    [message] = assistant_messages(at)
    first = message.get("image")[0].captions[0]
    assert first.startswith("a photo of a pizza · 1.00")


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("notes.jpg", b"this is not an image", "not a readable image"),
    ("huge.png", b"\x89PNG" + b"\0" * (MAX_UPLOAD_MB * 2**20), "the limit is"),
])
def test_bad_uploads_show_an_error(ui_env, name: str, data: bytes, expected: str) -> None:
    at = start(ui_env)
    at.sidebar.file_uploader[0].set_value((name, data, "image/jpeg")).run()
    assert not at.exception
    assert any(expected in e.value for e in at.sidebar.error)
    at.chat_input[0].set_value("Do I have a photo of a dog?").run()  # still works, by text
    assert not at.exception
    assert assistant_messages(at)
