"""The feature cache: one tower pass per photo, formats kept apart, changed photos recomputed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from middleware.datasets import scan_image_folder
from middleware.encoder.features import PREHEAD_FORMAT, features_cached, tower_outputs


class CountingTower:
    """A stand-in image tower that counts the photos it runs on (same methods as ImageTower)."""

    def __init__(self) -> None:
        self.calls = 0

    def block_input_maps(self, batch: np.ndarray, first: int) -> np.ndarray:
        self.calls += len(batch)
        channels = 320 if first == 16 else 192
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, None, None, None], channels * 49, 1).reshape(
            len(batch), channels, 7, 7)

    def frozen_tail(self, maps: np.ndarray, first: int) -> np.ndarray:
        return np.asarray(maps) if first == 16 else np.repeat(np.asarray(maps)[:, :1], 320, 1)

    def pooled_from_maps(self, maps: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(maps, dtype=np.float32).mean(axis=(1, 2, 3))[:, None], 1280, 1)

    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += len(batch)
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, None], 1280, 1), np.zeros((len(batch), 1000))

    def logits_from_pooled(self, pooled: np.ndarray) -> np.ndarray:
        return np.asarray(pooled)[:, :1000] * 2


def _photos(root: Path) -> list:
    for k, shade in enumerate((30, 200)):
        folder = root / "things" / f"label{k}"
        folder.mkdir(parents=True)
        Image.new("RGB", (16, 16), (shade, shade, shade)).save(folder / "a.png")
    return scan_image_folder(root)


def test_each_photo_goes_through_the_tower_once_per_format(tmp_path: Path) -> None:
    items, tower, cache = _photos(tmp_path / "photos"), CountingTower(), tmp_path / "cache"
    pooled = tower_outputs(items, tower, cache)
    assert pooled.maps is None and pooled.pooled.shape == (2, 1280) and tower.calls == 2
    with_maps = tower_outputs(items, tower, cache, with_maps=True)
    assert with_maps.maps.shape == (2, 320, 7, 7) and tower.calls == 4  # maps are another format
    again = tower_outputs(items, tower, cache, with_maps=True)
    assert tower.calls == 4  # both formats now come from the cache
    np.testing.assert_allclose(again.maps, with_maps.maps)
    # Pooled features derived from cached maps agree with the pooled format (up to float16 storage).
    np.testing.assert_allclose(with_maps.pooled, pooled.pooled, rtol=1e-2)
    np.testing.assert_allclose(with_maps.logits, tower.logits_from_pooled(with_maps.pooled))
    assert pooled.pooled[0, 0] < pooled.pooled[1, 0]  # the darker photo really is the first one


def test_each_upsampling_filter_is_a_format_of_its_own(tmp_path: Path) -> None:
    items, tower, cache = _photos(tmp_path / "photos"), CountingTower(), tmp_path / "cache"
    tower_outputs(items, tower, cache, with_maps=True)
    assert tower.calls == 2
    tower_outputs(items, tower, cache, with_maps=True, resample="bilinear")
    assert tower.calls == 4  # not the bicubic maps again
    tower_outputs(items, tower, cache, with_maps=True, resample="bilinear")
    tower_outputs(items, tower, cache, with_maps=True, resample="bicubic")
    assert tower.calls == 4


def test_a_changed_photo_is_recomputed(tmp_path: Path) -> None:
    items, tower, cache = _photos(tmp_path / "photos"), CountingTower(), tmp_path / "cache"
    tower_outputs(items, tower, cache)
    Image.new("RGB", (16, 16), (90, 90, 90)).save(items[0].path)
    tower_outputs(items, tower, cache)
    assert tower.calls == 3


def test_a_touched_but_unchanged_photo_stays_cached(tmp_path: Path) -> None:
    items, tower, cache = _photos(tmp_path / "photos"), CountingTower(), tmp_path / "cache"
    tower_outputs(items, tower, cache)
    os.utime(items[0].path, (1, 1))  # as a re-synced data folder leaves it: same bytes, new time
    tower_outputs(items, tower, cache)
    assert tower.calls == 2


def test_features_cached_tells_whether_extraction_is_needed(tmp_path: Path) -> None:
    items, tower, cache = _photos(tmp_path / "photos"), CountingTower(), tmp_path / "cache"
    assert not features_cached(items, cache)
    tower_outputs(items, tower, cache)
    assert features_cached(items, cache) and not features_cached(items, cache, feature_format=PREHEAD_FORMAT)
    Image.new("RGB", (16, 16), (90, 90, 90)).save(items[1].path)
    assert not features_cached(items, cache)


def test_small_photos_take_their_own_path_and_cache(tmp_path: Path) -> None:
    import pytest
    import torch

    from middleware.encoder.heads import TowerHead
    from middleware.encoder.small_photos import SmallPhotoLayer

    items, tower, cache = _photos(tmp_path / "photos"), CountingTower(), tmp_path / "cache"
    Image.new("RGB", (200, 150), (200, 200, 200)).save(items[1].path)  # the second photo is not small
    torch.manual_seed(0)
    layer = SmallPhotoLayer(TowerHead().eval(), max_side=112, input_size=160)
    out = tower_outputs(items, tower, cache, small_photos=layer)
    assert tower.calls == 2 and out.maps is None
    thumbnail_maps = tower_outputs(items[:1], tower, cache, with_maps=True, image_size=160).maps
    np.testing.assert_allclose(out.pooled[0], layer.read(thumbnail_maps)[0], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(out.pooled[1], tower_outputs(items[1:], tower, cache).pooled[0])
    assert tower.calls == 2  # both paths were cached
    with pytest.raises(ValueError, match="one kind"):
        tower_outputs(items, tower, cache, with_maps=True, small_photos=layer)
    assert tower_outputs(items[:1], tower, cache, with_maps=True, small_photos=layer).maps.shape == (1, 320, 7, 7)


class SidedTower(CountingTower):
    """Maps that tell left from right: the mean of each photo's left half minus that of its right half."""

    def block_input_maps(self, batch: np.ndarray, first: int) -> np.ndarray:
        self.calls += len(batch)
        half = batch.shape[-1] // 2
        side = batch[..., :half].mean(axis=(1, 2, 3)) - batch[..., half:].mean(axis=(1, 2, 3))
        return np.repeat(side[:, None, None, None], 192 * 49, 1).reshape(len(batch), 192, 7, 7)


def test_mirrored_maps_are_the_mirror_images_maps_cached_apart(tmp_path: Path) -> None:
    import pytest

    items, tower, cache = _photos(tmp_path / "photos"), SidedTower(), tmp_path / "cache"
    for k, item in enumerate(items):  # dark on the left for the first photo, on the right for the second
        pixels = np.full((16, 16, 3), 220, dtype=np.uint8)
        (pixels[:, :8] if k == 0 else pixels[:, 8:])[:] = 20
        Image.fromarray(pixels).save(item.path)
    out = tower_outputs(items, tower, cache, with_maps=True, first_block=15, mirrored=True)
    assert tower.calls == 4 and out.mirrored_maps.shape == out.maps.shape == (2, 192, 7, 7)
    assert out.maps[0, 0, 0, 0] < -1 and out.maps[1, 0, 0, 0] > 1  # the photos really are sided
    np.testing.assert_allclose(out.mirrored_maps, -out.maps, rtol=1e-2)
    plain = tower_outputs(items, tower, cache, with_maps=True, first_block=15)
    assert plain.mirrored_maps is None and tower.calls == 4  # the photos' own maps were not overwritten
    np.testing.assert_allclose(plain.maps, out.maps, rtol=1e-3)  # float16 in the cache
    assert tower_outputs(items, tower, cache, with_maps=True, first_block=15, mirrored=True).select(
        np.array([1])).mirrored_maps.shape == (1, 192, 7, 7) and tower.calls == 4
    with pytest.raises(ValueError, match="need with_maps"):
        tower_outputs(items, tower, cache, mirrored=True)


def test_an_interrupted_pass_keeps_what_it_computed(tmp_path: Path) -> None:
    import pytest

    from middleware.encoder.features import cached_image_features

    items, cache = _photos(tmp_path / "photos"), tmp_path / "cache"
    calls = []

    def extract(images: list) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops a long caching pass
        return np.ones((len(images), 4))

    with pytest.raises(KeyboardInterrupt):
        cached_image_features(items, extract, cache, batch_size=1)
    assert features_cached(items[:1], cache) and not features_cached(items, cache)
    assert cached_image_features(items, extract, cache, batch_size=1).shape == (2, 4) and calls == [1, 1, 1]


def test_a_folder_file_is_written_once_per_pass_not_per_batch(tmp_path: Path, monkeypatch) -> None:
    import middleware.encoder.features as features

    root = tmp_path / "photos" / "things" / "label0"
    root.mkdir(parents=True)
    for k in range(5):
        Image.new("RGB", (16, 16), (40 * k, 0, 0)).save(root / f"{k}.png")
    saved = []
    real_save = features._save_folder_cache
    monkeypatch.setattr(features, "_save_folder_cache", lambda path, cached: (saved.append(len(cached)),
                                                                               real_save(path, cached)))
    items = scan_image_folder(tmp_path / "photos")
    features.cached_image_features(items, lambda images: np.ones((len(images), 4)), tmp_path / "cache", batch_size=2)
    assert saved == [5] and features_cached(items, tmp_path / "cache")
