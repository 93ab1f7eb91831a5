"""One small real model (SmolLM2-135M, ~100 MB) shared by every slow chatbot test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatbot.llm import LLMSettings, LocalLLM
from chatbot.model_files import SMALL_MODEL

# Greedy decoding so invoke and stream give the same text; short answers keep the suite fast.
SMALL_SETTINGS = LLMSettings(
    model=SMALL_MODEL, n_ctx=2048, n_threads=1, max_tokens=48, temperature=0.0, seed=0
)


@pytest.fixture(scope="session")
def small_llm() -> Iterator[LocalLLM]:
    """Loaded once per session: loading costs ~0.2 s but each instance holds its own KV cache."""
    llm = LocalLLM(SMALL_SETTINGS)
    yield llm
    llm.close()
