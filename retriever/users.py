"""The registry of users the retriever accepts: user id -> Ed25519 public key and tenant.

The admin adds users with ``pmirs users add``; the file lives in the data directory with mode
0600. The service never holds a user's private key, only what ``pmirs keys init`` exported.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from pmirs.errors import InvalidMessage, PMIRSError
from pmirs.protocol.encoding import b64url_decode
from pmirs.protocol.files import write_private_file

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
USERS_FILE = "users.json"


class UserRegistryError(PMIRSError):
    """The user registry file or an entry to add is invalid."""


@dataclass(frozen=True)
class UserRecord:
    """One registered user: the tenant namespaces every collection the user touches."""

    user_id: str
    public_key: str  # raw Ed25519 public key, 64 hex characters
    tenant: str


def validate_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe identifier (user ids, tenants), else raise."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise UserRegistryError(f"invalid {what} {value!r}: use 1-128 of A-Z a-z 0-9 _ . @ -")
    return value


def parse_public_key(text: str) -> str:
    """Accept a raw 32-byte Ed25519 key as hex or base64url, or the JSON of ``Keystore.export_public()``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["identity_key"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserRegistryError("public key JSON has no 'identity_key' field") from e
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = b64url_decode(text)
        except InvalidMessage as e:
            raise UserRegistryError("public key is neither hex nor base64url") from e
    if len(raw) != 32:
        raise UserRegistryError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return raw.hex()


def write_private_json(path: Path, data: object) -> None:
    """Write JSON atomically with mode 0600 (the registry names users and tenants)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


class UserRegistry:
    """Users known to this server, re-read when the file changes (the admin CLI edits it)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / USERS_FILE
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._users: dict[str, UserRecord] = {}

    def _load(self) -> dict[str, UserRecord]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._users, self._mtime = {}, None
                return self._users
            if mtime != self._mtime:
                try:
                    raw = json.loads(self.path.read_text(encoding="utf-8"))
                    users = {uid: UserRecord(uid, rec["public_key"], rec["tenant"])
                             for uid, rec in raw.items()}
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise UserRegistryError(f"user registry {self.path} is corrupt") from e
                self._users, self._mtime = users, mtime
            return self._users

    def _save(self, users: dict[str, UserRecord]) -> None:
        write_private_json(self.path, {u.user_id: {"public_key": u.public_key, "tenant": u.tenant}
                                       for u in users.values()})

    def get(self, user_id: str) -> UserRecord | None:
        """Return the user's record, or None when the user is not registered."""
        return self._load().get(user_id)

    def list_users(self) -> list[UserRecord]:
        """All registered users, sorted by id."""
        return sorted(self._load().values(), key=lambda u: u.user_id)

    def add(self, user_id: str, public_key: str, tenant: str, *, replace: bool = False) -> UserRecord:
        """Register (or with ``replace`` re-key) a user; returns the stored record."""
        record = UserRecord(validate_name(user_id, "user id"), parse_public_key(public_key),
                            validate_name(tenant, "tenant"))
        users = dict(self._load())
        if user_id in users and not replace and users[user_id] != record:
            raise UserRegistryError(f"user {user_id!r} already exists (use --replace to change it)")
        users[user_id] = record
        self._save(users)
        return record

    def remove(self, user_id: str) -> bool:
        """Unregister a user; returns whether the user existed."""
        users = dict(self._load())
        if users.pop(user_id, None) is None:
            return False
        self._save(users)
        return True
