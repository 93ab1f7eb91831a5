"""Liveness probe; deliberately says nothing about users, sessions or data."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_class=PlainTextResponse)
def healthz() -> str:
    """``ok`` while the process serves requests."""
    return "ok"
