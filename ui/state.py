"""One signed-in user of the UI: their keystore, private client, conversation and visible collections.

Kept free of Streamlit so it can be tested and reused; ``ui/app.py`` stores one
:class:`UserSession` per browser session in ``st.session_state`` (the encoder and the LLM are
shared through ``st.cache_resource``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chatbot.assistant import Assistant
from chatbot.grounding import GroundedChat
from middleware.client import PrivacyMiddleware
from middleware.codecs import PrivateCodec
from middleware.encoder.base import Encoder
from middleware.keystore import Keystore
from pmirs.errors import KeystoreError, PMIRSError
from ui.config import UIConfig
from ui.inspector import RecordingEncoder, WireRecorder


@dataclass(frozen=True)
class CollectionRow:
    """One collection as this user can see it."""

    name: str  # local name if the keystore holds its keys, else the server's opaque name
    items: int | None  # items stored on the server (None: not on this server)
    has_keys: bool  # the keystore can decrypt it (own, or shared with this user)

    @property
    def searchable(self) -> bool:
        """Both keys here and data there."""
        return self.has_keys and self.items is not None


@dataclass
class UserSession:
    """A user's opened keystore and private client; :meth:`close` releases the HTTP pool."""

    user: str
    keystore: Keystore
    client: PrivacyMiddleware
    encoder: RecordingEncoder
    recorder: WireRecorder
    codec: PrivateCodec  # the client's view of the collections' keys, to rebuild what it sent
    assistants: dict[str, Assistant] = field(default_factory=dict)  # one conversation per collection

    def assistant(self, collection: str, chat: GroundedChat, k: int) -> Assistant:
        """The collection's assistant (with its memory), made on first use."""
        if collection not in self.assistants:
            self.assistants[collection] = Assistant(self.client, collection, chat, k=k)
        return self.assistants[collection]

    def close(self) -> None:
        """Close the client (its session is simply forgotten by the server later)."""
        self.client.close()


def open_user_session(config: UIConfig, user: str, keystore_path: Path, encoder: Encoder) -> UserSession:
    """Open ``user``'s keystore and make a private client that records what goes on the wire.

    Raises:
        KeystoreError: no passphrase configured, or it does not open the keystore.
        AuthenticationError: the server URL is not pinned in this keystore.
    """
    passphrase = config.passphrase_for(user)
    if not passphrase:
        raise KeystoreError(f"no passphrase for {user}: set PMIRS_PASSPHRASE (or PMIRS_PASSPHRASE_{user.upper()})")
    keystore = Keystore.open(keystore_path, passphrase)
    recorder = WireRecorder()
    recording = RecordingEncoder(encoder)
    http = httpx.Client(timeout=30.0, event_hooks=recorder.hooks())
    try:
        client = PrivacyMiddleware(config.server_url, keystore, recording, suite=config.suite,
                                   n_blocks=config.n_blocks, http=http)
    except BaseException:
        http.close()
        raise
    return UserSession(user, keystore, client, recording, recorder, PrivateCodec(keystore, n_blocks=config.n_blocks))


def visible_collections(session: UserSession) -> list[CollectionRow]:
    """What this user can see: their tenant's collections on the server joined with their keys.

    The server lists only the signed-in user's tenant (by opaque name); the keystore adds local
    names for the collections this user owns or was given. Collections of other tenants do not
    appear at all.

    Raises:
        PMIRSError: the server cannot be reached or refuses the user.
    """
    local = set(session.keystore.list_collections())
    rows: dict[str, CollectionRow] = {}
    for entry in session.client.list_collections():
        name = entry["name"]
        rows[name] = CollectionRow(name, int(entry.get("count", 0)), name in local)
    for name in local - set(rows):
        rows[name] = CollectionRow(name, None, True)
    return sorted(rows.values(), key=lambda r: (not r.searchable, r.name))


def describe_error(exc: BaseException) -> str:
    """A one-line message for the UI (PMIRS errors are written for users already)."""
    if isinstance(exc, PMIRSError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def rows_table(rows: list[CollectionRow]) -> list[dict[str, Any]]:
    """The sidebar table: one dict per collection."""
    return [{"collection": r.name if r.has_keys else f"{r.name[:8]}…",
             "items": r.items if r.items is not None else "—",
             "keys": "yes" if r.has_keys else "none"}
            for r in rows]
