"""Reading the JSON files federated commands take as input (run manifests, calibration and benchmark
results) with one clear error for a missing, malformed or non-object file."""

from __future__ import annotations

import json
from pathlib import Path

from pmirs.errors import FederatedError


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a clear error naming ``what`` it should have been."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FederatedError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise FederatedError(f"cannot read {what} {path}: not a JSON object")
    return value
