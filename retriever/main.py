"""Build the retriever app: ``create_app(settings)`` wires state, routers, guards and error mapping."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pmirs.errors import AccessDeniedError, ConflictError, NotFoundError, RequestError
from pmirs.protocol.handshake import ServerIdentity
from retriever.deps import ServiceState
from retriever.guards import GuardMiddleware
from retriever.ops import Limits
from retriever.routes import collections, handshake, health, items, plain, query
from retriever.sessions import PendingTable, SessionTable
from retriever.settings import Settings
from retriever.store import VectorStore
from retriever.users import UserRegistry

IDENTITY_FILE = "identity.pem"
log = logging.getLogger("pmirs.retriever")

# Domain errors raised below the routes -> (status, detail shown to the client).
_ERROR_STATUS: dict[type[Exception], int] = {
    RequestError: 400,
    AccessDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
}


def load_or_create_identity(data_dir: Path) -> ServerIdentity:
    """The server's long-term Ed25519 key, created (mode 0600) on first start."""
    path = Path(data_dir) / IDENTITY_FILE
    if path.exists():
        return ServerIdentity.load(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = ServerIdentity.generate()
    identity.save(path)
    log.info('{"event": "identity_created", "fingerprint": "%s"}', identity.fingerprint)
    return identity


def create_chroma_client(settings: Settings) -> Any:
    """HttpClient to a remote Chroma when configured, else an embedded PersistentClient."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port,
                                   settings=chroma_settings)
    settings.chroma_path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)


def create_app(settings: Settings | None = None, *, chroma_client: Any = None) -> FastAPI:
    """The FastAPI app for ``settings`` (read from ``PMIRS_RETRIEVER_*`` when omitted)."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    state = ServiceState(
        settings=settings,
        store=VectorStore(chroma_client or create_chroma_client(settings), settings.data_dir),
        users=UserRegistry(settings.data_dir),
        sessions=SessionTable(settings.session_max_age_s, settings.max_sessions),
        identity=load_or_create_identity(settings.data_dir),
        limits=Limits(settings.max_items_per_batch, settings.max_k),
        pending=PendingTable(),
    )
    app = FastAPI(
        title="PMIRS retriever",
        version="1",
        description="Untrusted search service: stores obfuscated vectors and ciphertexts it cannot read.",
    )
    app.state.pmirs = state
    app.include_router(health.router)
    for module in (handshake, collections, items, query):
        app.include_router(module.router, prefix="/v1")
    if settings.allow_plain:
        app.include_router(plain.router, prefix="/v1")

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        status = next(code for kind, code in _ERROR_STATUS.items() if isinstance(exc, kind))
        return JSONResponse({"detail": str(exc)}, status_code=status)

    for kind in _ERROR_STATUS:
        app.add_exception_handler(kind, domain_error)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes,
                       timeout_s=settings.request_timeout_s)
    return app
