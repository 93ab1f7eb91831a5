"""The small-photo path: thumbnails leave the image tower through an adapted copy of its last
layer (and may enter it at their own input size and upsampling filter), so ConSE recognises them
better.

ConSE can only be as good as the tower's ImageNet classifier, and a 64-px thumbnail upsampled to
the tower's 224 px is blurred far beyond anything it was trained on (top-1 0.29 on the pretrain
pool against 0.86 on sharp photos). A copy of the last conv layer (1x1 conv 320->1280 +
BatchNorm affine) is tuned on small photos with the tower's own ImageNet labels plus a
distillation term toward the frozen tower (learning without forgetting), so the other 1000-way
predictions keep their shape. Photos whose longer side exceeds ``max_side`` keep the frozen
tower at 224 px.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from middleware.datasets import LabelledImage
from middleware.encoder.conse import load_imagenet_classes
from middleware.encoder.preprocess import DEFAULT_RESAMPLING, images_to_array, resampling_filter
from middleware.encoder.towers import IMAGE_FEATURE_DIM

if TYPE_CHECKING:
    from middleware.encoder.towers import ImageTower

# Photos upsampled more than twice to reach the tower's 224-px input count as small.
DEFAULT_MAX_SIDE = 112
# Their input size, chosen by `train-heads` on held-out classes among candidates (see alignment).
DEFAULT_INPUT_SIZE = 224


@dataclass(frozen=True)
class SmallInput:
    """How small photos enter the tower: the input size and the filter that upsamples them to it."""

    size: int = DEFAULT_INPUT_SIZE
    resample: str = DEFAULT_RESAMPLING

    @property
    def label(self) -> str:
        """``224`` for the default filter, else ``224:bilinear`` (what :meth:`parse` reads)."""
        return str(self.size) if self.resample == DEFAULT_RESAMPLING else f"{self.size}:{self.resample}"

    @classmethod
    def parse(cls, text: str) -> SmallInput:
        """Read ``SIZE`` or ``SIZE:FILTER`` (e.g. ``224:bilinear``)."""
        size, _, resample = text.strip().partition(":")
        resample = resample.strip() or DEFAULT_RESAMPLING
        if not size.strip().isdigit() or int(size) <= 0:
            raise ValueError(f"bad small-photo input {text!r}: expected SIZE or SIZE:FILTER, e.g. 224:bilinear")
        resampling_filter(resample)  # refuses an unknown filter name
        return cls(int(size), resample)


@dataclass
class SmallPhotoLayer:
    """The adapted layer, which photos it applies to, and how they are resized to enter the tower."""

    head: torch.nn.Module  # a TowerHead: (n, 320, h, w) pre-head maps -> (n, 1280) pooled features
    max_side: int  # photos whose longer side is at most this many pixels are "small"
    input_size: int = DEFAULT_INPUT_SIZE
    resample: str = DEFAULT_RESAMPLING  # the filter that upsamples them to ``input_size``

    def applies_to(self, sizes: Sequence[tuple[int, int]]) -> np.ndarray:
        """Boolean mask of the photos (given as (width, height)) this layer reads."""
        return small_photo_mask(sizes, self.max_side)

    def tower_input(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The tower's input batch for small photos: resized to ``input_size`` with ``resample``."""
        return images_to_array(images, size=self.input_size, resample=self.resample)

    @torch.inference_mode()
    def read(self, maps: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Pooled features of small photos from their pre-head maps at ``input_size``. In batches: the
        layer's 1280-channel activations of a whole train split at once took ~15 GB."""
        out = [self.head(torch.from_numpy(np.asarray(maps[start : start + batch_size], dtype=np.float32))).numpy()
               for start in range(0, len(maps), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.head.conv.out_channels), dtype=np.float32)

    def tower_pass(self, images: Sequence[Image.Image], tower: ImageTower, image_size: int) -> np.ndarray:
        """Pooled features (n, 1280) of a batch: small photos through this layer at ``input_size``,
        the others through the frozen tower at ``image_size``."""
        small = self.applies_to([image.size for image in images])
        pooled = np.empty((len(images), IMAGE_FEATURE_DIM), dtype=np.float32)
        if small.any():
            thumbnails = [image for image, is_small in zip(images, small, strict=True) if is_small]
            pooled[small] = self.read(tower.prehead_maps(self.tower_input(thumbnails)))
        if not small.all():
            sharp = [image for image, is_small in zip(images, small, strict=True) if not is_small]
            pooled[~small] = tower.features(images_to_array(sharp, size=image_size))[0]
        return pooled


def small_photo_mask(sizes: Sequence[tuple[int, int]], max_side: int) -> np.ndarray:
    """True for each (width, height) whose longer side is at most ``max_side``."""
    return np.asarray([max(size) <= max_side for size in sizes], dtype=bool)


def one_kind(small: np.ndarray) -> bool:
    """Whether a batch is all thumbnails (True) or has none (False); a mixed batch is refused, since
    pre-head maps of thumbnails and larger photos may differ in size."""
    small = np.asarray(small, dtype=bool)
    if small.any() and not small.all():
        raise ValueError("pre-head maps of thumbnails and larger photos differ in size: pass photos of one kind "
                         "(all thumbnails or all larger photos)")
    return bool(small.any())


# Which photos trained image-side terms fit: the kind they were trained on ("small" thumbnails or
# "sharp" larger photos, relative to a checkpoint's small-photo layer), or "all" when they saw both.
PHOTO_KINDS = ("all", "small", "sharp")


def check_photo_kind(kind: str, what: str) -> None:
    """Refuse a photo kind outside ``PHOTO_KINDS`` (``what`` names the setting that holds it)."""
    if kind not in PHOTO_KINDS:
        raise ValueError(f"unknown photo kind {kind!r} for {what}: expected one of {', '.join(PHOTO_KINDS)}")


def trained_photo_kind(small_share: float) -> str:
    """The kind of photos terms trained on this share of small-path photos fit (see ``PHOTO_KINDS``).

    Terms learned from 64-px thumbnails alone do not transfer to sharp photos (they broke chat
    relevance gating on them), so terms that saw one kind only are applied to that kind only. The
    share may be a weighted mean over clients, hence the rounding tolerance.
    """
    tolerance = 1e-6
    if not -tolerance <= small_share <= 1.0 + tolerance:
        raise ValueError(f"small-photo share must be within [0, 1], got {small_share}")
    if small_share >= 1.0 - tolerance:
        return "small"
    return "sharp" if small_share <= tolerance else "all"


def takes_tuned_terms(kind: str, small: np.ndarray | None, count: int) -> np.ndarray:
    """One flag per photo: do image terms trained on ``kind`` apply to it? ``small`` is the
    small-path mask (None = no small-photo layer: every photo counts as sharp)."""
    check_photo_kind(kind, "trained image terms")
    small = np.zeros(count, dtype=bool) if small is None else np.asarray(small, dtype=bool)
    if kind == "all":
        return np.ones(count, dtype=bool)
    return small if kind == "small" else ~small


def photo_sizes(items: Sequence[LabelledImage]) -> list[tuple[int, int]]:
    """(width, height) of each photo file, read from its header only."""
    sizes = []
    for item in items:
        with Image.open(item.path) as image:
            sizes.append(image.size)
    return sizes


def imagenet_index(items: Sequence[LabelledImage], data_root: Path) -> dict[str, int]:
    """ImageNet class index of every label that names one (``classes.csv`` wnid first, then name)."""
    by_wnid, by_name = {}, {}
    for class_index, (wnid, names) in enumerate(load_imagenet_classes()):
        by_wnid[wnid] = class_index
        for name in names:
            by_name.setdefault(name.lower(), class_index)
    wnids = {}
    if (Path(data_root) / "classes.csv").is_file():
        with (Path(data_root) / "classes.csv").open(newline="", encoding="utf-8") as handle:
            wnids = {r["label"]: r.get("wnid", "") for r in csv.DictReader(handle)}
    index = {}
    for label in dict.fromkeys(item.label for item in items):
        if wnids.get(label) in by_wnid:
            index[label] = by_wnid[wnids[label]]
        elif label.lower() in by_name:
            index[label] = by_name[label.lower()]
    return index


def top_accuracy(logits: torch.Tensor, targets: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy of 1000-way logits."""
    top5 = logits.topk(5, dim=1).indices.numpy()
    return {"top1": round(float((top5[:, 0] == targets).mean()), 4),
            "top5": round(float((top5 == targets[:, None]).any(axis=1).mean()), 4)}


@dataclass
class AdaptConfig:
    """Optimiser settings of the small-photo adaptation (what the shipped layer used)."""

    epochs: int = 4
    lr: float = 1e-4
    distill: float = 1.0  # weight of the KL term toward the frozen tower (0 forgets unseen classes)
    batch_size: int = 128
    seed: int = 0


def adapt_small_photo_head(
    head: torch.nn.Module,
    classifier: torch.nn.Module,
    maps: np.ndarray,
    targets: np.ndarray,
    config: AdaptConfig,
    on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
) -> torch.nn.Module:
    """Tune ``head`` (a TowerHead copied from the tower) in place on ``maps`` of small photos with
    ImageNet ``targets``; ``on_epoch(epoch, head)`` runs after every epoch (1-based)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    y = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    with torch.no_grad():
        head.eval()
        teacher = F.softmax(classifier(head(x)), dim=1)
    head.requires_grad_(True)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=0.0)
    for epoch in range(1, config.epochs + 1):
        head.train()
        order = rng.permutation(len(x))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            logits = classifier(head(x[idx]))
            loss = F.cross_entropy(logits, y[idx]) + config.distill * F.kl_div(
                F.log_softmax(logits, dim=1), teacher[idx], reduction="batchmean")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        head.eval()
        if on_epoch is not None:
            on_epoch(epoch, head)
    head.requires_grad_(False)
    return head
