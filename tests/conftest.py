"""Suite-wide setup: offline/no-telemetry environment and the shared real encoder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pmirs.cli import OFFLINE_ENV

for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def lite_encoder():
    """The real default encoder (frozen towers + shipped heads), loaded once per test session."""
    from middleware.encoder import create_encoder

    return create_encoder("lite")


@pytest.fixture(scope="session")
def base_encoder(lite_encoder):
    """The zero-shot base heads (what federated runs start from) on the default encoder's towers."""
    from middleware.encoder.heads import BASE_HEADS_PATH
    from middleware.encoder.lite import LiteEncoder

    return LiteEncoder(BASE_HEADS_PATH, image_tower=lite_encoder.image_tower, text_tower=lite_encoder.text_tower)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The demo collection shipped in the repo (<domain>/<label>/<label>.jpg)."""
    return DEMO_DIR
