"""``pmirs query``: private top-k search by text or by image; results are decrypted locally."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pmirs.commands.keys import UsageError, add_client_options, open_client


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``query``."""
    p = subparsers.add_parser("query", help="search a collection by text or image")
    p.add_argument("text", nargs="?", help="the query text (or use --image)")
    p.add_argument("--image", help="query by this image instead")
    p.add_argument("--collection", required=True)
    p.add_argument("--k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--where", help='filter on public metadata, JSON, e.g. \'{"label": "dog"}\'')
    p.add_argument("--encoder", default="lite", help="encoder spec (must match the one used to index)")
    p.add_argument("--encoder-heads", help="heads checkpoint for the lite encoder (e.g. a federated one)")
    p.add_argument("--json", action="store_true", help="print results and timings as JSON")
    p.add_argument("--save-images", help="write the retrieved images into this directory")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Encode, obfuscate, send sealed, decrypt, print."""
    from middleware.encoder import create_encoder

    if bool(args.text) == bool(args.image):
        raise UsageError("give either a query text or --image PATH")
    try:
        where = json.loads(args.where) if args.where else None
    except ValueError as e:
        raise UsageError(f"--where is not valid JSON: {e}") from e
    with open_client(args, create_encoder(args.encoder, args.encoder_heads)) as client:
        if args.image:
            result = client.query_image(args.collection, Path(args.image), k=args.k, where=where)
        else:
            result = client.query_text(args.collection, args.text, k=args.k, where=where)
    saved = _save_images(result.items, args.save_images) if args.save_images else {}
    if args.json:
        print(json.dumps({
            "items": [{"id": i.id, "score": round(i.score, 6), "kind": i.kind, "caption": i.caption,
                       "text": i.text, "metadata": i.metadata, "public": i.public,
                       "image_path": saved.get(i.id), "image_bytes": len(i.image_bytes or b"")}
                      for i in result.items],
            "timings_ms": result.timings_ms,
            "rejected": result.rejected,
        }, indent=2))
        return 0
    for rank, i in enumerate(result.items, 1):
        label = i.caption if i.kind == "image" else i.text
        where_saved = f" -> {saved[i.id]}" if i.id in saved else ""
        print(f"{rank:2d}. {i.score:.4f}  {label}  [{i.kind} {i.id[:10]}]{where_saved}")
    print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))
    if result.rejected:
        print(f"warning: {result.rejected} result(s) failed to decrypt and were dropped")
    return 0


def _save_images(items: list, directory: str) -> dict[str, str]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    saved = {}
    for rank, item in enumerate(items, 1):
        if item.image_bytes:
            suffix = ".png" if item.image_bytes.startswith(b"\x89PNG") else ".jpg"
            path = out / f"{rank:02d}-{item.id[:10]}{suffix}"
            path.write_bytes(item.image_bytes)
            saved[item.id] = str(path)
    return saved
