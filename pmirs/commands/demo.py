"""``pmirs demo``: the whole system on one machine, end to end (what ``make demo`` runs).

It starts a retriever on 127.0.0.1, makes two users (alice and bob, tenant ``demo``) with their
own keystores, privately indexes the demo photos as alice's ``photos`` collection, shares that
collection with bob, gives bob a small private collection of his own, runs a few text queries
and an image query, prints the decrypted results and the per-stage latency, and stops the
service. Everything lives in the workspace (default ``runs/demo/``), so a second run reuses the
keys and skips every photo already indexed.

Other parts of PMIRS reuse the setup through :func:`prepare_demo`::

    with prepare_demo(Path("runs/demo"), encoder=encoder) as env:
        with env.client("alice", encoder) as pm:
            print(pm.query_text("photos", "a striped wild cat").items)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleware.datasets import DEMO_PHOTOS as DEMO_DIR

DEFAULT_WORKSPACE = Path("runs/demo")
DEMO_PASSPHRASE = "pmirs-demo-passphrase"  # printed on purpose: demo keystores protect demo photos only
TENANT = "demo"
SHOP_COLLECTION = "shop"  # the customer-service catalogue (pmirs chat --bot customer-service)
USERS = ("alice", "bob")
ALICE_COLLECTION = "photos"
SHARED_NAME = "alice-photos"  # bob's local name for alice's shared collection
BOB_COLLECTION = "bob-photos"
BOB_PHOTOS = 4
DEMO_QUERIES = ("a striped wild cat", "something to eat for breakfast", "a vehicle that runs on rails")
STAGES = ("encode", "obfuscate", "encrypt", "http", "server_search", "decrypt", "total")

# HOOK(catalogue): callables run with alice's client after her photos are indexed, e.g. the
# customer-service catalogue's index function: ``lambda env, client: index_catalogue(client, ...)``.
Indexer = Callable[["DemoEnv", Any], None]


@dataclass
class DemoEnv:
    """A running demo: where the server is, whose keystores are where, which collections exist.

    ``collections`` maps each user to the local collection names their keystore holds keys for.
    ``service`` is the retriever process this environment started (stopped by :meth:`stop`).
    """

    workspace: Path
    server_url: str
    fingerprint: str
    keystores: dict[str, Path]
    passphrase: str
    collections: dict[str, list[str]] = field(default_factory=dict)
    photos: list[Path] = field(default_factory=list)
    service: Any = None

    def open_keystore(self, user: str) -> Any:
        """The user's :class:`~middleware.keystore.Keystore`, opened with the demo passphrase."""
        from middleware.keystore import Keystore

        return Keystore.open(self.keystores[user], self.passphrase)

    def client(self, user: str, encoder: Any, **options: Any) -> Any:
        """A :class:`~middleware.client.PrivacyMiddleware` for ``user`` against the demo server."""
        from middleware.client import PrivacyMiddleware

        return PrivacyMiddleware(self.server_url, self.open_keystore(user), encoder, **options)

    def stop(self) -> None:
        """Stop the retriever if this environment started it."""
        if self.service is not None:
            self.service.stop()

    def __enter__(self) -> DemoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _keystore(path: Path, passphrase: str, user: str) -> Any:
    from middleware.keystore import Keystore

    if path.exists():
        return Keystore.open(path, passphrase)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Keystore.create(path, passphrase, user)


def _spread(found: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` photos spread evenly over the (domain-sorted) list, so every domain is represented."""
    if limit is None or limit >= len(found):
        return list(found)
    step = len(found) / limit
    return [found[int(i * step)] for i in range(limit)]


def _index(client: Any, collection: str, photos: Sequence[Any], desc: str, progress: bool) -> tuple[int, int]:
    from tqdm import tqdm

    from middleware.datasets import photo_caption
    from middleware.payloads import ImageItem

    items = [ImageItem(p.path, photo_caption(p.label), None,
                       {"label": p.label, "domain": p.domain, "file": p.path.name}) for p in photos]
    client.create_collection(collection)
    with tqdm(total=len(items), desc=desc, unit="photo", disable=not progress, file=sys.stderr) as bar:
        report = client.index_images(collection, items, progress=bar.update)
    return report.added, report.skipped


def prepare_demo(workspace: Path = DEFAULT_WORKSPACE, *, encoder: Any = None, photos_dir: Path = DEMO_DIR,
                 passphrase: str = DEMO_PASSPHRASE, port: int | None = None, limit: int | None = None,
                 progress: bool = True, extra_indexers: Sequence[Indexer] = ()) -> DemoEnv:
    """Start the retriever and bring users, keys and collections to the demo state (idempotent).

    Args:
        workspace: holds ``server/`` (the retriever's data) and ``keystores/<user>.keys``.
        encoder: the encoder to index with (the lite encoder is loaded when None).
        photos_dir: an ImageFolder tree of photos for alice's collection.
        passphrase: protects both demo keystores.
        port: the retriever's port on 127.0.0.1 (a free one when None).
        limit: index only this many photos (spread over the domains), e.g. for tests.
        extra_indexers: HOOK for more of alice's data (called with the env and her client).

    The caller owns the returned environment: ``env.stop()`` (or ``with``) stops the retriever.
    """
    from middleware.datasets import scan_image_folder
    from retriever.testing import ServiceProcess, register_user

    if encoder is None:
        from middleware.encoder import create_encoder

        encoder = create_encoder("lite")
    workspace = Path(workspace)
    photos = _spread(scan_image_folder(photos_dir), limit)
    service = ServiceProcess(workspace / "server", port=port).start()
    env = DemoEnv(workspace, service.url, service.fingerprint, {}, passphrase, service=service,
                  photos=[p.path for p in photos])
    try:
        keystores = {}
        for user in USERS:
            env.keystores[user] = workspace / "keystores" / f"{user}.keys"
            keystores[user] = _keystore(env.keystores[user], passphrase, user)
            register_user(service.data_dir, user, keystores[user].identity_public_key.hex(), TENANT)
            # The demo runs both sides, so it pins what its own server reports (no out-of-band check).
            keystores[user].pin_server(service.url, env.fingerprint)
        with env.client("alice", encoder) as client:
            added, skipped = _index(client, ALICE_COLLECTION, photos, "alice: indexing photos", progress)
            for indexer in extra_indexers:
                indexer(env, client)
        # Re-open: the client's own keystore object created alice's collection keys on disk.
        alice, bob = env.open_keystore("alice"), keystores["bob"]
        if SHARED_NAME not in bob.list_collections():
            bob.accept_share(alice.share_collection(ALICE_COLLECTION, bob.export_public()), alice.export_public(),
                             name=SHARED_NAME)
        own = [p for p in photos if p not in photos[::3]][-BOB_PHOTOS:] or photos[-BOB_PHOTOS:]
        with env.client("bob", encoder) as client:
            _index(client, BOB_COLLECTION, own, "bob: indexing his own photos", progress)
        env.collections = {user: env.open_keystore(user).list_collections() for user in USERS}
        if progress:
            print(f"alice's {ALICE_COLLECTION!r}: {added} photos added, {skipped} already indexed", file=sys.stderr)
    except BaseException:
        env.stop()
        raise
    return env


def run_queries(env: DemoEnv, encoder: Any, texts: Sequence[str] = DEMO_QUERIES,
                image: Path | None = None, k: int = 3) -> list[tuple[str, str, Any]]:
    """Alice's text queries and one image query, and bob's query of the shared and his own collection.

    Returns ``(who, query, QueryResult)`` rows (warm-up excluded: the first query is run twice).
    """
    rows = []
    with env.client("alice", encoder) as alice:
        alice.query_text(ALICE_COLLECTION, texts[0], k=k)  # warm-up: handshake, first Chroma load
        for text in texts:
            rows.append(("alice", text, alice.query_text(ALICE_COLLECTION, text, k=k)))
        photo = image or env.photos[len(env.photos) // 2]
        rows.append(("alice", f"[image] {photo.name}", alice.query_image(ALICE_COLLECTION, photo, k=k)))
    with env.client("bob", encoder) as bob:
        bob.query_text(SHARED_NAME, texts[0], k=k)
        rows.append(("bob (shared)", texts[0], bob.query_text(SHARED_NAME, texts[0], k=k)))
        rows.append(("bob (own)", texts[-1], bob.query_text(BOB_COLLECTION, texts[-1], k=k)))
    return rows


def format_results(rows: Sequence[tuple[str, str, Any]]) -> str:
    """Decrypted results per query, then one latency row per query (ms)."""
    lines = []
    for who, query, result in rows:
        lines.append(f"\n{who}: {query!r}")
        for rank, item in enumerate(result.items, 1):
            lines.append(f"  {rank}. {item.score:.3f}  {item.caption or item.text}")
    lines += ["", "latency (ms) | " + " | ".join(STAGES), "---|" + "---|" * len(STAGES)]
    for who, query, result in rows:
        lines.append(f"{who}: {query[:32]} | " + " | ".join(f"{result.timings_ms.get(s, 0.0):.1f}" for s in STAGES))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = subparsers.add_parser("demo", help="run the whole system locally: index the demo photos privately, query")
    p.add_argument("--workspace", default=str(DEFAULT_WORKSPACE), help="keys, server data (default runs/demo)")
    p.add_argument("--port", type=int, help="retriever port on 127.0.0.1 (default: a free one)")
    p.add_argument("--limit", type=int, help="index only this many demo photos")
    p.add_argument("--photos", default=str(DEMO_DIR), help="ImageFolder tree to index as alice's photos")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true", help="keep the retriever running until Ctrl-C")
    mode.add_argument("--ui", action="store_true", help="start the UI after indexing (keeps the retriever running)")
    mode.add_argument("--no-ui", action="store_true", help="stop after the queries (the default)")
    p.add_argument("--no-shop", action="store_true",
                   help=f"skip indexing the customer-service catalogue as alice's {SHOP_COLLECTION!r}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, encoder: Any = None) -> int:
    """Prepare, query, print; then stop (or keep serving with ``--serve`` / ``--ui``)."""
    import os

    from middleware.encoder import create_encoder

    passphrase = os.environ.get("PMIRS_PASSPHRASE") or DEMO_PASSPHRASE
    if passphrase == DEMO_PASSPHRASE:
        print(f"demo keystore passphrase: {DEMO_PASSPHRASE!r} (set PMIRS_PASSPHRASE to choose one)", file=sys.stderr)
    encoder = encoder or create_encoder("lite")
    env = prepare_demo(Path(args.workspace), encoder=encoder, photos_dir=Path(args.photos), passphrase=passphrase,
                       port=args.port, limit=args.limit, extra_indexers=() if args.no_shop else (index_shop,))
    try:
        print(f"retriever {env.server_url} (fingerprint {env.fingerprint}); collections: {env.collections}")
        print(format_results(run_queries(env, encoder)))
        ui = _start_ui(env) if args.ui else None
        try:
            if args.serve or args.ui:
                _serve_until_interrupted(env)
        finally:
            if ui is not None:
                from ui.launch import stop_ui

                stop_ui(ui)
    finally:
        env.stop()
    print("\nretriever stopped")
    return 0


def index_shop(env: DemoEnv, client: Any) -> None:
    """Alice also runs the shop: its catalogue and policies become her private ``shop`` collection."""
    from chatbot.customer_service import index_catalogue

    report = index_catalogue(client, SHOP_COLLECTION)
    print(f"alice's {SHOP_COLLECTION!r}: {report['added']} catalogue items added", file=sys.stderr)


def _start_ui(env: DemoEnv) -> Any:
    """HOOK(ui): serve the Streamlit app (``ui/launch.py``) on the demo's server and keystores."""
    from ui.launch import start_ui

    ui = start_ui(env.server_url, env.workspace / "keystores", passphrase=env.passphrase,
                  log_path=env.workspace / "ui.log")
    print(f"PMIRS UI: {ui.url} (users: {', '.join(env.keystores)})", flush=True)
    return ui


def _serve_until_interrupted(env: DemoEnv) -> None:
    print(f"serving at {env.server_url}; Ctrl-C to stop", file=sys.stderr)
    try:
        while env.service is not None and env.service.proc is not None and env.service.proc.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
