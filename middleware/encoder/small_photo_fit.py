"""Fitting the small-photo layer inside `train-heads`: epochs chosen on held-out classes.

The layer learns from the pretrain pool's small photos (entering the tower at the small input
size) whose labels name ImageNet classes (the tower's own label space). A first run leaves the
held-out classes out and scores them zero-shot after every epoch; the epoch count that helps them
most (zero if none does) is kept, and the shipped layer is retrained on every class for that many
epochs. Sharp photos are checked too, frozen against adapted layer at 224 px, to show what the
layer would cost them if it were not gated by photo size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from middleware.datasets import DEMO_PHOTOS, LabelledImage, open_image, scan_image_folder
from middleware.encoder.features import tower_outputs
from middleware.encoder.heads import TowerHead
from middleware.encoder.preprocess import images_to_array
from middleware.encoder.small_photos import (
    AdaptConfig,
    SmallInput,
    SmallPhotoLayer,
    adapt_small_photo_head,
    imagenet_index,
    photo_sizes,
    small_photo_mask,
    top_accuracy,
)
from middleware.encoder.towers import IMAGE_FEATURE_DIM, ImageTower

ScoreFn = Callable[[np.ndarray], dict[str, float]]  # pooled features of every photo -> held-out scores


class SmallPhotoFit:
    """The small-photo layer's two runs (held-out choice, final fit) on one pretrain pool."""

    def __init__(self, items: Sequence[LabelledImage], tower: ImageTower, data_root: Path, cache_dir: str | Path,
                 max_side: int, small_input: SmallInput, config: AdaptConfig, image_size: int = 224) -> None:
        self.tower, self.config, self.max_side, self.small_input = tower, config, max_side, small_input
        self.small = small_photo_mask(photo_sizes(items), max_side)
        thumbnails = [item for item, is_small in zip(items, self.small, strict=True) if is_small]
        sharp = [item for item, is_small in zip(items, self.small, strict=True) if not is_small]
        self.maps = tower_outputs(thumbnails, tower, cache_dir, with_maps=True, image_size=small_input.size,
                                  desc="pre-head maps of small photos", resample=small_input.resample).maps
        self.sharp_pooled = tower_outputs(sharp, tower, cache_dir, image_size=image_size).pooled if sharp else None
        index = imagenet_index(thumbnails, data_root)
        self.labels = [item.label for item in thumbnails]
        self.targets = np.asarray([index.get(label, -1) for label in self.labels])
        self.learnable = self.targets >= 0  # over the small photos
        self.chosen_epochs, self.best_score, self.best_pooled = 0, float("-inf"), None
        self.report: dict = {"max_side": max_side, "input_size": small_input.size, "resample": small_input.resample,
                             "learnable_photos": int(self.learnable.sum()), "config": vars(config).copy(),
                             "heldout_curve": [], "chosen_epochs": 0}

    def new_head(self) -> TowerHead:
        """A copy of the tower's own last layer (where adaptation starts)."""
        head = TowerHead()
        head.copy_from_tower(self.tower.model)
        return head.eval()

    def layer(self, head: torch.nn.Module) -> SmallPhotoLayer:
        """``head`` as a small-photo layer with this fit's size gate and input."""
        return SmallPhotoLayer(head, self.max_side, self.small_input.size, self.small_input.resample)

    def pooled(self, head: torch.nn.Module) -> np.ndarray:
        """Pooled features of every photo: small ones through ``head`` at the small input."""
        pooled = np.empty((len(self.small), IMAGE_FEATURE_DIM), dtype=np.float32)
        if self.sharp_pooled is not None:
            pooled[~self.small] = self.sharp_pooled
        if self.small.any():
            pooled[self.small] = self.layer(head).read(self.maps)
        return pooled

    def choose(self, is_heldout: np.ndarray, score: ScoreFn) -> np.ndarray:
        """Adapt without the held-out classes, scoring them after every epoch (epoch 0 = the tower's
        own layer at the small input); returns the pooled features of the best epoch, which
        later held-out checks must use."""
        heldout_small = np.asarray(is_heldout)[self.small]
        train_rows = np.flatnonzero(self.learnable & ~heldout_small)
        check_rows = self.learnable & heldout_small
        best: dict = {}

        def on_epoch(epoch: int, head: torch.nn.Module) -> None:
            pooled = self.pooled(head)
            row: dict = {"epoch": epoch, **score(pooled)}
            if check_rows.any():
                logits = torch.from_numpy(self.tower.logits_from_pooled(pooled[self.small][check_rows]))
                row["tower"] = top_accuracy(logits, self.targets[check_rows])
            self.report["heldout_curve"].append(row)
            print(f"small-photo layer epoch {epoch}: held-out {row.get('tower', {})}  "
                  f"F1@10 {row['f1@10']:.3f}  mAP {row['t2i_map']:.3f}", flush=True)
            if not best or row["f1@10"] + row["t2i_map"] > best["score"]:
                best.update(score=row["f1@10"] + row["t2i_map"], epoch=epoch, pooled=pooled)

        head = self.new_head()
        on_epoch(0, head)
        if len(train_rows) and check_rows.any():
            adapt_small_photo_head(head, self.tower.model._fc, self.maps[train_rows], self.targets[train_rows],
                                   self.config, on_epoch)
        else:
            self.report["not_adapted"] = "no small photos with ImageNet labels on both sides of the held-out split"
        self.chosen_epochs = self.report["chosen_epochs"] = best["epoch"]
        self.best_score, self.best_pooled = best["score"], best["pooled"]
        return best["pooled"]

    def final(self, sharp_photos: Path = DEMO_PHOTOS) -> TowerHead:
        """The shipped layer: adapted on every class for the chosen epochs (the tower's own layer,
        read at the small input size, when no epoch helped)."""
        head = self.new_head()
        rows = np.flatnonzero(self.learnable)
        if self.chosen_epochs:
            adapt_small_photo_head(head, self.tower.model._fc, self.maps[rows], self.targets[rows],
                                   AdaptConfig(**{**vars(self.config), "epochs": self.chosen_epochs}))
        if sharp_photos.is_dir():
            trained = frozenset(np.asarray(self.labels)[rows].tolist()) if self.chosen_epochs else frozenset()
            self.report["sharp_photos"] = sharp_photo_check(head, self.tower, sharp_photos, trained)
        return head


def sharp_photo_check(head: torch.nn.Module, tower: ImageTower, photo_root: Path,
                      trained: frozenset[str] = frozenset()) -> dict:
    """Tower top-1/top-5 on full-resolution photos whose labels name ImageNet classes, frozen layer
    against adapted layer, for all of them and for those of classes the layer did not train on:
    what the adapted layer would cost sharp photos if it were not gated by size."""
    items = scan_image_folder(photo_root)
    index = imagenet_index(items, photo_root)
    items = [item for item in items if item.label in index]
    if not items:
        return {"photos": 0}
    targets = np.asarray([index[item.label] for item in items])
    maps = np.concatenate([tower.prehead_maps(images_to_array([open_image(i.path) for i in items[s : s + 32]]))
                           for s in range(0, len(items), 32)])
    with torch.no_grad():
        adapted = tower.model._fc(head(torch.from_numpy(maps)))
    frozen = torch.from_numpy(tower.logits_from_pooled(tower.pooled_from_maps(maps)))
    unseen = np.asarray([item.label not in trained for item in items])
    result = {"photos": len(items), "frozen": top_accuracy(frozen, targets), "adapted": top_accuracy(adapted, targets),
              "unseen_photos": int(unseen.sum())}
    if unseen.any():
        result["unseen_frozen"] = top_accuracy(frozen[unseen], targets[unseen])
        result["unseen_adapted"] = top_accuracy(adapted[unseen], targets[unseen])
    print(f"sharp photos: {result}", flush=True)
    return result
