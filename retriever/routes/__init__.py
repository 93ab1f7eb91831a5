"""One router per resource; each route opens a sealed request, runs an op, seals the answer."""

from __future__ import annotations

from typing import Any

from retriever.deps import Call, ServiceState
from retriever.ops import Op


def run(state: ServiceState, call: Call, op: Op) -> dict[str, Any]:
    """Run ``op`` for the call's tenant and seal (or, on the plain router, pass through) its result."""
    return call.reply(op(state.store, call.tenant, call.body, state.limits))
