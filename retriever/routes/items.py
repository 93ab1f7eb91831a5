"""Items of a collection: add a batch, delete, check which ids exist, page ids, fetch by id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from retriever import ops
from retriever.deps import Envelope, SealedCall, StateDep
from retriever.routes import run

router = APIRouter(prefix="/items", tags=["items"])


@router.post("/add", response_model=Envelope)
def add_items(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{collection, key_version, staging?, items: [{id, vector, ciphertext, public?}]}``.

    Answers sealed ``{added}``; ``staging`` targets the version being re-keyed.
    """
    return run(state, call, ops.add_items)


@router.post("/delete", response_model=Envelope)
def delete_items(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{collection, ids}`` -> ``{deleted}``."""
    return run(state, call, ops.delete_items)


@router.post("/exists", response_model=Envelope)
def existing_items(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{collection, ids, staging?}`` -> ``{present}`` (resumable uploads)."""
    return run(state, call, ops.existing_items)


@router.post("/list", response_model=Envelope)
def list_items(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{collection, offset, limit}`` -> ``{ids, count}``."""
    return run(state, call, ops.list_items)


@router.post("/get", response_model=Envelope)
def get_items(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{collection, ids}`` -> ``{items: [{id, vector, ciphertext, key_version, public}]}``."""
    return run(state, call, ops.get_items)
