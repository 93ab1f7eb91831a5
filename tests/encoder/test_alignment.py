"""`pmirs train-heads` end to end on a tiny pretrain pool built from the demo photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import ImageOps

from middleware.datasets import open_image, scan_image_folder
from middleware.encoder.alignment import SMALL_INPUT_CANDIDATES, ZERO_SHOT_GRID, train_heads_on_pretrain
from middleware.encoder.heads import TowerHead, load_heads
from middleware.encoder.small_photos import AdaptConfig, SmallInput
from middleware.encoder.towers import ImageTower
from middleware.encoder.training import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory, demo_dir: Path) -> Path:
    """<root>/pretrain/<label>/{a,b,c}.png: 64-px thumbnails (like the real pool) of eight demo photos."""
    root = tmp_path_factory.mktemp("tiny-pretrain")
    for item in scan_image_folder(demo_dir / "general")[:8]:
        photo = open_image(item.path).resize((64, 64))
        folder = root / "pretrain" / item.path.parent.name
        folder.mkdir(parents=True)
        photo.save(folder / "a.png")
        ImageOps.mirror(photo).save(folder / "b.png")
        photo.convert("L").save(folder / "c.png")
    return root


def test_train_heads_writes_a_loadable_checkpoint_report_and_curve(tiny_pretrain, tmp_path):
    out = tmp_path / "heads.pt"
    report = train_heads_on_pretrain(tiny_pretrain, out, tmp_path / "fc", per_class=None, holdout_fraction=0.25,
                                     train_config=TrainConfig(epochs=2, batch_size=8), tune=True,
                                     adapt_config=AdaptConfig(epochs=2, lr=1e-3, batch_size=8))
    checkpoint = load_heads(out)
    assert checkpoint.version == report.checkpoint_version
    assert len(report.heldout_classes) == 2
    assert [row["epoch"] for row in report.heldout_curve] == [0, 1, 2]  # epoch 0 is the zero-shot base
    assert 0 <= report.chosen_epochs <= 2
    assert len(report.conse["trials"]) == len(ZERO_SHOT_GRID["conse_top_k"]) * len(
        ZERO_SHOT_GRID["conse_temperature"]) * len(ZERO_SHOT_GRID["center_strength"])
    chosen = report.conse["chosen"]
    assert checkpoint.config.conse_top_k == chosen["conse_top_k"]
    assert checkpoint.config.center_strength == chosen["center_strength"]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["checkpoint_version"] == checkpoint.version
    assert out.with_suffix(".png").stat().st_size > 1000
    heads = checkpoint.build()
    trained = any(float(torch.count_nonzero(p)) for n, p in heads.named_parameters()
                  if n != "logit_scale" and p.requires_grad)
    assert trained == (report.chosen_epochs > 0)  # zero epochs kept = exactly the zero-shot base
    # one layer per input tried: size and upsampling filter
    assert set(report.small_photos["by_input"]) == {c.label for c in SMALL_INPUT_CANDIDATES} == {
        "224", "160", "224:bilinear"}
    chosen = report.small_photos["chosen_input"]
    small = report.small_photos["by_input"][chosen]
    assert small["learnable_photos"] == 24 and [row["epoch"] for row in small["heldout_curve"]] == [0, 1, 2]
    assert {"tower", "f1@10", "t2i_map"} <= set(small["heldout_curve"][0])
    best = max(report.small_photos["by_input"].values(),
               key=lambda r: max(row["f1@10"] + row["t2i_map"] for row in r["heldout_curve"]))
    assert best is small
    # Thumbnails take the small-photo path; its layer is the tower's own unless an adapted epoch won.
    layer = heads.small_photo_layer
    assert layer is not None and layer.max_side == 112
    assert SmallInput(layer.input_size, layer.resample).label == chosen
    own = TowerHead()
    own.copy_from_tower(ImageTower().model)
    assert torch.equal(layer.head.conv.weight, own.conv.weight) == (small["chosen_epochs"] == 0)
    assert small["sharp_photos"]["photos"] >= 150
