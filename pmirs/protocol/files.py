"""Writing secret files: atomically and never readable by anyone but the owner."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte on.

    A crash leaves either the old or the new file, never a half-written key; the temporary file
    is created with ``O_EXCL`` and mode 0600 so the secret is never briefly world-readable.
    """
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, PRIVATE_MODE)  # in case a umask or ACL widened it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename; not supported everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def is_private(path: str | os.PathLike[str]) -> bool:
    """True if neither group nor others have any permission on ``path``."""
    return os.stat(path).st_mode & 0o077 == 0
