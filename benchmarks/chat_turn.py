"""Latency of one chat turn on the trusted side: retrieval, time to first token, decode speed.

A turn is: retrieve (through the caller's ``retrieve`` callable, or a fixed context) and then a
grounded, streamed answer from the local model. Per prompt we record the time to the first
streamed token (prompt processing dominates it), decode tokens/s after the first token, and the
whole turn; the summary gives median and p95 and the share of turn time spent in retrieval.

Example:
    >>> from pathlib import Path
    >>> run_chat_benchmark("smollm2-135m", DEFAULT_PROMPTS, Path("runs/bench/chat-smollm2.json"))

``pmirs bench chat --out chat.json [--model NAME ...]`` measures the same with real private
retrieval: it starts a retriever on 127.0.0.1, indexes ``data/demo`` with the lite encoder and
times :data:`DEMO_PROMPTS` (see :func:`private_demo_retrieval`); the service is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.output import write_json
from chatbot.grounding import ContextItem, GroundedAnswer, GroundedChat
from chatbot.llm import LLMSettings, LocalLLM
from chatbot.memory import STOPWORDS

# A small private collection the default prompts are answerable from.
DEFAULT_CONTEXT: tuple[ContextItem, ...] = (
    ContextItem("doc-returns", "text", text="The store's return window is 30 days.", score=0.82),
    ContextItem("img-cat", "image", caption="a photo of a tabby cat asleep on a red sofa", score=0.71),
    ContextItem("doc-bike", "text", text="The red bicycle was bought in May 2023 for 450 euros.", score=0.66),
    ContextItem("img-beach", "image", caption="a photo of a sandy beach at sunset", score=0.52),
    ContextItem("doc-wifi", "text", text="The guest Wi-Fi password is written on the fridge.", score=0.41),
)
_WORD = re.compile(r"[a-z0-9-]{3,}")
DEFAULT_PROMPTS: tuple[str, ...] = (
    "How long is the return window?",
    "What is the cat sleeping on?",
    "How much did the red bicycle cost?",
    "Do I have a photo of a beach?",
    "Where is the Wi-Fi password?",
)


def keyword_retrieve(prompt: str) -> list[ContextItem]:
    """Stand-in retrieval over :data:`DEFAULT_CONTEXT`: items re-scored by words shared with ``prompt``.

    Each prompt gets its own item order, as real retrieval gives, so llama.cpp's prompt-prefix
    reuse only covers the system prompt, not the whole context (which would flatter the TTFT).
    """
    words = set(_WORD.findall(prompt.lower())) - STOPWORDS
    scored = []
    for item in DEFAULT_CONTEXT:
        overlap = len(words & set(_WORD.findall(f"{item.caption} {item.text}".lower())))
        scored.append(replace(item, score=round(0.3 + 0.1 * overlap + item.score / 100, 3)))
    return sorted(scored, key=lambda it: it.score, reverse=True)


def run_chat_benchmark(
    model: str,
    prompts: Sequence[str],
    out: Path,
    retrieval_ms: list[float] | None = None,
    *,
    retrieve: Callable[[str], Sequence[ContextItem]] | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    max_tokens: int = 64,
    threshold: float = 0.3,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Time one grounded, streamed turn per prompt with ``model`` and write the summary as JSON.

    Args:
        model: a model name (``chatbot.model_files.list_models()``) or a GGUF path.
        prompts: the user questions, one turn each (the first run is preceded by one untimed
            warm-up turn so one-off allocation does not count).
        out: the JSON file to write (folders are created).
        retrieval_ms: retrieval times measured elsewhere, one per prompt, added to each turn.
        retrieve: called with each prompt to get its items; its wall time counts as the turn's
            retrieval time (added to ``retrieval_ms`` if both are given). Default:
            :func:`keyword_retrieve` over the built-in :data:`DEFAULT_CONTEXT`.

    Returns:
        The summary written to ``out`` (times in milliseconds).
    """
    result = measure_chat(model, prompts, retrieval_ms, retrieve=retrieve, n_ctx=n_ctx, n_threads=n_threads,
                          max_tokens=max_tokens, threshold=threshold, cache_dir=cache_dir)
    write_json(out, result)
    return result


def measure_chat(
    model: str,
    prompts: Sequence[str],
    retrieval_ms: list[float] | None = None,
    *,
    retrieve: Callable[[str], Sequence[ContextItem]] | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    max_tokens: int = 64,
    threshold: float = 0.3,
    cache_dir: Path | None = None,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """What :func:`run_chat_benchmark` measures, returned instead of written (``system_prompt``: None = default)."""
    if retrieval_ms is not None and len(retrieval_ms) != len(prompts):
        raise ValueError(f"retrieval_ms has {len(retrieval_ms)} entries for {len(prompts)} prompts")
    if not prompts:
        raise ValueError("no prompts to benchmark")
    settings = LLMSettings(
        model=model, n_ctx=n_ctx, n_threads=n_threads, max_tokens=max_tokens, cache_dir=cache_dir
    )
    t = time.perf_counter()
    llm = LocalLLM(settings)
    load_s = time.perf_counter() - t
    chat = GroundedChat(llm, threshold=threshold, **({"system_prompt": system_prompt} if system_prompt else {}))
    retrieve = retrieve or keyword_retrieve
    # Untimed warm-up on its own context: it caches only what every real turn shares (the system
    # prompt), so no measured turn reuses a whole cached context.
    warm_up = [ContextItem("warm-up", "text", text="A warm-up note.", score=1.0)]
    _timed_turn(chat, "What is this note?", warm_up)
    turns = []
    for i, prompt in enumerate(prompts):
        r_ms = retrieval_ms[i] if retrieval_ms is not None else 0.0
        t = time.perf_counter()
        items = retrieve(prompt)
        r_ms += (time.perf_counter() - t) * 1000
        turn = _timed_turn(chat, prompt, items)
        turn["retrieval_ms"] = r_ms
        turn["turn_ms"] = r_ms + turn["generation_ms"]
        turns.append(turn)
    llm.close()
    summary = _summarise(turns)
    result = {
        "model": str(model),
        "model_file": llm.model_name,
        "n_ctx": n_ctx,
        "n_threads": n_threads,
        "max_tokens": max_tokens,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
        "load_s": round(load_s, 3),
        **summary,
        "turns": turns,
    }
    return result


def _timed_turn(chat: GroundedChat, prompt: str, items: Sequence[ContextItem]) -> dict[str, Any]:
    """Stream one grounded answer and time it; the fixed not-found answer counts as instant."""
    prompt_tokens = sum(chat.llm.count_tokens(m["content"]) for m in chat.prompt(prompt, items).messages)
    t0 = time.perf_counter()
    first: float | None = None
    final: GroundedAnswer | None = None
    for part in chat.stream(prompt, items):
        if isinstance(part, GroundedAnswer):
            final = part
        elif first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    answer = final.answer if final else ""
    n_tokens = chat.llm.count_tokens(answer)
    decode_s = end - first
    return {
        "prompt": prompt,
        "prompt_tokens": prompt_tokens,
        "answer": answer,
        "cited": [it.id for it in final.cited] if final else [],
        "used_llm": bool(final and final.used_llm),
        "answer_tokens": n_tokens,
        "ttft_ms": (first - t0) * 1000,
        "tokens_per_s": (n_tokens - 1) / decode_s if n_tokens > 1 and decode_s > 0 else 0.0,
        "generation_ms": (end - t0) * 1000,
    }


def _summarise(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/p95 of the per-turn times, decode speed, and the retrieval share of total turn time."""

    def stats(key: str) -> dict[str, float]:
        values = [float(t[key]) for t in turns]
        return {"median": round(statistics.median(values), 2), "p95": round(_percentile(values, 95), 2)}

    total_turn = sum(t["turn_ms"] for t in turns)
    total_retrieval = sum(t["retrieval_ms"] for t in turns)
    return {
        "n_turns": len(turns),
        "ttft_ms": stats("ttft_ms"),
        "tokens_per_s": {  # slow turns are the low ones here, so the minimum instead of a p95
            "median": round(statistics.median(t["tokens_per_s"] for t in turns), 2),
            "min": round(min(t["tokens_per_s"] for t in turns), 2),
        },
        "turn_ms": stats("turn_ms"),
        "retrieval_ms": stats("retrieval_ms"),
        "retrieval_share": round(total_retrieval / total_turn, 4) if total_turn else 0.0,
    }


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default), without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- `pmirs bench chat`: real private retrieval against a service started here ------------------------

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
# Answerable from data/demo; each retrieves a different photo, so no turn reuses another's context.
DEMO_PROMPTS: tuple[str, ...] = (
    "Do I have a photo of a sports car?",
    "Is there a picture of a koala?",
    "Show me the photo of a pizza.",
    "Do I have a photo of a teddy bear?",
    "Is there a picture of a school bus?",
    "Do I have a photo of an espresso?",
)


@dataclass
class PrivateRetrieval:
    """``retrieve`` for :func:`measure_chat`: private top-k over a live service, stage times kept."""

    middleware: Any  # a PrivacyMiddleware
    collection: str
    k: int = 4
    stages: list[dict[str, float]] = field(default_factory=list)  # QueryResult.timings_ms per call

    def __call__(self, prompt: str) -> list[ContextItem]:
        from chatbot.assistant import context_item

        result = self.middleware.query_text(self.collection, prompt, k=self.k)
        self.stages.append(result.timings_ms)
        return [context_item(item) for item in result.items]


@contextmanager
def private_demo_retrieval(workdir: Path, demo_dir: Path = DEMO_DIR, *, k: int = 4,
                           limit: int | None = None) -> Iterator[tuple[PrivateRetrieval, dict[str, Any]]]:
    """Start a retriever, index the demo photos privately (lite encoder), yield the retrieval and setup facts.

    The service is stopped on exit. One untimed query does the handshake before any turn is timed.
    """
    import secrets

    from middleware.client import PrivacyMiddleware
    from middleware.datasets import photo_caption, scan_image_folder
    from middleware.encoder import create_encoder
    from middleware.keystore import Keystore
    from middleware.payloads import ImageItem
    from retriever.testing import ServiceProcess, register_user

    photos = scan_image_folder(demo_dir)[:limit]
    encoder = create_encoder("lite")
    with ServiceProcess(workdir / "service") as service:
        keystore = Keystore.create(workdir / "bench.keys", secrets.token_hex(16), "bench", scrypt_n=2**10)
        register_user(service.data_dir, "bench", keystore.identity_public_key.hex(), "bench")
        keystore.pin_server(service.url, service.fingerprint)
        with PrivacyMiddleware(service.url, keystore, encoder) as pm:
            pm.create_collection("demo")
            t = time.perf_counter()
            pm.index_images("demo", [ImageItem(e.path, photo_caption(e.label)) for e in photos])
            setup = {"encoder": encoder.version, "photos": len(photos), "k": k,
                     "index_s": round(time.perf_counter() - t, 2)}
            retrieval = PrivateRetrieval(pm, "demo", k)
            retrieval("warm-up query")  # handshake and first-call costs are not part of a turn
            retrieval.stages.clear()
            yield retrieval, setup


def stage_medians(stages: Sequence[dict[str, float]]) -> dict[str, float]:
    """Median per retrieval stage (encode, obfuscate, encrypt, http, server_search, decrypt, total)."""
    keys = sorted({key for s in stages for key in s})
    return {key: round(statistics.median(s.get(key, 0.0) for s in stages), 2) for key in keys}


def register_bench(sub: argparse._SubParsersAction) -> None:
    """``pmirs bench chat``: TTFT, tokens/s and retrieval share with real private retrieval."""
    from chatbot.model_files import DEFAULT_MODEL

    p = sub.add_parser("chat", help="chat-turn latency: private retrieval (live service, demo photos) + local LLM")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--model", action="append",
                   help=f"model name or .gguf path; repeat to compare (default {DEFAULT_MODEL})")
    p.add_argument("--max-tokens", type=int, default=64, help="answer length cap (default 64)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    p.add_argument("--k", type=int, default=4, help="items retrieved per turn (default 4)")
    p.add_argument("--demo-dir", default=str(DEMO_DIR), help="ImageFolder tree to index (default data/demo)")
    p.add_argument("--limit", type=int, help="index only the first N photos (quicker setup)")
    p.set_defaults(func=_run_bench, default_model=DEFAULT_MODEL)


def _run_bench(args: argparse.Namespace) -> int:
    import tempfile

    from chatbot.assistant import COLLECTION_SYSTEM_PROMPT, DEFAULT_THRESHOLD

    models = args.model or [args.default_model]
    runs = []
    with tempfile.TemporaryDirectory(prefix="pmirs-bench-chat-") as tmp:
        print("starting a retriever and indexing the demo photos privately...", file=sys.stderr)
        with private_demo_retrieval(Path(tmp), Path(args.demo_dir), k=args.k, limit=args.limit) as (retrieve, setup):
            for model in models:
                print(f"timing {len(DEMO_PROMPTS)} turns with {model}...", file=sys.stderr)
                retrieve.stages.clear()
                result = measure_chat(model, list(DEMO_PROMPTS), retrieve=retrieve, n_threads=args.threads,
                                      max_tokens=args.max_tokens, threshold=DEFAULT_THRESHOLD,
                                      system_prompt=COLLECTION_SYSTEM_PROMPT)
                result["retrieval_stages_ms"] = stage_medians(retrieve.stages)
                runs.append(result)
    report = {"benchmark": "chat", "retrieval": {"private": True, **setup}, "runs": runs}
    out = write_json(args.out, report)
    for r in runs:
        print(f"{r['model_file']}: TTFT median {r['ttft_ms']['median']:.0f} ms (p95 {r['ttft_ms']['p95']:.0f}), "
              f"{r['tokens_per_s']['median']:.1f} tokens/s, turn median {r['turn_ms']['median']:.0f} ms, "
              f"retrieval median {r['retrieval_ms']['median']:.0f} ms = {100 * r['retrieval_share']:.1f}% of turn time")
    print(f"wrote {out}")
    return 0
