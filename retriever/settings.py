"""The retriever's one configuration object; the only place the service reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service settings, read from ``PMIRS_RETRIEVER_*`` variables or passed explicitly.

    There are no secrets here: the server's identity key lives in ``data_dir`` (mode 0600) and
    every user is known only by a registered public key.
    """

    model_config = SettingsConfigDict(env_prefix="PMIRS_RETRIEVER_", extra="forbid")

    # Interface and port uvicorn binds to; loopback by default so nothing is exposed by accident.
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    # Holds identity.json (server key), users.json (registry), collections.json and, without a
    # remote Chroma, the Chroma database itself.
    data_dir: Path = Path("./retriever-data")
    # Remote Chroma server; when unset the service uses an embedded PersistentClient in data_dir.
    chroma_host: str | None = None
    chroma_port: int = Field(default=8000, ge=1, le=65535)
    # Requests with larger bodies are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Upper bound on items per add/get/delete call, so one request cannot pin the store for long.
    max_items_per_batch: int = Field(default=256, ge=1)
    # Largest k a query may ask for.
    max_k: int = Field(default=100, ge=1)
    # Seconds a session lives after its handshake; the client re-handshakes after that.
    session_max_age_s: float = Field(default=3600.0, gt=0)
    # Envelopes whose timestamp is further than this from the server clock are refused (stale).
    message_max_age_s: float = Field(default=120.0, gt=0)
    # Seconds a client has between server hello and its signed confirmation.
    handshake_timeout_s: float = Field(default=30.0, gt=0)
    # Upper bound on live sessions kept in memory; the oldest are dropped first.
    max_sessions: int = Field(default=10_000, ge=1)
    # Seconds before a request is abandoned with 504.
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Mounts /v1/plain/* (no encryption, no obfuscation) for the latency benchmark only.
    allow_plain: bool = False
    # Log level of the structured JSON request log.
    log_level: str = "INFO"

    @property
    def chroma_path(self) -> Path:
        """Directory of the embedded Chroma database."""
        return self.data_dir / "chroma"
