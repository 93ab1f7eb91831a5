"""A tiny deterministic stand-in for a CLIP encoder, shared by tests that need no real model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from middleware.encoder.base import Encoder, l2_normalise


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
