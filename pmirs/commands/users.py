"""``pmirs users``: the retriever admin registers users' public keys (and their tenant)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``users add|list|remove``."""
    p = subparsers.add_parser("users", help="manage the users a retriever accepts (admin, on the server)")
    sub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    add = sub.add_parser("add", help="register a user's public key (from `pmirs keys init`)")
    add.add_argument("user_id")
    add.add_argument("--public-key", required=True,
                     help="file with the exported public JSON, or the Ed25519 public key in hex/base64url")
    add.add_argument("--tenant", required=True, help="namespace of the user's collections")
    add.add_argument("--data-dir", required=True, help="the retriever's data directory")
    add.add_argument("--replace", action="store_true", help="replace an existing user's key or tenant")
    add.set_defaults(func=_add)

    ls = sub.add_parser("list", help="list registered users")
    ls.add_argument("--data-dir", required=True)
    ls.set_defaults(func=_list)

    rm = sub.add_parser("remove", help="unregister a user")
    rm.add_argument("user_id")
    rm.add_argument("--data-dir", required=True)
    rm.set_defaults(func=_remove)


def _read_key(value: str) -> str:
    path = Path(value)
    return path.read_text(encoding="utf-8") if path.is_file() else value


def _add(args: argparse.Namespace) -> int:
    from retriever.users import UserRegistry

    record = UserRegistry(Path(args.data_dir)).add(args.user_id, _read_key(args.public_key), args.tenant,
                                                   replace=args.replace)
    print(f"registered {record.user_id} (tenant {record.tenant}, key {record.public_key[:16]}...)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from retriever.users import UserRegistry

    for record in UserRegistry(Path(args.data_dir)).list_users():
        print(f"{record.user_id}\t{record.tenant}\t{record.public_key}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from retriever.users import UserRegistry

    if not UserRegistry(Path(args.data_dir)).remove(args.user_id):
        print(f"no such user: {args.user_id}")
        return 1
    print(f"removed {args.user_id} (its live sessions end when the server restarts or they expire)")
    return 0
