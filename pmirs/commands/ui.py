"""``pmirs ui``: serve the chat UI (Streamlit) on 127.0.0.1 and print its URL."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from pmirs.commands.keys import UsageError, option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ui``."""
    from chatbot.model_files import DEFAULT_MODEL

    p = subparsers.add_parser("ui", help="chat with your private collections in the browser (Streamlit)")
    p.add_argument("--server", help="retriever URL (default: $PMIRS_SERVER)")
    p.add_argument("--keystore-dir", help="folder with one keystore per user (default: $PMIRS_KEYSTORE_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"local LLM name or .gguf path (default {DEFAULT_MODEL})")
    p.add_argument("--max-tokens", type=int, help="most tokens per answer (default 256)")
    p.add_argument("--threads", type=int, help="llama.cpp threads (default 2)")
    p.add_argument("--k", type=int, help="results retrieved per question (default 6)")
    p.add_argument("--encoder", default="lite", help="encoder spec used to index (default lite)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start Streamlit, print the URL, serve until Ctrl-C; the passphrase reaches it via its environment."""
    from pmirs.commands.keys import passphrase
    from ui.launch import start_ui, stop_ui

    server = option(args, "server", "PMIRS_SERVER")
    keystore_dir = option(args, "keystore_dir", "PMIRS_KEYSTORE_DIR")
    if not os.path.isdir(keystore_dir):
        raise UsageError(f"--keystore-dir {keystore_dir} is not a folder")
    secret = None if any(k.startswith("PMIRS_PASSPHRASE_") for k in os.environ) else passphrase()
    handle = start_ui(server, keystore_dir, passphrase=secret, host=args.host, port=args.port, model=args.model,
                      max_tokens=args.max_tokens, n_threads=args.threads, k=args.k, encoder=args.encoder)
    print(f"PMIRS UI: {handle.url}  (Ctrl-C to stop)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops Streamlit too, like Ctrl-C
    # Started in the background by a non-interactive shell, SIGINT arrives ignored; Ctrl-C must still work.
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return handle.proc.wait()
    except KeyboardInterrupt:
        print("stopping the UI", file=sys.stderr)
        return 0
    finally:
        stop_ui(handle)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
