"""`pmirs bench privacy`: the attacks recover what they should, the clustering metrics are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.privacy import (
    PrivacyData,
    adjusted_rand_index,
    fit_inverse_map,
    privacy_markdown,
    recommend_noise,
    run_privacy_benchmark,
    spherical_kmeans,
    write_privacy_plot,
)
from middleware.datasets import LabelledImage
from middleware.encoder.base import l2_normalise
from middleware.obfuscation import BlockProjection

DIM = 32


def _clustered(n_classes: int = 4, per_class: int = 40, spread: float = 0.3, seed: int = 0) -> PrivacyData:
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((n_classes, DIM)))
    labels = np.repeat(np.arange(n_classes), per_class)
    emb = l2_normalise(centres[labels] + spread * rng.standard_normal((len(labels), DIM)) / np.sqrt(DIM))
    classes = [f"c{i}" for i in range(n_classes)]
    items = [LabelledImage(Path(f"/x/{classes[i]}/{j}.jpg"), classes[i], "d") for j, i in enumerate(labels)]
    return PrivacyData({"d": items}, emb, labels, classes, centres, "synthetic")


@pytest.mark.parametrize("method", ["lstsq", "procrustes"])
def test_enough_known_pairs_recover_the_secret_map_exactly(method: str) -> None:
    rng = np.random.default_rng(1)
    plain = l2_normalise(rng.standard_normal((3 * DIM, DIM)))
    projection = BlockProjection(bytes(range(32)), DIM, n_blocks=4)
    stored = projection.project(plain).astype(np.float64)
    inverse = fit_inverse_map(stored[: 2 * DIM], plain[: 2 * DIM], method)
    recovered = stored[2 * DIM:] @ inverse
    assert np.allclose(recovered, plain[2 * DIM:], atol=1e-4)
    assert not np.allclose(stored, plain, atol=0.1)  # without the pairs the coordinates are meaningless


def test_adjusted_rand_index_known_values() -> None:
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)
    assert adjusted_rand_index(a, np.array([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)  # names do not matter
    assert adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(-0.5)
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(0, 5, 3000), rng.integers(0, 5, 3000))) < 0.02


def test_spherical_kmeans_finds_separated_clusters() -> None:
    data = _clustered(spread=0.2)
    assert adjusted_rand_index(spherical_kmeans(data.image_emb, 4), data.labels) == pytest.approx(1.0)


def test_privacy_benchmark_on_synthetic_embeddings(tmp_path: Path) -> None:
    data = _clustered(n_classes=4, per_class=50, spread=1.0)
    results = run_privacy_benchmark(data, known_pairs=(0, 8, 2 * DIM, 5000), noise_levels=(0.0, 0.5), trials=2)
    assert results["setup"]["known_pairs"] == [0, 8, 2 * DIM]  # 5000 leaves nothing to attack: skipped
    clean = results["known_plaintext"]["0.0"]
    assert clean["0"]["best"]["stored_cosine"] < 0.5  # read as plaintext, the stored vectors are far off
    assert clean[str(2 * DIM)]["best"]["stored_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert clean[str(2 * DIM)]["best"]["stored_caption_top1"] == pytest.approx(
        results["baselines"]["plaintext_caption_top1"])
    assert clean[str(2 * DIM)]["best"]["query_cosine"] == pytest.approx(1.0, abs=1e-4)
    noisy = results["known_plaintext"]["0.5"][str(2 * DIM)]["best"]["stored_cosine"]
    assert noisy < 0.99  # storage noise keeps exact recovery out of reach
    co = results["ciphertext_only"]
    assert co["0.0"]["kmeans_ari"] == pytest.approx(co["plaintext_kmeans_ari"], abs=1e-9)  # cosine is kept
    assert co["0.0"]["repeated_query_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert co["0.0"]["mean_abs_pairwise_cosine_error"] < 1e-5 < co["0.5"]["mean_abs_pairwise_cosine_error"]
    assert results["recommendation"]["noise"] is None  # no retrieval cost was measured
    assert "Known-plaintext attack" in privacy_markdown(results)
    write_privacy_plot(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_recommendation_picks_largest_affordable_noise() -> None:
    kpa = {str(n): {"10": {"best": {"stored_cosine": 0.9, "stored_caption_top1": 0.5}}} for n in (0.0, 0.1, 0.2)}
    cost = {str(n): {"mean_retrieval": {"t2i_map": v}} for n, v in ((0.0, 0.50), (0.1, 0.495), (0.2, 0.47))}
    rec = recommend_noise({"retrieval_cost": cost, "known_plaintext": kpa})
    assert rec["noise"] == 0.1
