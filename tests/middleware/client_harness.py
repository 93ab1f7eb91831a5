"""Helpers for the client tests: a tiny deterministic encoder, keystores, test images."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from middleware.encoder.base import Encoder, l2_normalise
from middleware.keystore import Keystore
from retriever.testing import ServiceProcess, register_user

PASSPHRASE = "correct horse battery staple"


class HashEncoder(Encoder):
    """Deterministic stand-in for a CLIP encoder: words hash to random directions, images to pixels."""

    name = "hash"
    dim = 16

    @property
    def version(self) -> str:
        return "hash-v1"

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
                out[i] += np.random.default_rng(seed).standard_normal(self.dim)
        return l2_normalise(out + 1e-3)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        rows = [np.asarray(im.convert("L").resize((4, 4)), dtype=np.float32).reshape(-1) - 100.0
                for im in images]
        return l2_normalise(np.stack(rows) + 1e-3)


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
