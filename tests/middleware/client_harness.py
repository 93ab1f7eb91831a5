"""Helpers for the client tests: a tiny deterministic encoder, keystores, test images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from hash_encoder import HashEncoder  # noqa: F401  (re-exported for the client tests)
from PIL import Image

from middleware.keystore import Keystore
from retriever.testing import ServiceProcess, register_user

PASSPHRASE = "correct horse battery staple"


def make_keystore(tmp: Path, user_id: str, service: ServiceProcess | None, tenant: str = "acme",
                  pin: str | None = None) -> Keystore:
    """A fresh keystore (fast scrypt), registered with ``service`` and pinned to it."""
    keystore = Keystore.create(tmp / f"{user_id}.keys", PASSPHRASE, user_id, scrypt_n=2**10)
    if service is not None:
        register_user(service.data_dir, user_id, keystore.identity_public_key.hex(), tenant)
        keystore.pin_server(service.url, pin or service.fingerprint)
    return keystore


def picture(seed: int, size: int = 32) -> Image.Image:
    """A random but reproducible RGB picture."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def jpeg_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()
