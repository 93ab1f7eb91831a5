"""Preprocessing: the resampling filter is a named, validated choice that really changes the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from middleware.encoder.preprocess import DEFAULT_RESAMPLING, images_to_array, resize_center_crop
from middleware.encoder.small_photos import SmallInput


def _checkerboard(size: int = 16) -> Image.Image:
    cells = (np.indices((size, size)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([cells] * 3, axis=-1))


def test_upsampling_filters_give_different_pixels() -> None:
    photo = _checkerboard()
    bicubic = np.asarray(resize_center_crop(photo, 64), dtype=np.int16)
    bilinear = np.asarray(resize_center_crop(photo, 64, "bilinear"), dtype=np.int16)
    assert bicubic.shape == bilinear.shape == (64, 64, 3)
    # Bicubic overshoots the black/white edges (its halos clip at 0 and 255); bilinear never leaves
    # the range spanned by its neighbours, so it is the smoother of the two.
    assert np.abs(bicubic - bilinear).max() > 10
    assert np.abs(np.diff(bilinear, axis=1)).mean() < np.abs(np.diff(bicubic, axis=1)).mean()
    default = images_to_array([photo], 64, resample=DEFAULT_RESAMPLING)
    np.testing.assert_array_equal(images_to_array([photo], 64), default)


def test_an_unknown_filter_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown resampling filter 'lanczos'"):
        images_to_array([_checkerboard()], 32, resample="lanczos")


def test_small_inputs_parse_from_their_labels() -> None:
    assert SmallInput.parse("224") == SmallInput(224, "bicubic")
    assert SmallInput.parse(" 160:bilinear ") == SmallInput(160, "bilinear")
    for small_input in (SmallInput(224), SmallInput(160, "bilinear")):
        assert SmallInput.parse(small_input.label) == small_input
    for bad in ("", "big", "-3", "224:lanczos"):
        with pytest.raises(ValueError, match="small-photo input|resampling filter"):
            SmallInput.parse(bad)


def test_train_heads_reads_its_small_inputs_and_refuses_bad_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from pmirs.cli import build_parser

    argv = ["train-heads", "--data", "d", "--small-inputs", "224,160:bilinear"]
    assert build_parser(argv).parse_args(argv).small_inputs == [SmallInput(224), SmallInput(160, "bilinear")]
    defaults = build_parser(argv[:3]).parse_args(argv[:3]).small_inputs
    assert SmallInput(224, "bilinear") in defaults  # the filter that won on held-out classes stays a candidate
    bad = ["train-heads", "--data", "d", "--small-inputs", "224:lanczos"]
    with pytest.raises(SystemExit) as exit_info:
        build_parser(bad).parse_args(bad)
    assert exit_info.value.code == 2 and "unknown resampling filter 'lanczos'" in capsys.readouterr().err
