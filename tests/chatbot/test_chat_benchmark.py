"""The chat-turn benchmark: summary maths, and one tiny real run with the small model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.chat_turn import DEFAULT_CONTEXT, _percentile, keyword_retrieve, run_chat_benchmark
from chatbot.grounding import ContextItem
from chatbot.model_files import SMALL_MODEL


def test_percentile_interpolates() -> None:
    assert _percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert _percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert _percentile([7.0], 95) == 7.0


def test_keyword_retrieve_puts_matching_item_first() -> None:
    assert keyword_retrieve("How much did the red bicycle cost?")[0].id == "doc-bike"


@pytest.mark.slow
def test_run_chat_benchmark_small(tmp_path: Path) -> None:
    calls: list[str] = []

    def retrieve(prompt: str) -> list[ContextItem]:
        calls.append(prompt)
        return list(DEFAULT_CONTEXT)

    out = tmp_path / "chat.json"
    prompts = ["How long is the return window?"]
    result = run_chat_benchmark(
        SMALL_MODEL, prompts, out, [5.0], retrieve=retrieve, max_tokens=8, n_threads=1
    )
    assert json.loads(out.read_text()) == result
    assert result["n_turns"] == 1 and result["turns"][0]["used_llm"]
    assert result["turns"][0]["retrieval_ms"] >= 5.0
    assert 0 < result["retrieval_share"] < 1
    assert result["ttft_ms"]["median"] > 0
    assert calls[-1] == "How long is the return window?"


def test_stage_medians_per_retrieval_stage() -> None:
    from benchmarks.chat_turn import stage_medians

    stages = [{"encode": 10.0, "http": 4.0, "total": 14.0}, {"encode": 30.0, "http": 2.0, "total": 32.0},
              {"encode": 20.0, "http": 3.0, "total": 23.0}]
    assert stage_medians(stages) == {"encode": 20.0, "http": 3.0, "total": 23.0}


def test_pmirs_bench_chat_is_registered() -> None:
    from pmirs.cli import build_parser

    args = build_parser().parse_args(["bench", "chat", "--out", "chat.json", "--model", "smollm2-135m",
                                      "--model", "qwen2.5-coder-0.5b", "--limit", "10"])
    assert args.model == ["smollm2-135m", "qwen2.5-coder-0.5b"] and args.limit == 10 and callable(args.func)
