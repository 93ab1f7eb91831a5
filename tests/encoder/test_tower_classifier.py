"""A tuned copy of the tower's ImageNet classifier (``tower_classifier``): ConSE reads it for tuned photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.relevance import thumbnail_copies
from middleware.datasets import open_image, scan_image_folder
from middleware.encoder.heads import HeadsConfig, save_heads, with_tower_head
from middleware.encoder.lite import LiteEncoder
from middleware.encoder.training import ImageExamples

pytestmark = pytest.mark.slow


def _encoder(path: Path, heads, like: LiteEncoder) -> LiteEncoder:
    save_heads(path, heads, like.checkpoint.class_bank)
    return LiteEncoder(path, image_tower=like.image_tower, text_tower=like.text_tower)


def test_a_tuned_classifier_needs_the_tuned_tower_layers_it_reads() -> None:
    with pytest.raises(ValueError, match="needs tower_head"):
        HeadsConfig(tower_classifier=True)
    assert HeadsConfig(tower_head=True, tower_classifier=True).tower_classifier


def test_an_untrained_tuned_classifier_embeds_as_the_tower_and_moves_only_tuned_photos(
        base_encoder, demo_dir, tmp_path, monkeypatch) -> None:
    """It starts as the tower's classifier; changing it moves thumbnails (tuned) and never sharp photos,
    and thumbnails then no longer run the frozen tower's classifier at all."""
    photos = [open_image(item.path) for item in scan_image_folder(demo_dir)[:3]]
    thumbnails = thumbnail_copies(photos)
    base = base_encoder.checkpoint.reconfigured(tuned_photos="small")
    tower = base_encoder.image_tower.model
    reference = _encoder(tmp_path / "frozen.pt", with_tower_head(base.build(), tower, 1), base_encoder)
    heads = with_tower_head(base.build(), tower, 1, classifier=True)
    assert torch.equal(heads.tower_classifier.weight, tower._fc.weight)
    tuned = _encoder(tmp_path / "tuned.pt", heads, base_encoder)
    for kind in (photos, thumbnails):
        np.testing.assert_allclose(tuned.encode_images(kind), reference.encode_images(kind), atol=1e-4)
    with torch.no_grad():  # favour another class for every photo: the ConSE mixture changes
        heads.tower_classifier.bias[torch.arange(0, 1000, 7)] += 5.0
    moved = _encoder(tmp_path / "moved.pt", heads, base_encoder)
    assert np.abs(moved.encode_images(thumbnails) - reference.encode_images(thumbnails)).max() > 1e-2
    np.testing.assert_allclose(moved.encode_images(photos), reference.encode_images(photos), atol=1e-4)

    def frozen_classifier(pooled):
        raise AssertionError("the frozen classifier ran")

    monkeypatch.setattr(moved.image_tower, "logits_from_pooled", frozen_classifier)
    moved.encode_images(thumbnails)  # tuned photos: only the tuned classifier
    with pytest.raises(AssertionError, match="frozen classifier ran"):
        moved.encode_images(photos)


def test_training_examples_for_a_tuned_classifier_need_the_class_bank(base_encoder) -> None:
    heads = with_tower_head(base_encoder.checkpoint.build(), base_encoder.image_tower.model, 0, classifier=True)
    maps = np.zeros((2, 320, 7, 7), dtype=np.float16)
    examples = ImageExamples(np.zeros((2, 384), np.float32), np.zeros((2, 1280), np.float32), maps)
    with pytest.raises(ValueError, match="need the ConSE class bank"):
        examples.embed(heads)
    examples.class_bank = base_encoder.checkpoint.class_bank
    embedding, logits = examples.embed_with_logits(heads)
    assert embedding.shape == (2, 384) and logits.shape == (2, 1000)
