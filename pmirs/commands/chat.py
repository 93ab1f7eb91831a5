"""``pmirs chat``: a terminal conversation grounded in a private collection, or the shop bot.

Lines are read from stdin, so the REPL also runs piped (``printf 'q1\\nq2\\n' | pmirs chat ...``).
Commands: ``/image PATH [question]`` asks about a photo, ``/reset`` starts over, ``/quit`` ends.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator
from typing import Any

from pmirs.commands.ask import add_assistant_options, check_image, load_llm, print_sources, stream_reply
from pmirs.commands.keys import UsageError, open_client
from pmirs.errors import PMIRSError

BOTS = ("general", "customer-service")
HELP = ("type a question; /image PATH [question] asks about a photo; /reset starts a new conversation; "
        "/quit ends")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``chat``."""
    p = subparsers.add_parser("chat", help="chat with the local LLM over a private collection (or the shop bot)")
    p.add_argument("--bot", choices=BOTS, default="general",
                   help="general: grounded chat over --collection; customer-service: the shop assistant")
    p.add_argument("--no-index", action="store_true",
                   help="customer-service: do not (re)index the catalogue first (it is skipped if present)")
    add_assistant_options(p, collection_help="collection to chat over (repeat for several; "
                                             "customer-service default: shop)")
    p.set_defaults(func=run)


def _lines(stream: Any) -> Iterator[str]:
    """User lines: prompted with ``input`` on a terminal, read plainly when piped."""
    if stream.isatty():
        while True:
            try:
                yield input("you> ")
            except EOFError:
                return
    else:
        yield from stream


def run(args: argparse.Namespace) -> int:
    """Open the client and the model, then answer line by line until EOF or /quit."""
    from chatbot.assistant import create_assistant
    from middleware.encoder import create_encoder

    shop = args.bot == "customer-service"
    collections = args.collection or (["shop"] if shop else None)
    if not collections:
        raise UsageError("--collection is required (or use --bot customer-service)")
    if args.k < 1:
        raise UsageError("--k must be at least 1")
    with open_client(args, create_encoder(args.encoder, args.encoder_heads)) as client:
        llm = load_llm(args)
        if shop:
            from chatbot.customer_service import CustomerServiceBot, index_catalogue

            if len(collections) != 1:
                raise UsageError("the customer-service bot uses one collection")
            if not args.no_index:
                print(f"checking the catalogue in {collections[0]!r}...", file=sys.stderr)
                index_catalogue(client, collections[0])
            bot: Any = CustomerServiceBot(client, llm, collections[0], k=args.k, threshold=args.threshold,
                                          text_threshold=args.text_threshold)
            default_photo_question = "Do you sell this?"
        else:
            bot = create_assistant(client, collections, llm, k=args.k, threshold=args.threshold,
                                   text_threshold=args.text_threshold)
            default_photo_question = "What is this?"
        if sys.stdin.isatty():
            print(HELP, file=sys.stderr)
        echo = not sys.stdin.isatty()  # piped input is not on screen: echo it for a readable transcript
        for line in _lines(sys.stdin):
            if not _turn(bot, line.strip(), default_photo_question, echo):
                break
    return 0


def _turn(bot: Any, line: str, default_photo_question: str, echo: bool) -> bool:
    """Handle one input line; False ends the conversation. Errors are printed, not fatal."""
    if not line:
        return True
    if line in ("/quit", "/exit"):
        return False
    if line == "/help":
        print(HELP)
        return True
    if line == "/reset":
        bot.reset()
        print("(new conversation)")
        return True
    image = None
    question = line
    try:
        if line.startswith("/image"):
            words = shlex.split(line[len("/image"):])
            if not words:
                raise UsageError("usage: /image PATH [question]")
            image = check_image(words[0])
            question = " ".join(words[1:]) or default_photo_question
        elif line.startswith("/"):
            raise UsageError(f"unknown command {line.split()[0]}; {HELP}")
        if echo or image:
            print(f"you: {question}" + (f" [photo {image.name}]" if image else ""))
        reply = stream_reply(bot.stream(question, image), prefix="bot: ")
        print_sources(reply)
    except (PMIRSError, ValueError) as e:
        print(f"error: {e}")
    return True
