"""Top-k search over a collection's obfuscated vectors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from retriever import ops
from retriever.deps import Envelope, SealedCall, StateDep
from retriever.routes import run

router = APIRouter(tags=["query"])


@router.post("/query", response_model=Envelope)
def query(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{collection, vector, k, key_version, where?}`` -> sealed ``{results, search_ms}``.

    Each result is ``{id, score, ciphertext, key_version, public}``; the score is the cosine
    similarity of the obfuscated vectors, which equals the plaintext one for an orthogonal
    projection without noise.
    """
    return run(state, call, ops.query)
