"""Tuning the image tower's last MBConv blocks (``tower_blocks``): start at the tower, read block input maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.relevance import thumbnail_copies
from middleware.datasets import open_image, scan_image_folder
from middleware.encoder.features import maps_format
from middleware.encoder.heads import HeadsConfig, TowerBlocks, save_heads, with_tower_head
from middleware.encoder.lite import LiteEncoder

pytestmark = pytest.mark.slow


def _encoder(path: Path, heads, like: LiteEncoder) -> LiteEncoder:
    save_heads(path, heads, like.checkpoint.class_bank)
    return LiteEncoder(path, image_tower=like.image_tower, text_tower=like.text_tower)


def _photos(demo_dir: Path, count: int = 3) -> list:
    return [open_image(item.path) for item in scan_image_folder(demo_dir)[:count]]


def test_tuned_blocks_must_sit_in_front_of_a_tuned_tower_head_and_stay_few() -> None:
    with pytest.raises(ValueError, match="only with tower_head"):
        HeadsConfig(tower_blocks=1)
    with pytest.raises(ValueError, match="tower_blocks must be 0..5"):
        HeadsConfig(tower_head=True, tower_blocks=6)
    assert HeadsConfig(tower_head=True, tower_blocks=2).first_tuned_block == 14
    assert HeadsConfig(tower_head=True, tower_blocks=5).first_tuned_block == 11
    assert HeadsConfig(tower_head=True).first_tuned_block == 16


@pytest.mark.parametrize("count", [2, 5])  # 5: from block 11, which downsamples 14x14 maps to 7x7
def test_fresh_blocks_reproduce_the_tower_and_never_update_its_statistics(lite_encoder, demo_dir, count: int) -> None:
    from middleware.encoder.preprocess import images_to_array

    tower = lite_encoder.image_tower
    batch = images_to_array(_photos(demo_dir, 2))
    blocks = TowerBlocks(count)
    blocks.copy_from_tower(tower.model)
    blocks.train()  # BatchNorm must keep the tower's statistics even in training mode
    bn = next(m for m in blocks.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    out = blocks(torch.from_numpy(tower.block_input_maps(batch, 16 - count))).detach().numpy()
    np.testing.assert_allclose(out, tower.prehead_maps(batch), atol=1e-4)
    assert torch.equal(bn.running_mean, before)


def test_an_encoder_with_tuned_blocks_starts_at_its_heads_and_moves_with_the_blocks(base_encoder, demo_dir,
                                                                                 tmp_path) -> None:
    """Thumbnails and sharp photos both read block input maps; untrained blocks change no embedding."""
    photos = _photos(demo_dir)
    thumbnails = thumbnail_copies(photos)
    base = base_encoder.checkpoint.reconfigured(tuned_photos="small")  # image terms apply to thumbnails only
    tower = base_encoder.image_tower.model

    def with_terms(blocks: int):
        heads = with_tower_head(base.build(), tower, blocks=blocks)
        with torch.no_grad():  # a pooled-feature term, so the tuned tower layers show in the embedding
            heads.image_features.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        return heads

    reference = _encoder(tmp_path / "head.pt", with_terms(0), base_encoder)
    heads = with_terms(1)
    tuned = _encoder(tmp_path / "blocks.pt", heads, base_encoder)
    assert tuned.feature_format.startswith(maps_format(15)) and tuned.feature_format != reference.feature_format
    assert tuned.image_features(photos).shape == (3, 192, 7, 7)
    for kind in (photos, thumbnails):
        np.testing.assert_allclose(tuned.encode_images(kind), reference.encode_images(kind), atol=1e-4)
    with torch.no_grad():
        heads.tower_blocks.blocks[0]._project_conv.weight.mul_(2.0)
    moved = _encoder(tmp_path / "moved.pt", heads, base_encoder)
    assert np.abs(moved.encode_images(thumbnails) - reference.encode_images(thumbnails)).max() > 1e-2
    np.testing.assert_allclose(moved.encode_images(photos), reference.encode_images(photos), atol=1e-4)


def test_photos_that_keep_the_base_never_run_the_tuned_tower_layers(lite_encoder, demo_dir, monkeypatch) -> None:
    """The default tunes thumbnails only: a sharp image query skips the tuned blocks and head (hot path)."""
    photos = _photos(demo_dir, 2)
    expected = lite_encoder.encode_images(photos)

    def tuned_layers(features):
        raise AssertionError("the tuned tower layers ran for photos that keep the base embedding")

    monkeypatch.setattr(lite_encoder.heads, "pooled_features", tuned_layers)
    np.testing.assert_array_equal(lite_encoder.encode_images(photos), expected)
    with pytest.raises(AssertionError, match="tuned tower layers ran"):
        lite_encoder.encode_images(thumbnail_copies(photos))
