"""The small-photo layer: its training loop, its size gate, and the encoder paths that read it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from middleware.datasets import open_image, scan_image_folder
from middleware.encoder.heads import DualHeads, TowerHead, save_heads
from middleware.encoder.lite import LiteEncoder
from middleware.encoder.preprocess import images_to_array
from middleware.encoder.small_photo_fit import sharp_photo_check
from middleware.encoder.small_photos import (
    AdaptConfig,
    SmallInput,
    SmallPhotoLayer,
    adapt_small_photo_head,
    small_photo_mask,
    takes_tuned_terms,
    trained_photo_kind,
)


def _tower_copy(tower) -> TowerHead:
    head = TowerHead()
    head.copy_from_tower(tower.model)
    return head.eval()


def test_the_size_gate_reads_the_longer_side() -> None:
    sizes = [(64, 64), (112, 80), (80, 113), (400, 300)]
    assert small_photo_mask(sizes, 112).tolist() == [True, True, False, False]
    assert SmallPhotoLayer(TowerHead(), 64).applies_to(sizes).tolist() == [True, False, False, False]


def test_the_layer_reads_maps_in_batches_as_it_would_at_once() -> None:
    torch.manual_seed(0)
    layer = SmallPhotoLayer(TowerHead(), 112)
    with torch.no_grad():  # away from its zero-initialised BatchNorm statistics' trivial output
        layer.head.bn.running_var.fill_(1.0)
    maps = np.random.default_rng(0).normal(size=(5, 320, 7, 7)).astype(np.float16)
    whole = layer.read(maps)
    assert whole.shape == (5, 1280) and np.abs(whole).max() > 0
    np.testing.assert_allclose(layer.read(maps, batch_size=2), whole, rtol=1e-5, atol=1e-6)
    assert layer.read(maps[:0]).shape == (0, 1280)


def test_adaptation_learns_its_targets_and_leaves_the_layer_frozen(lite_encoder, demo_dir: Path) -> None:
    tower = lite_encoder.image_tower
    photos = [open_image(item.path) for item in scan_image_folder(demo_dir)[:16]]
    maps = tower.prehead_maps(images_to_array(photos))
    head = _tower_copy(tower)
    with torch.no_grad():
        targets = tower.model._fc(head(torch.from_numpy(maps))).argsort(dim=1, descending=True)[:, 1].numpy()
    seen: list[int] = []
    adapt_small_photo_head(head, tower.model._fc, maps, targets, AdaptConfig(epochs=3, lr=1e-2, batch_size=8),
                           lambda epoch, _head: seen.append(epoch))
    assert seen == [1, 2, 3]
    with torch.no_grad():
        predicted = tower.model._fc(head(torch.from_numpy(maps))).argmax(dim=1).numpy()
    assert (predicted == targets).mean() > 0.5  # the frozen tower's runner-up: 0 of 16 before
    assert not any(p.requires_grad for p in head.parameters())


def test_only_small_photos_take_the_small_photo_path(lite_encoder, demo_dir: Path) -> None:
    tower = lite_encoder.image_tower
    sharp = open_image(scan_image_folder(demo_dir / "food")[0].path)
    thumbnail = sharp.resize((64, 64))
    head = _tower_copy(tower)
    with torch.no_grad():
        head.conv.weight.mul_(1.3)
    layer = SmallPhotoLayer(head, 112, 160)
    pooled = layer.tower_pass([sharp, thumbnail], tower, 224)
    np.testing.assert_allclose(pooled[0], tower.features(images_to_array([sharp], 224))[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[1], layer.read(tower.prehead_maps(images_to_array([thumbnail], 160)))[0],
                               rtol=1e-5, atol=1e-6)
    frozen_at_224 = tower.features(images_to_array([thumbnail], 224))[0][0]
    assert np.abs(pooled[1] - frozen_at_224).max() > 0.1
    # The layer's filter upsamples thumbnails only; sharp photos keep the tower's own preprocessing.
    bilinear = SmallPhotoLayer(head, 112, 160, "bilinear").tower_pass([sharp, thumbnail], tower, 224)
    np.testing.assert_allclose(bilinear[0], pooled[0])
    np.testing.assert_allclose(
        bilinear[1], layer.read(tower.prehead_maps(images_to_array([thumbnail], 160, resample="bilinear")))[0],
        rtol=1e-5, atol=1e-6)
    assert np.abs(bilinear[1] - pooled[1]).max() > 1e-2


def test_an_unchanged_layer_costs_sharp_photos_nothing(lite_encoder, demo_dir: Path) -> None:
    result = sharp_photo_check(_tower_copy(lite_encoder.image_tower), lite_encoder.image_tower, demo_dir,
                               trained=frozenset({"lion"}))
    assert result["photos"] >= 150  # the demo photos are named after ImageNet classes
    assert result["unseen_photos"] == result["photos"] - 1
    assert result["adapted"] == result["frozen"] and result["frozen"]["top5"] >= 0.8


@pytest.fixture()
def gated_encoder(base_encoder, tmp_path: Path) -> tuple[LiteEncoder, LiteEncoder]:
    """(encoder without a small-photo layer, the same heads with a changed small-photo layer)."""
    base = base_encoder.checkpoint
    plain = DualHeads(replace(base.config, small_photo_max_side=0))
    plain.load_state_dict(base.state_dict, strict=False)
    gated = DualHeads(replace(base.config, small_photo_max_side=112, small_photo_input=160))
    gated.load_state_dict(base.state_dict, strict=False)
    gated.small_photo_head.copy_from_tower(base_encoder.image_tower.model)
    with torch.no_grad():
        gated.small_photo_head.conv.weight.mul_(1.5)
    encoders = []
    for name, heads in (("plain", plain), ("gated", gated)):
        save_heads(tmp_path / f"{name}.pt", heads, base.class_bank)
        encoders.append(LiteEncoder(tmp_path / f"{name}.pt", image_tower=base_encoder.image_tower,
                                    text_tower=base_encoder.text_tower))
    return encoders[0], encoders[1]


def test_the_encoder_reads_the_layer_for_thumbnails_only(gated_encoder, demo_dir: Path) -> None:
    plain, gated = gated_encoder
    sharp = open_image(scan_image_folder(demo_dir / "mammals")[0].path)
    thumbnail = sharp.resize((64, 64))
    photos = [sharp, thumbnail]
    emb_plain, emb_gated = plain.encode_images(photos), gated.encode_images(photos)
    np.testing.assert_allclose(emb_gated[0], emb_plain[0], atol=1e-5)  # sharp photo: frozen tower at 224 px
    assert np.abs(emb_gated[1] - emb_plain[1]).max() > 1e-2  # thumbnail: small-photo path
    # The cached-feature path agrees with encode_images, in a format of its own.
    assert gated.feature_format != plain.feature_format
    np.testing.assert_allclose(gated.embed_image_features(gated.image_features(photos)), emb_gated, atol=1e-5)


def test_pre_head_maps_need_the_photo_sizes(gated_encoder, demo_dir: Path) -> None:
    _, gated = gated_encoder
    maps = gated.image_tower.prehead_maps(images_to_array([open_image(scan_image_folder(demo_dir)[0].path)]))
    with pytest.raises(ValueError, match="small"):
        gated.embed_image_features(maps)
    assert gated.embed_image_features(maps, small=np.asarray([False])).shape == (1, gated.dim)


def test_tower_head_checkpoints_encode_thumbnails_and_sharp_photos_apart(gated_encoder, demo_dir: Path,
                                                                         tmp_path: Path) -> None:
    from middleware.encoder.heads import with_tower_head

    _, gated = gated_encoder
    heads = with_tower_head(gated.heads, gated.image_tower.model)
    save_heads(tmp_path / "tuned.pt", heads, gated.class_bank)
    tuned = LiteEncoder(tmp_path / "tuned.pt", image_tower=gated.image_tower, text_tower=gated.text_tower)
    sharp = open_image(scan_image_folder(demo_dir / "vehicles")[0].path)
    photos = [sharp, sharp.resize((64, 64))]
    together = tuned.encode_images(photos)
    np.testing.assert_allclose(together, gated.encode_images(photos), atol=1e-4)  # untrained: the base
    np.testing.assert_allclose(together[1], tuned.encode_images(photos[1:])[0], atol=1e-5)
    assert tuned.image_features(photos[1:]).shape[2:] == (5, 5)  # 160-px input
    with pytest.raises(ValueError, match="one kind"):
        tuned.image_features(photos)


def test_checkpoints_carry_the_small_photo_filter(gated_encoder, demo_dir: Path, tmp_path: Path) -> None:
    from dataclasses import asdict

    from middleware.encoder.heads import HeadsConfig, with_tower_head

    _, gated = gated_encoder
    encoders = {}
    for resample in ("bicubic", "bilinear"):
        heads = DualHeads(replace(gated.config, small_photo_resample=resample))
        heads.load_state_dict(gated.heads.state_dict())
        save_heads(tmp_path / f"{resample}.pt", heads, gated.class_bank)
        encoders[resample] = LiteEncoder(tmp_path / f"{resample}.pt", image_tower=gated.image_tower,
                                         text_tower=gated.text_tower)
        assert encoders[resample].heads.small_photo_layer.resample == resample
    bicubic, bilinear = encoders["bicubic"], encoders["bilinear"]
    older = {k: v for k, v in asdict(gated.config).items() if k != "small_photo_resample"}
    assert HeadsConfig(**older).small_photo_resample == "bicubic"  # checkpoints from before the field
    sharp = open_image(scan_image_folder(demo_dir / "food")[0].path)
    photos = [sharp, sharp.resize((64, 64))]
    emb_bicubic, emb_bilinear = bicubic.encode_images(photos), bilinear.encode_images(photos)
    np.testing.assert_allclose(emb_bilinear[0], emb_bicubic[0], atol=1e-5)
    assert np.abs(emb_bilinear[1] - emb_bicubic[1]).max() > 1e-3
    # Checkpoints that tune the tower cache thumbnails' maps, which the filter changes.
    tuned = {}
    for name, base in encoders.items():
        save_heads(tmp_path / f"tuned-{name}.pt", with_tower_head(base.heads, base.image_tower.model), base.class_bank)
        tuned[name] = LiteEncoder(tmp_path / f"tuned-{name}.pt", image_tower=base.image_tower,
                                  text_tower=base.text_tower)
    assert tuned["bilinear"].feature_format != tuned["bicubic"].feature_format
    np.testing.assert_allclose(tuned["bilinear"].encode_images(photos[1:]), emb_bilinear[1:], atol=1e-4)


def test_the_trained_photo_kind_follows_the_share_of_thumbnails() -> None:
    assert [trained_photo_kind(s) for s in (1.0, 1.0 - 1e-9, 0.0, 1e-9, 0.5)] == [
        "small", "small", "sharp", "sharp", "all"]
    with pytest.raises(ValueError, match="share"):
        trained_photo_kind(1.5)
    small = np.asarray([True, False])
    assert takes_tuned_terms("small", small, 2).tolist() == [True, False]
    assert takes_tuned_terms("sharp", small, 2).tolist() == [False, True]
    assert takes_tuned_terms("all", small, 2).tolist() == [True, True]
    assert takes_tuned_terms("sharp", None, 2).tolist() == [True, True]  # no small-photo layer: all sharp
    with pytest.raises(ValueError, match="photo kind"):
        takes_tuned_terms("thumbnails", small, 2)
    from middleware.encoder.heads import HeadsConfig

    with pytest.raises(ValueError, match="tuned_photos"):  # load_heads reports it as not a checkpoint
        HeadsConfig(tuned_photos="thumbnails")


def test_image_terms_trained_on_one_kind_of_photo_leave_the_other_at_the_base(gated_encoder, demo_dir: Path,
                                                                             tmp_path: Path) -> None:
    from middleware.encoder.heads import with_tower_head

    _, gated = gated_encoder
    trained = with_tower_head(gated.heads, gated.image_tower.model)
    with torch.no_grad():  # both image terms as federated rounds on thumbnails leave them
        generator = torch.Generator().manual_seed(0)
        trained.image_features.weight.normal_(0.0, 0.05, generator=generator)
        trained.image_residual.weight.normal_(0.0, 0.05, generator=generator)
    without_term = with_tower_head(gated.heads, gated.image_tower.model)  # = the base
    encoders = {}
    for name, heads, kind in (("all", trained, "all"), ("small", trained, "small"), ("sharp", trained, "sharp"),
                              ("none", without_term, "all")):
        heads.config = replace(heads.config, tuned_photos=kind)
        save_heads(tmp_path / f"{name}.pt", heads, gated.class_bank)
        encoders[name] = LiteEncoder(tmp_path / f"{name}.pt", image_tower=gated.image_tower,
                                     text_tower=gated.text_tower)
    sharp = open_image(scan_image_folder(demo_dir / "mammals")[1].path)
    photos = [sharp, sharp.resize((64, 64))]
    emb = {name: encoder.encode_images(photos) for name, encoder in encoders.items()}
    np.testing.assert_allclose(emb["none"], gated.encode_images(photos), atol=1e-4)
    assert np.abs(emb["all"][0] - emb["none"][0]).max() > 1e-2  # the terms move both kinds when they fit all
    assert np.abs(emb["all"][1] - emb["none"][1]).max() > 1e-2
    np.testing.assert_allclose(emb["small"][1], emb["all"][1], atol=1e-5)  # thumbnails keep them
    np.testing.assert_allclose(emb["small"][0], emb["none"][0], atol=1e-5)  # the sharp photo keeps the base
    np.testing.assert_allclose(emb["sharp"][0], emb["all"][0], atol=1e-5)
    np.testing.assert_allclose(emb["sharp"][1], emb["none"][1], atol=1e-5)
    # Cached features need the photo sizes to know which photos get the terms.
    maps = encoders["small"].image_features(photos[:1])
    with pytest.raises(ValueError, match="small"):
        encoders["small"].embed_image_features(maps)
    np.testing.assert_allclose(encoders["small"].embed_image_features(maps, small=np.asarray([False])),
                               emb["small"][:1], atol=1e-5)


def test_the_tuned_offset_moves_tuned_photos_only_toward_the_generic_direction(gated_encoder, demo_dir: Path,
                                                                              tmp_path: Path) -> None:
    from middleware.encoder.heads import shift_toward

    _, gated = gated_encoder
    heads = {}
    for offset in (0.0, 1.0):
        config = replace(gated.config, tuned_photos="small", tuned_offset=offset)
        path = tmp_path / f"offset{offset}.pt"
        trained = DualHeads(config)
        trained.load_state_dict(gated.heads.state_dict())
        save_heads(path, trained, gated.class_bank)
        heads[offset] = LiteEncoder(path, image_tower=gated.image_tower, text_tower=gated.text_tower)
    sharp = open_image(scan_image_folder(demo_dir / "mammals")[1].path)
    photos = [sharp, sharp.resize((64, 64))]
    plain, shifted = heads[0.0].encode_images(photos), heads[1.0].encode_images(photos)
    np.testing.assert_allclose(shifted[0], plain[0], atol=1e-5)  # the sharp photo (untuned kind): unchanged
    direction = heads[1.0].heads.generic_direction().detach()
    expected = shift_toward(torch.from_numpy(plain[1:]), direction, 1.0).numpy()
    np.testing.assert_allclose(shifted[1:], expected, atol=1e-5)
    assert shifted[1] @ direction.numpy() > plain[1] @ direction.numpy() + 0.05
    np.testing.assert_allclose(np.linalg.norm(shifted, axis=1), 1.0, atol=1e-5)
    assert heads[1.0].version != heads[0.0].version  # the offset is part of what the version names


def test_shift_toward_leaves_unflagged_rows_and_a_zero_offset_alone() -> None:
    from middleware.encoder.heads import shift_toward

    emb = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    direction = torch.nn.functional.normalize(torch.ones(8), dim=0)
    assert torch.equal(shift_toward(emb, direction, 0.0), emb)
    out = shift_toward(emb, direction, 2.0, torch.tensor([True, False, True]))
    assert torch.allclose(out[1], emb[1], atol=1e-6)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3))
    assert bool((out[[0, 2]] @ direction > emb[[0, 2]] @ direction).all())


def test_the_fit_keeps_the_epoch_the_held_out_score_prefers_and_retrains_on_everything(
        lite_encoder, demo_dir: Path, tmp_path: Path) -> None:
    from middleware.encoder.small_photo_fit import SmallPhotoFit

    tower = lite_encoder.image_tower
    items = scan_image_folder(demo_dir / "general")[:6]
    thumbnails = []
    for item in items:  # 64-px copies, as in the pretrain pool
        path = tmp_path / f"{item.label}.png"
        open_image(item.path).resize((64, 64)).save(path)
        thumbnails.append(replace(item, path=path))
    fit = SmallPhotoFit(thumbnails, tower, demo_dir, tmp_path / "cache", 112, SmallInput(160),
                        AdaptConfig(epochs=3, lr=1e-2, batch_size=4))
    assert fit.maps.shape == (6, 320, 5, 5)
    assert fit.learnable.all()
    scores = iter([0.1, 0.2, 0.5, 0.3])  # epochs 0..3: the second adapted epoch is best
    pooled = fit.choose(np.asarray([False, False, False, False, True, True]),
                        lambda _pooled: {"f1@10": next(scores), "t2i_map": 0.0})
    assert fit.chosen_epochs == 2 and [row["epoch"] for row in fit.report["heldout_curve"]] == [0, 1, 2, 3]
    assert np.abs(pooled - fit.pooled(fit.new_head())).max() > 1e-3  # the held-out run's layer, not frozen
    head = fit.final(sharp_photos=demo_dir)
    assert head is not None and not any(p.requires_grad for p in head.parameters())
    assert fit.report["sharp_photos"]["unseen_photos"] == fit.report["sharp_photos"]["photos"] - 6
