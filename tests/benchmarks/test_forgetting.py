"""The forgetting check: base vs tuned heads on untrained photos, and its shipping verdict."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.forgetting import (
    DRAWS,
    FORGETTING_TOLERANCE,
    MIN_QUERIES,
    N_VALUES,
    _main,
    draws_for,
    folder_set,
    run_forgetting_benchmark,
    verdict,
)
from middleware.datasets import scan_image_folder
from middleware.encoder.heads import BASE_HEADS_PATH, load_heads, save_heads
from pmirs.commands.keys import UsageError

CLASSES = 12  # general demo photos: classes no fine-tuning saw, one sharp photo each


@pytest.fixture(scope="module")
def general_folder(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A <label>/<photo> folder of the first ``CLASSES`` general demo photos."""
    root = tmp_path_factory.mktemp("general")
    for item in scan_image_folder(demo_dir / "general")[:CLASSES]:
        (root / item.path.parent.name).mkdir()
        shutil.copy(item.path, root / item.path.parent.name / item.path.name)
    return root


@pytest.fixture(scope="module")
def scrambled_heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base with its image projection replaced by noise: a model that has forgotten."""
    base = load_heads(BASE_HEADS_PATH)
    state = dict(base.state_dict)
    state["image_residual.weight"] = torch.randn(state["image_residual.weight"].shape, generator=torch.Generator()
                                                 .manual_seed(0)) * 5
    path = tmp_path_factory.mktemp("heads") / "scrambled.pt"
    save_heads(path, replace(base, state_dict=state).build(), base.class_bank)
    return path


def test_the_verdict_allows_a_drop_up_to_the_tolerance() -> None:
    base = {"f1@10": 0.80, "t2i_map": 0.70}
    assert verdict(base, {"f1@10": 0.80 - FORGETTING_TOLERANCE, "t2i_map": 0.60}) == {
        "f1@10_drop": FORGETTING_TOLERANCE, "map_drop": 0.1, "within_tolerance": True}  # mAP is reported only
    assert not verdict(base, {"f1@10": 0.77, "t2i_map": 0.70})["within_tolerance"]
    assert verdict(base, {"f1@10": 0.85, "t2i_map": 0.70})["f1@10_drop"] == -0.05


def test_a_folder_with_few_photos_per_class_gets_enough_draws() -> None:
    assert draws_for(photos=6540, classes=109) == DRAWS  # pretrain/, 60 per class: bench federated's 6
    assert draws_for(photos=109, classes=109) * min(N_VALUES) >= MIN_QUERIES


def test_the_default_keeps_sharp_photos_at_the_base_and_is_shippable(general_folder: Path, tmp_path: Path) -> None:
    sets = [folder_set(general_folder), folder_set(general_folder, thumbnail_side=64)]
    results = run_forgetting_benchmark(sets, out=tmp_path / "forgetting.json", feature_cache=tmp_path / "cache")
    sharp, thumbs = (results["sets"][s.name] for s in sets)
    assert sharp["tuned"] == sharp["base"]  # the default gates its tuned terms to thumbnails
    assert thumbs["tuned"] != thumbs["base"]
    assert sharp["photos"] == thumbs["photos"] == CLASSES
    assert (sharp["label"], thumbs["label"]) == (general_folder.name, f"{general_folder.name} (64 px)")
    assert results["shippable"] == all(s["within_tolerance"] for s in (sharp, thumbs))
    assert json.loads((tmp_path / "forgetting.json").read_text())["sets"].keys() == results["sets"].keys()
    table = (tmp_path / "forgetting.md").read_text()
    assert all(f"| {s.name} |" in table for s in sets)
    assert (tmp_path / "forgetting.png").stat().st_size > 0


def test_heads_that_forgot_are_not_shippable_and_the_command_fails(general_folder: Path, scrambled_heads: Path,
                                                                   tmp_path: Path) -> None:
    args = argparse.Namespace(data="", heldout_per_class=60, folder=[str(general_folder)], thumbnail_side=0,
                              heads=str(scrambled_heads), base_heads="", tolerance=FORGETTING_TOLERANCE,
                              out=str(tmp_path / "f.json"), feature_cache="")
    assert _main(args) == 1
    entry = json.loads((tmp_path / "f.json").read_text())["sets"][str(general_folder)]
    assert entry["f1@10_drop"] > FORGETTING_TOLERANCE and not entry["within_tolerance"]
    assert "FORGETS" in (tmp_path / "f.md").read_text()


def test_nothing_to_check_is_a_usage_error(tmp_path: Path) -> None:
    args = argparse.Namespace(data="", heldout_per_class=60, folder=[], thumbnail_side=0, heads="", base_heads="",
                              tolerance=FORGETTING_TOLERANCE, out=str(tmp_path / "f.json"), feature_cache="")
    with pytest.raises(UsageError, match="nothing to check"):
        _main(args)
