"""What the Streamlit app needs to know, loaded once per browser session.

``pmirs ui`` (or :func:`ui.launch.start_ui`) runs ``streamlit run ui/app.py -- --server URL ...``;
the options after ``--`` reach the script as ``sys.argv``. Secrets never travel on the command
line: passphrases come from ``PMIRS_PASSPHRASE`` (or ``PMIRS_PASSPHRASE_<USER>`` for one user).
This module and ``ui/app.py`` are the only UI code that reads the environment.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.model_files import DEFAULT_MODEL
from pmirs.protocol.suites import DEFAULT_SUITE

PASSPHRASE_ENV = "PMIRS_PASSPHRASE"
KEYSTORE_SUFFIXES = (".keys", ".json")
MAX_UPLOAD_MB = 8  # larger query images are refused in the UI (the middleware re-encodes above 2 MB anyway)


@dataclass(frozen=True)
class UIConfig:
    """Everything the app is configured with (no secrets in ``repr``)."""

    server_url: str  # the retriever, e.g. http://127.0.0.1:8400 (pinned in each keystore)
    keystore_dir: Path  # one keystore file per user: <dir>/<user>.keys
    passphrases: Mapping[str, str] = field(default_factory=dict, repr=False)  # user -> passphrase; "" = default
    model: str = DEFAULT_MODEL  # local GGUF model name or path (chatbot.model_files)
    encoder: str = "lite"  # encoder spec; must be the one the collections were indexed with
    max_tokens: int = 256  # most tokens per answer
    n_ctx: int = 4096  # the model's context window
    n_threads: int = 2  # llama.cpp threads
    k: int = 6  # results retrieved per question
    threshold: float | None = None  # minimum score of an image item to ground the answer (None: the heads')
    n_blocks: int = 4  # BlockProjection blocks; must match the indexing client's
    suite: str = DEFAULT_SUITE  # wire cipher suite

    def passphrase_for(self, user: str) -> str | None:
        """The user's own passphrase if one was given, else the shared one (None: none configured)."""
        return self.passphrases.get(user) or self.passphrases.get("") or None


def build_parser() -> argparse.ArgumentParser:
    """The options ``ui/app.py`` takes after ``--`` (``pmirs ui`` forwards its own)."""
    p = argparse.ArgumentParser(prog="ui/app.py", add_help=False)
    p.add_argument("--server", required=True, help="retriever URL")
    p.add_argument("--keystore-dir", required=True, help="folder with one keystore file per user")
    p.add_argument("--model", default=DEFAULT_MODEL, help="local LLM (name or .gguf path)")
    p.add_argument("--encoder", default="lite", help="encoder spec (as used to index)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--threshold", type=float, help="image-item relevance threshold (default: the heads' own)")
    return p


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> UIConfig:
    """Parse the script arguments and pick the passphrases out of ``environ``.

    Raises:
        SystemExit: bad arguments (argparse's behaviour; the app shows it as an error).
    """
    args = build_parser().parse_args(list(argv))
    prefix = PASSPHRASE_ENV + "_"
    passphrases = {key[len(prefix):].lower(): value for key, value in environ.items()
                   if key.startswith(prefix) and value}
    if environ.get(PASSPHRASE_ENV):
        passphrases[""] = environ[PASSPHRASE_ENV]
    return UIConfig(server_url=args.server.rstrip("/"), keystore_dir=Path(args.keystore_dir),
                    passphrases=passphrases, model=args.model, encoder=args.encoder,
                    max_tokens=args.max_tokens, n_ctx=args.n_ctx, n_threads=args.threads, k=args.k,
                    threshold=args.threshold)


def list_users(keystore_dir: Path) -> dict[str, Path]:
    """``{user: keystore path}`` for every keystore file in the folder, by file stem, sorted.

    Only the unencrypted header is read (``"format": "pmirs-keystore"``), so listing needs no
    passphrase and skips unrelated JSON files.
    """
    found: dict[str, Path] = {}
    if not keystore_dir.is_dir():
        return found
    for path in sorted(keystore_dir.iterdir()):
        if path.suffix not in KEYSTORE_SUFFIXES or not path.is_file():
            continue
        try:
            header = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(header, dict) and header.get("format") == "pmirs-keystore":
            found[path.stem] = path
    return found
