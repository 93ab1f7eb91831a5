"""Where every benchmark's results go: one JSON file (its folder created on demand), a table and a plot beside it."""

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


def write_report(out: str | Path, results: Any, markdown: Callable[[Any], str],
                 plot: Callable[[Any, Path], None]) -> Path:
    """Write ``results`` as JSON to ``out``, ``markdown(results)`` beside it as ``.md`` and
    ``plot(results, png)`` as ``.png``; returns the JSON path."""
    out = write_json(out, results)
    out.with_suffix(".md").write_text(markdown(results))
    plot(results, out.with_suffix(".png"))
    return out
