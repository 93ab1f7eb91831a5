"""`pmirs train-heads` end to end on a tiny pretrain pool built from the demo photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import ImageOps

from middleware.datasets import open_image, scan_image_folder
from middleware.encoder.alignment import ZERO_SHOT_GRID, train_heads_on_pretrain
from middleware.encoder.heads import load_heads
from middleware.encoder.training import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory, demo_dir: Path) -> Path:
    """<root>/pretrain/<label>/{a,b,c}.png for eight general-domain demo photos."""
    root = tmp_path_factory.mktemp("tiny-pretrain")
    for item in scan_image_folder(demo_dir / "general")[:8]:
        photo = open_image(item.path)
        folder = root / "pretrain" / item.path.parent.name
        folder.mkdir(parents=True)
        photo.save(folder / "a.png")
        ImageOps.mirror(photo).save(folder / "b.png")
        photo.convert("L").save(folder / "c.png")
    return root


def test_train_heads_writes_a_loadable_checkpoint_report_and_curve(tiny_pretrain, tmp_path):
    out = tmp_path / "heads.pt"
    report = train_heads_on_pretrain(tiny_pretrain, out, tmp_path / "fc", per_class=None, holdout_fraction=0.25,
                                     train_config=TrainConfig(epochs=2, batch_size=8), tune=True)
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
    trained = any(float(torch.count_nonzero(p)) for n, p in heads.named_parameters() if n != "logit_scale")
    assert trained == (report.chosen_epochs > 0)  # zero epochs kept = exactly the zero-shot base
