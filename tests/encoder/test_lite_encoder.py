"""The default lite encoder on real photos: shape, normalisation, determinism, semantics, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from middleware.datasets import open_image
from middleware.encoder import create_encoder
from middleware.encoder.heads import load_heads
from middleware.encoder.lite import LiteEncoder
from middleware.encoder.towers import ImageTower, TextTower
from pmirs.errors import ModelUnavailableError

pytestmark = pytest.mark.slow


def _photo(demo_dir: Path, domain: str, label: str) -> Image.Image:
    folder = label.replace(" ", "_")
    return open_image(demo_dir / domain / folder / f"{folder}.jpg")


def test_outputs_are_unit_norm_float32_of_one_dim(lite_encoder, demo_dir):
    texts = lite_encoder.encode_texts(["a photo of a zebra", "a bowl of guacamole", "a school bus"])
    images = lite_encoder.encode_images([_photo(demo_dir, "mammals", "lion"), _photo(demo_dir, "food", "pizza")])
    assert texts.shape == (3, lite_encoder.dim) and images.shape == (2, lite_encoder.dim)
    assert texts.dtype == np.float32 and images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)


def test_encoding_is_deterministic_and_batch_independent(lite_encoder, demo_dir):
    photos = [_photo(demo_dir, "vehicles", "school bus"), _photo(demo_dir, "mammals", "lion")]
    together = lite_encoder.encode_images(photos, batch_size=2)
    one_by_one = np.concatenate([lite_encoder.encode_images([p], batch_size=1) for p in photos])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_array_equal(lite_encoder.encode_texts(["a zebra"]), lite_encoder.encode_texts(["a zebra"]))


def test_grayscale_and_odd_sizes_are_accepted(lite_encoder, demo_dir):
    gray = _photo(demo_dir, "mammals", "lion").convert("L").resize((37, 91))
    rgba = _photo(demo_dir, "food", "pizza").convert("RGBA")
    out = lite_encoder.encode_images([gray, rgba])
    assert out.shape == (2, lite_encoder.dim) and np.isfinite(out).all()


@pytest.mark.parametrize(
    ("domain", "label", "wrong"),
    [("mammals", "lion", "school bus"), ("food", "pizza", "lion"), ("vehicles", "school bus", "banana")],
)
def test_right_phrase_scores_higher_than_wrong_one(lite_encoder, demo_dir, domain, label, wrong):
    image = lite_encoder.encode_images([_photo(demo_dir, domain, label)])[0]
    right_text, wrong_text = lite_encoder.encode_texts([f"a photo of a {label}", f"a photo of a {wrong}"])
    assert image @ right_text > image @ wrong_text + 0.05


def test_empty_inputs_give_empty_arrays(lite_encoder):
    assert lite_encoder.encode_texts([]).shape == (0, lite_encoder.dim)
    assert lite_encoder.encode_images([]).shape == (0, lite_encoder.dim)


def test_version_names_the_heads(lite_encoder):
    assert lite_encoder.version == f"lite-{load_heads().version}"


def test_the_default_heads_are_the_federated_checkpoint_and_keep_sharp_photos_at_the_base(lite_encoder, base_encoder,
                                                                                         demo_dir):
    from middleware.encoder.heads import DEFAULT_HEADS_PATH, heads_version

    config = lite_encoder.config
    manifest = config.extra["federated"]
    assert DEFAULT_HEADS_PATH.name == f"fed-heads-{heads_version(DEFAULT_HEADS_PATH)}.pt"  # the name is its hash
    assert manifest["base_version"] == base_encoder.checkpoint.version
    assert config.tower_head and config.tuned_photos == "small" and set(config.extra["relevance"]) == {"image", "text"}
    assert config.mirror_average and config.extra["trained_on"].startswith("federated fine-tuning")
    sharp = _photo(demo_dir, "mammals", "lion")
    photos = [sharp, sharp.resize((64, 64))]
    tuned, base = lite_encoder.encode_images(photos), base_encoder.encode_images(photos)
    np.testing.assert_allclose(tuned[0], base[0], atol=1e-4)  # the sharp photo: the zero-shot base
    assert np.abs(tuned[1] - base[1]).max() > 1e-2  # the thumbnail: the federated terms
    np.testing.assert_allclose(lite_encoder.encode_texts(["a lion"]), base_encoder.encode_texts(["a lion"]),
                               atol=1e-5)  # the text head was not trained
    # Thumbnails get the generic direction back, so their cosines with a caption sit nearer the
    # sharp photos' (mixed collections rank both kinds together; benchmarks/results/mixed_kinds.json).
    assert config.tuned_offset > 0
    unshifted = lite_encoder.reconfigured(tuned_offset=0.0)
    assert unshifted.config.tuned_offset == 0.0 and lite_encoder.config.tuned_offset == config.tuned_offset
    assert unshifted.image_tower is lite_encoder.image_tower and unshifted.text_tower is lite_encoder.text_tower
    caption = lite_encoder.encode_texts(["a photo of a lion"])[0]
    assert tuned[1] @ caption > unshifted.encode_images(photos[1:])[0] @ caption + 0.05


def test_the_default_heads_manifest_describes_the_shipped_file(lite_encoder):
    """The JSON beside the default checkpoint is what people read: it must name this file and its calibration."""
    import json

    from middleware.encoder.heads import DEFAULT_HEADS_PATH, heads_version

    record = json.loads(DEFAULT_HEADS_PATH.with_suffix(".json").read_text())
    config = lite_encoder.config
    assert record["checkpoint"] == DEFAULT_HEADS_PATH.name and record["version"] == heads_version(DEFAULT_HEADS_PATH)
    assert record["tuned_offset"] == config.tuned_offset and record["mirror_average"] == config.mirror_average
    assert record["relevance"] == config.extra["relevance"]
    assert (record["tower_blocks"], record["tower_classifier"]) == (config.tower_blocks, config.tower_classifier)
    assert record["rounds"] == config.extra["federated"]["rounds"]


def test_missing_heads_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="heads not found"):
        create_encoder("lite", heads_path=tmp_path / "nope.pt")


def test_corrupt_heads_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="not a PMIRS heads checkpoint"):
        load_heads(bad)


def test_missing_tower_weights_are_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="weights not found"):
        ImageTower(weights_path=tmp_path / "missing.pth")
    with pytest.raises(ModelUnavailableError, match="text tower model directory"):
        TextTower(model_dir=tmp_path)


def test_corrupt_tower_weights_are_a_clear_error(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelUnavailableError, match="cannot load image tower weights"):
        ImageTower(weights_path=bad)


def test_unknown_encoder_spec_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="unknown encoder"):
        create_encoder("resnet-9000")


def test_a_tuned_tower_head_starts_equal_to_the_frozen_tower_and_then_moves(base_encoder, demo_dir, tmp_path):
    """Heads that tune the tower's last layer read pre-head maps; untrained, they reproduce the base."""
    import torch

    from middleware.encoder.features import PREHEAD_FORMAT
    from middleware.encoder.heads import save_heads, with_tower_head
    from middleware.encoder.lite import LiteEncoder

    base = base_encoder.checkpoint
    heads = with_tower_head(base.build(), base_encoder.image_tower.model)
    path = tmp_path / "tower-heads.pt"
    save_heads(path, heads, base.class_bank)
    tuned = LiteEncoder(path, image_tower=base_encoder.image_tower, text_tower=base_encoder.text_tower)
    photos = [_photo(demo_dir, "mammals", "lion"), _photo(demo_dir, "food", "pizza")]
    assert tuned.feature_format.startswith(PREHEAD_FORMAT) and tuned.image_features(photos).shape == (2, 320, 7, 7)
    np.testing.assert_allclose(tuned.encode_images(photos), base_encoder.encode_images(photos), atol=1e-4)

    def encoder_with(heads) -> LiteEncoder:
        save_heads(path, heads, base.class_bank)
        return LiteEncoder(path, image_tower=base_encoder.image_tower, text_tower=base_encoder.text_tower)

    with torch.no_grad():
        heads.image_features.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    before = encoder_with(heads).encode_images(photos)
    with torch.no_grad():
        heads.tower_head.conv.weight.mul_(1.5)  # only the tower head changes
    moved = encoder_with(heads)
    assert np.abs(moved.encode_images(photos) - before).max() > 1e-2
    with pytest.raises(ValueError, match="input maps of block 16"):
        moved.heads.pooled_features(torch.zeros(2, 1280))


def test_a_fresh_tower_head_reproduces_the_tower_and_never_updates_its_statistics(lite_encoder, demo_dir):
    import torch

    from middleware.encoder.heads import TowerHead
    from middleware.encoder.preprocess import images_to_array

    tower = lite_encoder.image_tower
    maps = tower.prehead_maps(images_to_array([_photo(demo_dir, "mammals", "lion"), _photo(demo_dir, "food", "pizza")]))
    head = TowerHead()
    head.copy_from_tower(tower.model)  # no .train()/.eval() call: BatchNorm must still use the tower's statistics
    before = head.bn.running_mean.clone()
    out = head(torch.from_numpy(maps)).detach().numpy()
    np.testing.assert_allclose(out, tower.pooled_from_maps(maps), atol=1e-4)
    assert torch.equal(head.bn.running_mean, before)
