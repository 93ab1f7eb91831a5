"""``pmirs reindex COLLECTION``: re-embed a collection after a new encoder version.

Vectors from different encoder versions are not comparable, so after new heads (for example a
federated checkpoint) every stored item is decrypted on this machine, embedded again, projected
with a fresh key and swapped in atomically; queries keep working on the old version meanwhile.
"""

from __future__ import annotations

import argparse

from pmirs.commands.keys import add_client_options, open_client


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reindex``."""
    p = subparsers.add_parser("reindex", help="re-embed every item of a collection with a new encoder version")
    p.add_argument("collection")
    p.add_argument("--encoder", default="lite", help="encoder spec for the new vectors (default: lite)")
    p.add_argument("--encoder-heads", help="heads checkpoint for the lite encoder (e.g. a federated one)")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Re-embed and swap; prints the old and new encoder versions."""
    from middleware.encoder import create_encoder

    encoder = create_encoder(args.encoder, args.encoder_heads)
    with open_client(args, encoder) as client:
        report = client.reindex_collection(args.collection)
    print(f"re-indexed {args.collection!r} with encoder {encoder.version}: {report['moved']} items, "
          f"key version {report['old_version']} -> {report['new_version']}")
    return 0
