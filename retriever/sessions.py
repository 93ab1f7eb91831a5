"""Live sessions, in memory only: a restart forgets them and clients simply re-handshake."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pmirs.protocol.envelope import Session
from pmirs.protocol.handshake import PendingSession


@dataclass
class SessionEntry:
    """An authenticated session and who it speaks for."""

    session: Session
    user_id: str
    tenant: str
    expires_at: float

    @property
    def sid(self) -> str:
        """The session id the server chose."""
        return self.session.sid


class SessionTable:
    """sid -> :class:`SessionEntry`, with expiry and a cap on how many are kept."""

    def __init__(self, max_age_s: float, max_sessions: int, now: Callable[[], float] = time.time) -> None:
        self._max_age_s = max_age_s
        self._max_sessions = max_sessions
        self._now = now
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, SessionEntry] = OrderedDict()

    def add(self, session: Session, user_id: str, tenant: str) -> SessionEntry:
        """Remember a new session; the oldest ones go when the table is full."""
        entry = SessionEntry(session, user_id, tenant, self._now() + self._max_age_s)
        with self._lock:
            self._entries[session.sid] = entry
            while len(self._entries) > self._max_sessions:
                self._entries.popitem(last=False)
        return entry

    def get(self, sid: object) -> SessionEntry | None:
        """The live entry for ``sid``; expired or worn-out sessions are dropped and give None."""
        if not isinstance(sid, str):
            return None
        with self._lock:
            entry = self._entries.get(sid)
            if entry is None:
                return None
            if entry.expires_at <= self._now() or entry.session.needs_rekey:
                del self._entries[sid]
                return None
            return entry

    def drop_user(self, user_id: str) -> int:
        """Forget every session of a user (e.g. after the admin removed the user)."""
        with self._lock:
            gone = [sid for sid, e in self._entries.items() if e.user_id == user_id]
            for sid in gone:
                del self._entries[sid]
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)


_MAX_PENDING = 1024


class PendingTable:
    """Handshakes between hello and confirm; small, short-lived, oldest dropped first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, PendingSession] = OrderedDict()

    def put(self, pending: PendingSession) -> None:
        """Remember a pending handshake (expired ones are dropped on the way)."""
        with self._lock:
            for sid in [s for s, p in self._pending.items() if p.expired]:
                del self._pending[sid]
            self._pending[pending.sid] = pending
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)

    def pop(self, sid: object) -> PendingSession | None:
        """Take a pending handshake out: a confirmation is accepted at most once."""
        with self._lock:
            return self._pending.pop(sid, None) if isinstance(sid, str) else None
