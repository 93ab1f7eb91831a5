"""The headroom check: a free-weight probe on the encoder's features against its phrases, on the same draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from benchmarks.headroom import (
    N_VALUES,
    WEIGHT_DECAYS,
    choose_weight_decay,
    fit_probe,
    n_way_accuracy,
    run_headroom_benchmark,
)
from benchmarks.tuned_tail import TailSettings
from middleware.datasets import LabelledImage, open_image, scan_image_folder
from pmirs.cli import main
from pmirs.errors import DatasetError, PMIRSError

PER_DOMAIN = 6  # demo classes per domain in the tiny data root


def _clusters(rng: np.random.Generator, per_class: int, classes: int = 4, dim: int = 16) -> tuple[np.ndarray, ...]:
    centres = rng.normal(size=(classes, dim)) * 4
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def test_the_probe_learns_separable_classes_and_not_shuffled_labels() -> None:
    rng = np.random.default_rng(0)
    train_x, train_y = _clusters(rng, 30)
    test_x, test_y = _clusters(np.random.default_rng(0), 30)  # same centres, fresh noise below
    test_x = test_x + np.random.default_rng(1).normal(size=test_x.shape)
    assert (fit_probe(train_x, train_y, 1e-3)(test_x).argmax(axis=1) == test_y).mean() == 1.0
    shuffled = fit_probe(train_x, rng.permutation(train_y), 1e-3)(test_x)
    assert (shuffled.argmax(axis=1) == test_y).mean() < 0.6  # 4 classes: chance is 0.25


def test_the_weight_decay_is_chosen_from_the_grid_on_held_out_rows() -> None:
    features, labels = _clusters(np.random.default_rng(2), 20)
    chosen, trials = choose_weight_decay(features, labels)
    assert chosen in WEIGHT_DECAYS
    assert set(trials) == {f"{wd:g}" for wd in WEIGHT_DECAYS}
    assert trials[f"{chosen:g}"] == max(trials.values())


def test_n_way_accuracy_maps_each_scorers_columns_to_the_drawn_classes() -> None:
    labels = np.repeat(np.arange(8), 5)

    def perfect(chosen, _rng):  # columns in drawn order, as the phrase scorer returns them
        return np.stack([(labels == c).astype(float) for c in chosen], axis=1)

    def lowest_class(chosen, _rng):  # always the smallest drawn class index
        return np.stack([np.full(len(labels), -float(c)) for c in chosen], axis=1)

    scores = n_way_accuracy({"perfect": perfect, "lowest": lowest_class}, labels, n=4, draws=20)
    assert scores["perfect"] == 1.0
    assert scores["lowest"] == pytest.approx(1 / 4)  # balanced classes: one drawn class in four is the lowest


def test_the_probe_reads_what_the_tuned_image_term_reads_averaged_over_mirror_images_as_embeddings_are(
        lite_encoder, demo_dir: Path, tmp_path: Path) -> None:
    assert lite_encoder.config.mirror_average and lite_encoder.config.tuned_photos == "small"
    items = []
    for item in scan_image_folder(demo_dir / "mammals")[:3]:  # 64-px thumbnails: the kind the default tunes
        (tmp_path / "photos" / item.label).mkdir(parents=True)
        path = tmp_path / "photos" / item.label / "thumb.png"
        open_image(item.path).resize((64, 64)).save(path)
        items.append(LabelledImage(path=path, label=item.label))
    images = [open_image(i.path) for i in items]
    heads = lite_encoder.heads
    with torch.no_grad():
        own, mirrored = (heads.pooled_features(torch.from_numpy(features)).numpy()
                         for features in (lite_encoder.image_features(images),
                                          lite_encoder.mirrored_image_features(images)))
    probed = lite_encoder.cached_image_term_inputs(items, tmp_path / "cache")
    assert probed.shape == (len(items), lite_encoder.config.image_feature_dim)
    np.testing.assert_allclose(probed, (own + mirrored) / 2, rtol=0, atol=1e-3)
    assert np.abs(own - mirrored).max() > 0.1  # the two views differ, so the mean is a change
    single = lite_encoder.reconfigured(mirror_average=False)
    # Re-read from the cache file (float16 maps) this time.
    np.testing.assert_allclose(single.cached_image_term_inputs(items, tmp_path / "cache"), own, rtol=0, atol=2e-2)


@pytest.fixture(scope="module")
def tiny_root(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ holds each demo photo and its mirror image, val/ the photo: two domains, six classes each."""
    root = tmp_path_factory.mktemp("headroom")
    for domain in ("food", "vehicles"):
        for item in scan_image_folder(demo_dir / domain)[:PER_DOMAIN]:
            photo = Image.open(item.path).convert("RGB")
            for split, copies in (("train", (photo, ImageOps.mirror(photo))), ("val", (photo,))):
                folder = root / split / domain / item.path.parent.name
                folder.mkdir(parents=True)
                for k, copy in enumerate(copies):
                    copy.save(folder / f"{k}.jpg")
    return root


def test_bench_headroom_scores_phrases_and_probe_per_domain_and_writes_its_report(
        tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "headroom.json"
    results = run_headroom_benchmark(tiny_root, draws=4, out=out, feature_cache=tmp_path / "fc")
    assert set(results["domains"]) == {"food", "vehicles"}
    for per_n in results["domains"].values():
        assert set(per_n) == {str(n) for n in N_VALUES}
        for accuracy in per_n.values():
            assert accuracy["phrases"] >= 0.6  # sharp demo photos: a mis-mapped phrase column would sit near 1/N
            assert accuracy["probe"] == 1.0  # val photos are train photos: a probe that fits them gets them all
    assert results["train_photos"] == 2 * 2 * PER_DOMAIN
    assert json.loads(out.read_text())["weight_decay"] in WEIGHT_DECAYS
    assert out.with_suffix(".md").read_text().count("| food |") == len(N_VALUES)
    assert out.with_suffix(".png").stat().st_size > 0


def test_bench_headroom_refuses_val_classes_without_train_photos(tiny_root: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"  # every val class, but train photos of one food class only
    (partial / "train" / "food").mkdir(parents=True)
    (partial / "val").symlink_to(tiny_root / "val")
    only = next((tiny_root / "train" / "food").iterdir())
    (partial / "train" / "food" / only.name).symlink_to(only)
    with pytest.raises(DatasetError, match="no train/ photos") as caught:
        run_headroom_benchmark(partial, draws=1, out=tmp_path / "h.json", feature_cache=tmp_path / "fc")
    assert isinstance(caught.value, PMIRSError)
    with pytest.raises(DatasetError, match="no train/ split"):
        run_headroom_benchmark(tiny_root / "val", draws=1, out=tmp_path / "h.json", feature_cache=tmp_path / "fc")


def test_bench_headroom_scores_the_tuned_tail_on_the_same_draws(tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "headroom.json"
    tail = TailSettings(blocks=1, epochs=3, batch_size=4)
    results = run_headroom_benchmark(tiny_root, draws=4, out=out, feature_cache=tmp_path / "fc", tail=tail)
    assert results["tuned_tail"]["settings"]["blocks"] == 1
    assert len(results["tuned_tail"]["held_out_accuracy"]) == tail.epochs + 1
    for per_n in results["domains"].values():
        for accuracy in per_n.values():
            # val photos are train photos; a mis-mapped class column would sit near 1/N (0.2 or 0.1)
            assert accuracy["tuned tail"] >= 0.5
    assert out.with_suffix(".md").read_text().count("| food |") == len(N_VALUES)
    assert "tuned tail | tail - phrases |" in out.with_suffix(".md").read_text()


def test_the_tuned_tail_refuses_thumbnails_mixed_with_larger_photos(demo_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for item in scan_image_folder(demo_dir / "food")[:2]:
        for split in ("train", "val"):
            folder = root / split / "food" / item.path.parent.name
            folder.mkdir(parents=True)
            photo = Image.open(item.path).convert("RGB")
            photo.save(folder / "sharp.jpg")
            photo.resize((64, 64)).save(folder / "thumb.jpg")  # takes the small-photo path
    with pytest.raises(DatasetError, match="one kind"):
        run_headroom_benchmark(root, draws=1, out=tmp_path / "h.json", feature_cache=tmp_path / "fc",
                               tail=TailSettings(blocks=0, epochs=1))


@pytest.mark.parametrize("flags", [["--tune-blocks", "16"], ["--tune-blocks", "-2"],
                                   ["--tune-blocks", "1", "--tail-epochs", "0"]])
def test_bench_headroom_refuses_tail_flags_out_of_range_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str]) -> None:
    out = tmp_path / "h.json"
    assert main(["bench", "headroom", "--data", str(tmp_path), "--out", str(out), *flags]) == 2
    assert "--tune-blocks takes 0..15" in capsys.readouterr().err
    assert not out.exists()
