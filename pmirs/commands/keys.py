"""``pmirs keys``: the user's keystore (create, pin a server, share, accept, rotate).

Also holds the options every client command shares: ``--server`` / ``--keystore`` fall back to
``PMIRS_SERVER`` / ``PMIRS_KEYSTORE``, the passphrase comes from ``PMIRS_PASSPHRASE`` or, on a
terminal only, a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from pmirs.errors import KeystoreError, NotFoundError, PMIRSError


class UsageError(PMIRSError):
    """A required option is missing (and not in the environment)."""


def add_client_options(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    """``--keystore`` (and ``--server``), both with environment fallbacks."""
    parser.add_argument("--keystore", help="keystore file (default: $PMIRS_KEYSTORE)")
    if server:
        parser.add_argument("--server", help="retriever URL (default: $PMIRS_SERVER)")


def option(args: argparse.Namespace, name: str, env: str) -> str:
    """An option's value, else the environment variable's, else a clear error."""
    value = getattr(args, name, None) or os.environ.get(env)
    if not value:
        raise UsageError(f"--{name.replace('_', '-')} is required (or set {env})")
    return value


def passphrase(*, confirm: bool = False) -> str:
    """``PMIRS_PASSPHRASE``, else a getpass prompt when stdin is a terminal."""
    value = os.environ.get("PMIRS_PASSPHRASE")
    if value:
        return value
    if not sys.stdin.isatty():
        raise UsageError("set PMIRS_PASSPHRASE (no terminal to prompt for the keystore passphrase)")
    value = getpass.getpass("keystore passphrase: ")
    if confirm and getpass.getpass("repeat passphrase: ") != value:
        raise UsageError("the passphrases differ")
    return value


def open_keystore(args: argparse.Namespace) -> Any:
    """Open the keystore named by the options; a wrong passphrase is a ``KeystoreError``."""
    from middleware.keystore import Keystore

    path = Path(option(args, "keystore", "PMIRS_KEYSTORE"))
    if not path.is_file():
        raise KeystoreError(f"no keystore at {path}: run `pmirs keys init` first")
    return Keystore.open(path, passphrase())


def open_client(args: argparse.Namespace, encoder: Any, **options: Any) -> Any:
    """A :class:`PrivacyMiddleware` for the options' server and keystore (``options`` go to it)."""
    from middleware.client import PrivacyMiddleware

    return PrivacyMiddleware(option(args, "server", "PMIRS_SERVER"), open_keystore(args), encoder, **options)


def _read_json(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read JSON from {path}: {e}") from e


def _write_or_print(data: dict[str, Any], out: str | None) -> None:
    text = json.dumps(data, indent=2)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``keys init|pin|public|list|share|accept|rotate``."""
    p = subparsers.add_parser("keys", help="manage your keystore (identity and collection keys)")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    init = sub.add_parser("init", help="create a keystore and print the public key to register")
    add_client_options(init)
    init.add_argument("--user", required=True, help="your user id at the retriever")
    init.add_argument("--export", help="also write the public key JSON to this file")
    init.set_defaults(func=_init)

    pin = sub.add_parser("pin", help="pin a retriever's identity fingerprint")
    pin.add_argument("url")
    pin.add_argument("fingerprint")
    add_client_options(pin, server=False)
    pin.set_defaults(func=_pin)

    public = sub.add_parser("public", help="print your public key JSON (for `pmirs users add` or shares)")
    add_client_options(public, server=False)
    public.add_argument("--out", help="write to this file instead of stdout")
    public.set_defaults(func=_public)

    ls = sub.add_parser("list", help="list collections and their key versions")
    add_client_options(ls, server=False)
    ls.set_defaults(func=_list)

    share = sub.add_parser("share", help="wrap a collection's keys for another user")
    share.add_argument("collection")
    share.add_argument("--to", required=True, help="the recipient's public key JSON file")
    share.add_argument("--out", help="write the share to this file instead of stdout")
    add_client_options(share, server=False)
    share.set_defaults(func=_share)

    accept = sub.add_parser("accept", help="store a collection share addressed to you")
    accept.add_argument("file")
    accept.add_argument("--from", dest="sender", help="the sender's public key JSON (checks who sent it)")
    accept.add_argument("--name", help="store under this local name")
    add_client_options(accept, server=False)
    accept.set_defaults(func=_accept)

    rotate = sub.add_parser("rotate", help="re-key a collection (re-projects every stored vector)")
    rotate.add_argument("collection")
    add_client_options(rotate)
    rotate.set_defaults(func=_rotate)


def _init(args: argparse.Namespace) -> int:
    from middleware.keystore import Keystore
    from middleware.transport import fetch_server_fingerprint

    path = Path(option(args, "keystore", "PMIRS_KEYSTORE"))
    if path.exists():
        raise KeystoreError(f"keystore {path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    keystore = Keystore.create(path, passphrase(confirm=True), args.user)
    public = keystore.export_public()
    if args.export:
        _write_or_print(public, args.export)
    print(json.dumps(public, indent=2))
    print(f"created {path}; ask the retriever admin to run:\n"
          f"  pmirs users add {args.user} --public-key <this JSON or {public['identity_key']}> --tenant T "
          "--data-dir DIR", file=sys.stderr)
    server = args.server or os.environ.get("PMIRS_SERVER")
    if server:
        fingerprint = fetch_server_fingerprint(server)
        keystore.pin_server(server.rstrip("/"), fingerprint)
        print(f"pinned {server} -> {fingerprint}\n  (trust on first use: compare it with the fingerprint the "
              "operator printed)", file=sys.stderr)
    return 0


def _pin(args: argparse.Namespace) -> int:
    keystore = open_keystore(args)
    try:
        keystore.pin_server(args.url.rstrip("/"), args.fingerprint)
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(f"pinned {args.url}")
    return 0


def _public(args: argparse.Namespace) -> int:
    _write_or_print(open_keystore(args).export_public(), args.out)
    return 0


def _list(args: argparse.Namespace) -> int:
    keystore = open_keystore(args)
    for name in keystore.list_collections():
        keys = keystore.collection(name)
        print(f"{name}\tkey version {keys.key_version}\ttenant {keys.tenant}\tencoder {keys.encoder_version}")
    return 0


def _share(args: argparse.Namespace) -> int:
    keystore = open_keystore(args)
    try:
        wrapped = keystore.share_collection(args.collection, _read_json(args.to))
    except KeyError as e:
        raise NotFoundError(f"no collection {args.collection!r} in the keystore") from e
    _write_or_print(wrapped, args.out)
    return 0


def _accept(args: argparse.Namespace) -> int:
    keystore = open_keystore(args)
    sender = _read_json(args.sender) if args.sender else None
    try:
        keys = keystore.accept_share(_read_json(args.file), sender, name=args.name)
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(f"accepted collection {keys.name!r} (key version {keys.key_version})"
          + ("" if sender else "; sender not verified (pass --from)"))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    with open_client(args, encoder=None) as client:
        report = client.rotate_collection(args.collection)
    print(f"re-keyed {args.collection!r}: {report['moved']} items moved from key version "
          f"{report['old_version']} to {report['new_version']}")
    return 0
