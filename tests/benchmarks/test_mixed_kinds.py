"""The mixed-collection benchmark: its choice of offset and its scores on real photos of two kinds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.mixed_kinds import TIE, KindScorer, choose_offset, split_scorer
from middleware.datasets import LabelledImage, open_image, scan_image_folder
from pmirs.errors import DatasetError


def test_the_smallest_offset_within_the_tie_of_the_best_wins() -> None:
    sweep = {"0.0": {"map_mixed": 0.50}, "0.5": {"map_mixed": 0.70 - TIE / 2},
             "1.0": {"map_mixed": 0.70}, "1.5": {"map_mixed": 0.69}}
    assert choose_offset(sweep) == 0.5
    assert choose_offset({"0.0": {"map_mixed": 0.7}, "0.1": {"map_mixed": 0.7 - 2 * TIE}}) == 0.0


def test_the_offset_lifts_the_tuned_thumbnails_cosines_and_leaves_sharp_photos(lite_encoder, demo_dir: Path,
                                                                               tmp_path: Path) -> None:
    encoder = lite_encoder.reconfigured(tuned_offset=0.0)
    sharp = [p.path for p in scan_image_folder(demo_dir / "mammals")][:6]
    thumbnails = []
    for path in sharp:  # each demo photo's own 64-px thumbnail, saved under its label
        thumb = tmp_path / f"{path.stem}.jpg"
        open_image(path).resize((64, 64)).save(thumb)
        thumbnails.append(LabelledImage(path=thumb, label=path.stem))
    emb = encoder.encode_images([open_image(t.path) for t in thumbnails])
    scorer = KindScorer(encoder, thumbnails, emb, sharp)
    plain, shifted = scorer.scores(0.0), scorer.scores(1.0)
    assert shifted["own_thumbnail_cosine"] > plain["own_thumbnail_cosine"] + 0.05
    assert shifted["own_sharp_cosine"] == plain["own_sharp_cosine"]  # sharp photos keep the base
    assert 0.0 < plain["map_mixed"] <= 1.0 and 0.0 < shifted["map_thumbnails"] <= 1.0


def test_a_split_without_thumbnails_or_without_sharp_photos_is_a_clear_error(lite_encoder, demo_dir: Path,
                                                                             tmp_path: Path) -> None:
    photo = scan_image_folder(demo_dir / "mammals")[0].path
    sharp_split = tmp_path / "sharp" / "val" / "mammals" / photo.stem
    sharp_split.mkdir(parents=True)
    shutil.copy(photo, sharp_split / "a.jpg")
    with pytest.raises(DatasetError, match="thumbnails only"):
        split_scorer(lite_encoder, tmp_path / "sharp", "val", [demo_dir], tmp_path / "cache", None)
    thumbs = tmp_path / "thumbs" / "val" / "mammals" / photo.stem
    thumbs.mkdir(parents=True)
    open_image(photo).resize((64, 64)).save(thumbs / "a.jpg")
    (tmp_path / "fullres").mkdir()
    with pytest.raises(DatasetError, match="no sharp photo"):
        split_scorer(lite_encoder, tmp_path / "thumbs", "val", [tmp_path / "fullres"], tmp_path / "cache", None)
