"""``pmirs ask "question"``: one grounded answer from a private collection, with its sources.

Also holds what ``pmirs chat`` shares with it: the model / retrieval options and how a reply and
its cited items are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pmirs.commands.keys import UsageError, add_client_options, open_client


def add_assistant_options(p: argparse.ArgumentParser, *, collection_help: str) -> None:
    """Collection, retrieval, model and client options common to ``ask`` and ``chat``."""
    from chatbot.model_files import DEFAULT_MODEL

    p.add_argument("--collection", action="append", help=collection_help)
    p.add_argument("--k", type=int, default=4, help="items retrieved per question (default 4)")
    p.add_argument("--threshold", type=float,
                   help="minimum relevance of an image item (default: calibrated for the encoder's heads)")
    p.add_argument("--text-threshold", type=float,
                   help="minimum relevance of a text item (default: calibrated for the encoder's heads)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or .gguf path (default {DEFAULT_MODEL})")
    p.add_argument("--max-tokens", type=int, default=256, help="longest answer in tokens (default 256)")
    p.add_argument("--n-ctx", type=int, default=4096, help="model context window in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    p.add_argument("--encoder", default="lite", help="encoder spec (must match the one used to index)")
    p.add_argument("--encoder-heads", help="heads checkpoint for the lite encoder (e.g. a federated one)")
    add_client_options(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ask``."""
    p = subparsers.add_parser("ask", help="answer a question from a private collection with the local LLM")
    p.add_argument("question", nargs="?", help='the question (with --image default: "What is this?")')
    p.add_argument("--image", help="ask about this photo (searched by image)")
    p.add_argument("--json", action="store_true", help='print {"answer", "items": [{"id", "caption", "score"}]}')
    add_assistant_options(p, collection_help="collection to search (repeat for several; required)")
    p.set_defaults(func=run)


def load_llm(args: argparse.Namespace) -> Any:
    """The local model named by the options (a seam the tests replace with their shared model)."""
    from chatbot.llm import LLMSettings, LocalLLM

    try:
        settings = LLMSettings(model=args.model, n_ctx=args.n_ctx, max_tokens=args.max_tokens, n_threads=args.threads)
    except ValueError as e:
        raise UsageError(str(e)) from e
    return LocalLLM(settings)


def check_image(path: str | None) -> Path | None:
    """The ``--image`` / ``/image`` path, refused early when it is not a file."""
    if path is None:
        return None
    image = Path(path).expanduser()
    if not image.is_file():
        raise UsageError(f"no such image file: {image}")
    return image


def run(args: argparse.Namespace) -> int:
    """Retrieve privately, answer with the local model, print answer and sources."""
    from chatbot.assistant import create_assistant
    from middleware.encoder import create_encoder

    if not args.collection:
        raise UsageError("--collection is required")
    image = check_image(args.image)
    if not image and not (args.question or "").strip():
        raise UsageError("give a question, or --image PATH")
    if args.k < 1:
        raise UsageError("--k must be at least 1")
    with open_client(args, create_encoder(args.encoder, args.encoder_heads)) as client:
        assistant = create_assistant(client, args.collection, load_llm(args), k=args.k, threshold=args.threshold,
                                     text_threshold=args.text_threshold)
        if args.json:
            reply = assistant.ask(args.question or "", image)
            print(json.dumps(reply_json(reply), indent=2))
            return 0
        reply = stream_reply(assistant.stream(args.question or "", image))
    print_sources(reply)
    return 0


def reply_json(reply: Any) -> dict[str, Any]:
    """The ``--json`` document: answer, cited items (id, caption, score, kind), and timings."""
    return {
        "answer": reply.answer,
        "items": [{"id": it.id, "caption": it.caption, "score": round(it.score, 4), "kind": it.kind}
                  for it in reply.items],
        "used_llm": reply.used_llm,
        "handoff": reply.handoff,
        "timings_ms": reply.timings_ms,
    }


def stream_reply(parts: Any, prefix: str = "") -> Any:
    """Print answer pieces as they come; return the final reply."""
    from chatbot.assistant import AssistantReply

    print(prefix, end="", flush=True)
    reply = None
    for part in parts:
        if isinstance(part, AssistantReply):
            reply = part
        else:
            print(part, end="", flush=True)
    print()
    if reply is None:
        raise RuntimeError("the assistant gave no reply")
    return reply


def print_sources(reply: Any, out: Any = None) -> None:
    """The cited items (price too when the private metadata has one), hand-off reason, and timings."""
    out = out or sys.stdout
    label = "likely source" if reply.cited_inferred else "sources"
    shown = reply.items
    if not shown and reply.used_llm and reply.retrieved:  # nothing cited: show what the answer was based on
        label, shown = "closest match", reply.retrieved[:1]
    if shown:
        print(f"  {label}:", file=out)
    for n, it in enumerate(shown, 1):
        price = f" - {it.metadata['price']:.2f} {it.metadata.get('currency', '')}".rstrip() \
            if isinstance(it.metadata.get("price"), int | float) else ""
        print(f"  [{n}] {it.caption}{price}  ({it.kind}, score {it.score:.2f}, id {it.id[:10]})", file=out)
    if reply.handoff:
        print(f"  (handed off: {reply.handoff})", file=out)
    t = reply.timings_ms
    parts = [f"retrieval {t['retrieval_total']:.0f} ms" if "retrieval_total" in t else "",
             f"first token {t['ttft']:.0f} ms" if "ttft" in t else "", f"total {t.get('total', 0):.0f} ms"]
    print("  (" + ", ".join(p for p in parts if p) + ")", file=out)
