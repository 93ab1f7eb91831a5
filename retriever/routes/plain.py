"""Benchmark-only twin of every sealed route: plaintext JSON in and out, one sandbox tenant.

Mounted under ``/v1/plain`` only when ``allow_plain`` is set, so a production server never
offers it. It exists so the latency benchmark can measure what privacy costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from retriever.deps import PlainCall, StateDep
from retriever.ops import OPS, Op
from retriever.routes import run

router = APIRouter(prefix="/plain", tags=["plain (benchmark only)"])


def _route(op: Op) -> Callable[..., dict[str, Any]]:
    """A handler for ``op`` (FastAPI reads the returned function's signature for its dependencies)."""

    def handler(call: PlainCall, state: StateDep) -> dict[str, Any]:
        return run(state, call, op)

    handler.__doc__ = op.__doc__
    return handler


for _path, _op in OPS.items():
    router.add_api_route(_path, _route(_op), methods=["POST"], name=f"plain:{_path}")
