"""Mirror averaging (test-time flip): tuned photos embed as the mean with their mirror image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ImageOps

from benchmarks.mirror_average import choose
from middleware.datasets import LabelledImage, open_image, scan_image_folder
from middleware.encoder.heads import shift_toward
from middleware.encoder.lite import LiteEncoder


def _encoders(lite_encoder, **config) -> dict[bool, LiteEncoder]:
    """The default heads (tuned on thumbnails) with mirror averaging off and on."""
    return {setting: lite_encoder.reconfigured(mirror_average=setting, **config) for setting in (False, True)}


def _photos(demo_dir: Path) -> list:
    sharp = open_image(scan_image_folder(demo_dir / "vehicles")[2].path)
    return [sharp, sharp.resize((64, 64))]


def test_tuned_photos_become_the_mean_of_both_views_before_the_offset(lite_encoder, demo_dir: Path) -> None:
    assert lite_encoder.config.tuned_photos == "small" and lite_encoder.config.tuned_offset > 0
    offset = lite_encoder.config.tuned_offset
    plain = _encoders(lite_encoder, tuned_offset=0.0)[False]
    averaged = _encoders(lite_encoder)[True]
    sharp, thumbnail = _photos(demo_dir)
    views = plain.encode_images([thumbnail, ImageOps.mirror(thumbnail)])
    assert views[0] @ views[1] < 0.999  # the two views differ, so the mean is a change
    mean = torch.nn.functional.normalize(torch.from_numpy(views.sum(axis=0, keepdims=True)), dim=-1)
    expected = shift_toward(mean, averaged.heads.generic_direction().detach(), offset).numpy()
    np.testing.assert_allclose(averaged.encode_images([thumbnail]), expected, atol=1e-5)
    # The sharp photo is of the untuned kind: it keeps the base, with no second tower pass.
    np.testing.assert_allclose(averaged.encode_images([sharp]), lite_encoder.encode_images([sharp]), atol=1e-6)
    assert not averaged.needs_mirrors(averaged.small_photos([sharp.size]), 1)
    assert averaged.needs_mirrors(averaged.small_photos([thumbnail.size]), 1)


def test_cached_embeddings_match_what_the_product_indexes(lite_encoder, demo_dir: Path, tmp_path: Path) -> None:
    averaged = _encoders(lite_encoder)[True]
    items = []
    for item in scan_image_folder(demo_dir / "food")[:3]:  # 64-px thumbnails saved as files, under their label
        (tmp_path / "photos" / item.label).mkdir(parents=True)
        path = tmp_path / "photos" / item.label / "thumb.png"
        open_image(item.path).resize((64, 48)).save(path)
        items.append(LabelledImage(path=path, label=item.label))
    cache = tmp_path / "cache"
    plain = _encoders(lite_encoder)[False]
    plain.cached_embeddings(items, cache)  # only the photos' own features
    assert plain.embeddings_cached(items, cache) and not averaged.embeddings_cached(items, cache)
    cached = averaged.cached_embeddings(items, cache)
    assert averaged.embeddings_cached(items, cache)  # what `bench privacy` checks before reading the cache
    np.testing.assert_allclose(cached, averaged.encode_images([open_image(i.path) for i in items]), atol=2e-3)
    from_file = averaged.cached_embeddings(items, cache)  # float16 maps now, as the fresh pass kept float32
    np.testing.assert_allclose(averaged.cached_embeddings(items, cache, batch_size=2), from_file, atol=1e-6)
    assert len(list(cache.glob("*.npz"))) == 2 * len(items)  # each folder: its photos' and their mirrors' features
    features = averaged.image_features([open_image(i.path) for i in items])
    with pytest.raises(ValueError, match="mirror"):
        averaged.embed_image_features(features, small=np.ones(len(items), dtype=bool))


def test_cached_embeddings_of_a_folder_mixing_thumbnails_and_sharp_photos_match_the_product(
        lite_encoder, demo_dir: Path, tmp_path: Path) -> None:
    items = []
    for k, item in enumerate(scan_image_folder(demo_dir / "food")[:4]):  # one folder: sharp, thumb, sharp, thumb
        (tmp_path / "photos").mkdir(exist_ok=True)
        path = tmp_path / "photos" / f"{k}.png"
        photo = open_image(item.path)
        (photo.resize((64, 64)) if k % 2 else photo).save(path)
        items.append(LabelledImage(path=path, label=item.label))
    assert lite_encoder.heads.tower_head is not None  # whose cached maps used to be refused for mixed folders
    expected = lite_encoder.encode_images([open_image(i.path) for i in items])
    np.testing.assert_allclose(lite_encoder.cached_embeddings(items, tmp_path / "cache"), expected, atol=2e-3)
    term_inputs = lite_encoder.cached_image_term_inputs(items, tmp_path / "cache")
    assert term_inputs.shape == (len(items), lite_encoder.config.image_feature_dim)
    alone = lite_encoder.cached_image_term_inputs([items[1], items[3]], tmp_path / "cache")  # the thumbnails alone
    np.testing.assert_allclose(term_inputs[[1, 3]], alone, atol=1e-6)


def test_the_benchmark_switches_it_on_only_when_held_out_f1_rises_and_map_holds() -> None:
    def entry(f1_off: float, f1_on: float, map_off: float, map_on: float) -> dict:
        return {"off": {"f1@10": f1_off, "t2i_map": map_off}, "on": {"f1@10": f1_on, "t2i_map": map_on}}

    assert choose({"pretrain": entry(0.80, 0.81, 0.60, 0.61)})
    assert not choose({"pretrain": entry(0.80, 0.81, 0.60, 0.59)})  # ranking got worse
    assert not choose({"pretrain": entry(0.80, 0.80, 0.60, 0.62)})  # F1 did not move
    assert not choose({"a": entry(0.80, 0.83, 0.60, 0.61), "b": entry(0.80, 0.75, 0.60, 0.61)})  # summed


def test_the_benchmark_needs_held_out_classes_to_choose_on(tmp_path: Path) -> None:
    from benchmarks.mirror_average import photo_sets
    from pmirs.errors import DatasetError, PMIRSError

    (tmp_path / "val" / "food" / "banana").mkdir(parents=True)
    with pytest.raises(DatasetError, match="pretrain/"):
        photo_sets(tmp_path, [], 64)
    assert issubclass(DatasetError, PMIRSError)  # the CLI prints it as a clear error, not a traceback
