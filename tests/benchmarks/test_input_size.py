"""The tower-accuracy-per-input-size benchmark: label -> ImageNet class mapping and real scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.input_size import tower_accuracy
from middleware.datasets import LabelledImage
from middleware.encoder.small_photos import imagenet_index


def test_labels_map_by_wnid_first_then_by_name(tmp_path: Path) -> None:
    (tmp_path / "classes.csv").write_text("label,wnid\nkitty,n02123045\n")  # wnid of "tabby"
    items = [LabelledImage(tmp_path / "a.jpg", label) for label in ("kitty", "Lion", "my holiday")]
    assert imagenet_index(items, tmp_path) == {"kitty": 281, "Lion": 291}


def test_the_tower_recognises_real_photos_of_imagenet_classes(demo_dir: Path) -> None:
    photos = [("mammals", "lion", 291), ("food", "pizza", 963), ("vehicles", "school_bus", 779)]
    items = [LabelledImage(demo_dir / d / name / f"{name}.jpg", name) for d, name, _ in photos]
    results = tower_accuracy(items, np.asarray([k for _, _, k in photos]), sizes=[224], filters=["bicubic", "bilinear"])
    assert set(results) == {"224", "224:bilinear"}  # the default filter keeps the plain size key
    for key in results:
        assert results[key]["top5"] == 1.0 and results[key]["top1"] >= 2 / 3


def test_an_unknown_filter_is_refused_before_anything_is_measured_or_written(tmp_path: Path) -> None:
    import argparse

    import pytest

    from benchmarks.input_size import _main

    out = tmp_path / "input_size.json"
    args = argparse.Namespace(data=str(tmp_path), split="", per_class=1, sizes="224", filters="bilinear,lanczos",
                              out=str(out))
    with pytest.raises(SystemExit, match="unknown resampling filter 'lanczos'"):
        _main(args)
    assert not out.exists()
