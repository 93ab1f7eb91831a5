"""Helpers for the chatbot service tests: a real retriever, a registered keystore, demo photos."""

from __future__ import annotations

from pathlib import Path

from middleware.keystore import Keystore
from retriever.testing import ServiceProcess, register_user

PASSPHRASE = "correct horse battery staple"
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def make_keystore(tmp: Path, user_id: str, service: ServiceProcess, tenant: str = "acme") -> Keystore:
    """A fresh keystore (fast scrypt) registered with ``service`` and pinned to it."""
    keystore = Keystore.create(tmp / f"{user_id}.keys", PASSPHRASE, user_id, scrypt_n=2**10)
    register_user(service.data_dir, user_id, keystore.identity_public_key.hex(), tenant)
    keystore.pin_server(service.url, service.fingerprint)
    return keystore


def demo_photo(label: str) -> Path:
    """The demo photo of an ImageNet label folder, e.g. ``demo_photo("teddy")``."""
    matches = sorted(DEMO.glob(f"*/{label}/{label}.jpg"))
    if not matches:
        raise FileNotFoundError(f"no demo photo for {label!r}")
    return matches[0]
