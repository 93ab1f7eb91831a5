"""The real app in a real browser: `streamlit run` on 127.0.0.1, driven by headless Chromium over CDP.

Needs the Debian ``chromium`` package (``make test`` installs it); skips only when it is absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp import Browser, find_chromium
from ui_harness import PASSPHRASE

from chatbot.model_files import SMALL_MODEL
from retriever.testing import free_port
from ui.launch import UIProcess, start_ui, stop_ui
from ui.views import INSPECTOR_LABEL

pytestmark = [pytest.mark.slow, pytest.mark.service]
CHROMIUM = find_chromium()
QUESTION = "Do I have a photo of a school bus?"

# The page's state in one round trip; Streamlit's test ids are stable across releases.
STATE_JS = """(() => {
  const q = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const assistant = q('[data-testid="stChatMessage"]').filter(
    m => m.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
  const last = assistant[assistant.length - 1];
  const images = last ? q('[data-testid="stImage"] img', last) : [];
  return JSON.stringify({
    input: !!document.querySelector('textarea[data-testid="stChatInputTextArea"]'),
    running: !!document.querySelector('[data-testid="stStatusWidgetRunningIcon"], '
                                      + '[data-testid="stStatusWidgetRunningManIcon"]'),
    assistants: assistant.length,
    answer: last ? (last.querySelector('[data-testid="stMarkdownContainer"]') || {}).innerText || '' : '',
    images: images.filter(i => i.complete && i.naturalWidth > 0).length,
    captions: last ? q('[data-testid="stImageCaption"]', last).map(c => c.innerText) : [],
    expanders: last ? q('[data-testid="stExpander"] summary', last).map(s => s.innerText) : [],
    exception: !!document.querySelector('[data-testid="stException"]'),
  });
})()"""


def state(browser: Browser) -> dict:
    return json.loads(browser.evaluate(STATE_JS))


def when(condition: str) -> str:
    """A page expression that is true once ``condition`` holds for the state ``s``."""
    return f"(s => {condition})(JSON.parse({STATE_JS}))"


@pytest.fixture
def served_ui(ui_env, tmp_path: Path) -> Iterator[UIProcess]:
    handle = start_ui(ui_env.service.url, ui_env.keystore_dir, passphrase=PASSPHRASE, port=free_port(),
                      model=SMALL_MODEL, max_tokens=32, n_threads=1, k=4, log_path=tmp_path / "streamlit.log",
                      timeout=180)
    try:
        yield handle
    finally:
        stop_ui(handle)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_question_in_browser_shows_answer_and_pictures(served_ui: UIProcess, tmp_path: Path) -> None:
    with Browser(CHROMIUM, tmp_path / "chromium-profile") as browser:
        browser.navigate(served_ui.url)
        browser.wait_for(when("s.input && !s.running"), 180, "the chat input")
        browser.evaluate('document.querySelector(\'textarea[data-testid="stChatInputTextArea"]\').focus()')
        browser.type_text(QUESTION)
        browser.press_enter()
        browser.wait_for(when("s.assistants >= 1 && s.images >= 1 && !s.running && s.expanders.length >= 2"),
                         240, "an answer with retrieved pictures")
        browser.evaluate("Array.from(document.querySelectorAll('[data-testid=\"stExpander\"] summary'))"
                         ".forEach(s => s.click())")  # open inspector and latency for the screenshot
        browser.wait_for("document.querySelectorAll('[data-testid=\"stExpanderDetails\"]').length >= 2", 30,
                         "the expanders to open")
        browser.evaluate("new Promise(done => setTimeout(() => done(true), 1000))")  # let them finish opening
        shot = browser.screenshot(tmp_path / "pmirs-ui.png")
        page = state(browser)
    assert shot.stat().st_size > 10_000
    assert not page["exception"], served_ui.log_text()
    assert page["answer"].strip()
    assert any(c.startswith("a photo of a school bus") for c in page["captions"]), page["captions"]
    assert any(INSPECTOR_LABEL in label for label in page["expanders"]), page["expanders"]
