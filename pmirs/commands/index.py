"""``pmirs index DIR``: privately index an ImageFolder tree (resumable; existing items are skipped)."""

from __future__ import annotations

import argparse
import sys

from pmirs.commands.keys import add_client_options, open_client

CHUNK = 256  # images validated, encoded and uploaded per round


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``index``."""
    p = subparsers.add_parser("index", help="encode, obfuscate, encrypt and upload a folder of photos")
    p.add_argument("dir", help="ImageFolder root: <dir>/<label>/*.jpg or <dir>/<domain>/<label>/*.jpg")
    p.add_argument("--collection", required=True, help="local collection name (created if missing)")
    p.add_argument("--encoder", default="lite", help="encoder spec for create_encoder (default: lite)")
    p.add_argument("--encoder-heads", help="heads checkpoint for the lite encoder (e.g. a federated one)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encode/upload batch")
    p.add_argument("--public-label", action="store_true",
                   help="store label and domain as PUBLIC metadata (the server can read and filter on them)")
    p.add_argument("--skip-invalid", action="store_true", help="skip unreadable files instead of stopping")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Scan, check every file, then index in chunks with a progress bar."""
    from tqdm import tqdm

    from middleware.datasets import LabelledImage, photo_caption, scan_image_folder
    from middleware.encoder import create_encoder
    from middleware.payloads import ImageItem, check_image
    from pmirs.errors import InvalidImageError

    found = scan_image_folder(args.dir)
    good, bad = [], []
    for entry in found:
        try:
            check_image(entry.path)
            good.append(entry)
        except InvalidImageError:
            bad.append(entry.path)
    if bad and not args.skip_invalid:
        raise InvalidImageError(f"{len(bad)} unreadable file(s), e.g. {bad[0]} "
                                "(use --skip-invalid to skip them)")
    for path in bad:
        print(f"skipping unreadable file: {path}", file=sys.stderr)

    def item(entry: LabelledImage) -> ImageItem:
        private = {"label": entry.label, "domain": entry.domain,
                   "file": str(entry.path.relative_to(args.dir))}
        public = {"label": entry.label, **({"domain": entry.domain} if entry.domain else {})}
        return ImageItem(entry.path, photo_caption(entry.label), public if args.public_label else None,
                         private)

    encoder = create_encoder(args.encoder, args.encoder_heads)
    added = skipped = 0
    with open_client(args, encoder, batch_size=args.batch_size) as client:
        client.create_collection(args.collection)
        with tqdm(total=len(good), unit="img", desc=f"indexing {args.collection}", file=sys.stderr) as bar:
            for start in range(0, len(good), CHUNK):
                chunk = [item(e) for e in good[start:start + CHUNK]]
                report = client.index_images(args.collection, chunk, progress=bar.update)
                added, skipped = added + report.added, skipped + report.skipped
        total = client.count(args.collection)
    print(f"indexed {args.collection!r}: {added} added, {skipped} already present, {len(bad)} unreadable; "
          f"{total} items stored")
    return 0
