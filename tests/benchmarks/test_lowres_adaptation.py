"""The low-res adaptation experiment's training loop, on the real tower and real demo photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.lowres_adaptation import adapt_tower_head
from middleware.datasets import open_image, scan_image_folder
from middleware.encoder.heads import TowerHead
from middleware.encoder.preprocess import images_to_array
from middleware.encoder.towers import ImageTower


def test_adaptation_learns_the_training_labels_and_keeps_the_best_epoch(demo_dir: Path) -> None:
    tower = ImageTower()
    photos = [open_image(item.path) for item in scan_image_folder(demo_dir)[:24]]
    maps = tower.prehead_maps(images_to_array(photos))
    frozen = TowerHead()
    frozen.copy_from_tower(tower.model)
    with torch.no_grad():
        ranked = tower.model._fc(frozen.eval()(torch.from_numpy(maps))).argsort(dim=1, descending=True).numpy()
    targets = ranked[:, 1]  # the frozen tower's runner-up: wrong now, learnable
    train, heldout = np.arange(16), np.arange(16, 24)
    state, curve = adapt_tower_head(maps, targets, train, heldout, tower, epochs=4, lr=1e-2, batch_size=8)
    assert [row["epoch"] for row in curve] == [0, 1, 2, 3, 4]
    assert curve[0]["train"]["top1"] == 0.0
    assert curve[-1]["train"]["top1"] > curve[0]["train"]["top1"]
    head = TowerHead()
    head.load_state_dict(state)  # the best epoch's weights, by held-out top-1
    with torch.no_grad():
        logits = tower.model._fc(head.eval()(torch.from_numpy(maps)))
    best = max(curve, key=lambda row: row["heldout"]["top1"])
    assert float((logits.argmax(1).numpy()[heldout] == targets[heldout]).mean()) == best["heldout"]["top1"]


def test_the_full_resolution_check_scores_real_photos_and_an_unchanged_head_changes_nothing(demo_dir: Path) -> None:
    from benchmarks.lowres_adaptation import full_resolution_check

    tower = ImageTower()
    head = TowerHead()
    head.copy_from_tower(tower.model)
    result = full_resolution_check(head, tower, demo_dir, trained_classes=frozenset({"lion"}))
    assert result["photos"] >= 150  # the demo photos are named after ImageNet classes
    assert result["unseen_photos"] == result["photos"] - 1
    assert result["adapted"] == result["frozen"] and result["frozen"]["top5"] >= 0.8
