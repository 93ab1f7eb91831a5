"""Fixtures for the retriever: a real service in a subprocess and a raw protocol client."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from retriever_helpers import RawClient

from pmirs.protocol import crypto

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def make_user(tmp_path: Path) -> Callable[..., tuple[str, bytes]]:
    """Register a fresh Ed25519 user with a running service's data dir; returns (user_id, private key)."""
    from retriever.testing import register_user

    def make(data_dir: Path, user_id: str, tenant: str) -> tuple[str, bytes]:
        key = crypto.ed25519_generate()
        register_user(data_dir, user_id, crypto.ed25519_public(key).hex(), tenant)
        return user_id, key

    return make


@pytest.fixture
def raw_clients() -> Iterator[list[RawClient]]:
    """Collects RawClients made in a test and closes them."""
    made: list[RawClient] = []
    yield made
    for c in made:
        c.close()
