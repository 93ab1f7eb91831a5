"""Where every benchmark's results go: one JSON file, its folder created on demand."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_json(out: str | Path, results: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``results`` as indented JSON to ``out`` (creating its folder); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=default) + "\n")
    return out
