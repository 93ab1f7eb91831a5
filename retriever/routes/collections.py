"""Collections of the session's tenant: create, list, describe, delete, re-key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from retriever import ops
from retriever.deps import Envelope, SealedCall, StateDep
from retriever.routes import run

router = APIRouter(prefix="/collections", tags=["collections"])


@router.post("/create", response_model=Envelope)
def create_collection(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{name, dim, key_version}`` -> sealed collection description."""
    return run(state, call, ops.create_collection)


@router.post("/list", response_model=Envelope)
def list_collections(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{}`` -> sealed ``{collections: [{name, dim, key_version, version, rotating, count}]}``."""
    return run(state, call, ops.list_collections)


@router.post("/describe", response_model=Envelope)
def describe_collection(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{name}`` -> sealed collection description with its item count."""
    return run(state, call, ops.describe_collection)


@router.post("/delete", response_model=Envelope)
def delete_collection(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{name}`` -> sealed ``{deleted: true}``."""
    return run(state, call, ops.delete_collection)


@router.post("/rotate/begin", response_model=Envelope)
def begin_rotation(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{name, key_version}``: open an empty staging version for re-projected vectors."""
    return run(state, call, ops.begin_rotation)


@router.post("/rotate/commit", response_model=Envelope)
def commit_rotation(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{name}``: switch queries to the staging version (409 unless it holds every id)."""
    return run(state, call, ops.commit_rotation)


@router.post("/rotate/abort", response_model=Envelope)
def abort_rotation(call: SealedCall, state: StateDep) -> dict[str, Any]:
    """Sealed ``{name}``: drop the staging version."""
    return run(state, call, ops.abort_rotation)
