"""The one interface every PMIRS encoder implements (a CLIP-style dual encoder)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image


class Encoder(ABC):
    """Maps texts and images into one shared space of ``dim`` dimensions.

    Outputs are float32 arrays of shape ``(n, dim)`` whose rows have unit L2 norm, so a dot
    product is a cosine similarity. ``version`` names the weights: vectors made by encoders with
    different versions are not comparable and a collection must be re-indexed.
    """

    name: str
    dim: int

    @property
    @abstractmethod
    def version(self) -> str:
        """A short identifier of the exact weights (towers + heads)."""

    @property
    def relevance(self) -> dict[str, float] | None:
        """Calibrated chat relevance thresholds ``{"image", "text"}`` for these weights, if known."""
        return None

    @abstractmethod
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts; returns ``(len(texts), dim)`` float32 with unit-norm rows."""

    @abstractmethod
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed PIL images (any mode/size); returns ``(len(images), dim)`` float32 unit rows."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class TextMemo:
    """Embeds each distinct text once: benchmarks and training re-draw the same phrases many times."""

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.encode = encode
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.encode(missing), strict=True))
        return np.stack([self.cache[t] for t in texts]).astype(np.float32)
