"""BlockProjection: an exact, keyed isometry (noise 0) and a measurable perturbation (noise > 0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from middleware.obfuscation import BlockProjection, rekey

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
DIM = 64


def _unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def test_norms_and_cosines_preserved() -> None:
    projection = BlockProjection(KEY_A, DIM)
    x = np.random.default_rng(1).standard_normal((50, DIM)).astype(np.float32) * 3
    y = projection.project(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(_cos(y, y), _cos(x, x), atol=1e-5)
    assert not np.allclose(y, x, atol=1e-2)
    single = projection.project(x[0])
    assert single.shape == (DIM,)
    np.testing.assert_allclose(single, y[0], atol=1e-6)


def test_top_k_ranking_equals_plain_search() -> None:
    projection = BlockProjection(KEY_A, DIM, n_blocks=8)
    docs, queries = _unit_rows(500, seed=2), _unit_rows(20, seed=3)
    plain = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    hidden = np.argsort(-(projection.project(queries) @ projection.project(docs).T), axis=1)[:, :10]
    assert (plain == hidden).all()


def test_deterministic_and_key_dependent() -> None:
    x = _unit_rows(5)
    y = BlockProjection(KEY_A, DIM).project(x)
    np.testing.assert_array_equal(y, BlockProjection(KEY_A, DIM).project(x))
    for other in (
        BlockProjection(KEY_B, DIM),
        BlockProjection(KEY_A, DIM, version=2),
        BlockProjection(KEY_A, DIM, n_blocks=2),
    ):
        assert not np.allclose(other.project(x), y, atol=1e-3)


def test_inverse_and_rekey() -> None:
    old, new = BlockProjection(KEY_A, DIM, version=1), BlockProjection(KEY_B, DIM, version=2)
    x = _unit_rows(30)
    stored = old.project(x)
    np.testing.assert_allclose(old.inverse(stored), x, atol=1e-6)
    moved = rekey(old, new, stored)
    np.testing.assert_allclose(moved, new.project(x), atol=1e-6)
    for batch in (stored[:10], stored[10:]):  # batch by batch gives the same result
        np.testing.assert_allclose(rekey(old, new, batch), new.project(old.inverse(batch)), atol=1e-6)
    with pytest.raises(ValueError):
        rekey(old, BlockProjection(KEY_B, DIM, n_blocks=2), stored)


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="divisible"):
        BlockProjection(KEY_A, 10, n_blocks=4)
    with pytest.raises(ValueError):
        BlockProjection(KEY_A[:16], DIM)
    with pytest.raises(TypeError):
        BlockProjection("k" * 32, DIM)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BlockProjection(KEY_A, DIM, noise=-0.1)
    projection = BlockProjection(KEY_A, DIM)
    with pytest.raises(ValueError):
        projection.project(np.zeros((3, DIM + 1)))
    with pytest.raises(ValueError):
        projection.project(np.zeros((2, 3, DIM)))
    assert "key" not in repr(projection).lower()


def test_noise_perturbs_storage_vectors_more_as_it_grows() -> None:
    docs = _unit_rows(200, seed=4)
    queries = _unit_rows(20, seed=5)
    exact = queries @ docs.T
    errors = []
    for noise in (0.0, 0.05, 0.2, 0.5):
        projection = BlockProjection(KEY_A, DIM, noise=noise)
        stored = projection.project(docs, for_storage=True)
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
        errors.append(float(np.abs(projection.project(queries) @ stored.T - exact).mean()))
    assert errors[0] < 1e-5
    assert errors[0] < errors[1] < errors[2] < errors[3]
    noisy = BlockProjection(KEY_A, DIM, noise=0.2)
    first, second = noisy.project(docs[:3], for_storage=True), noisy.project(docs[:3], for_storage=True)
    assert not np.allclose(first, second)  # fresh noise each time
    np.testing.assert_array_equal(noisy.project(docs[:3]), BlockProjection(KEY_A, DIM).project(docs[:3]))


def test_known_answer_vector() -> None:
    """Pins HKDF labels and numpy's PCG64 / normal / QR streams: a numpy upgrade that changed them
    would silently make every stored collection unsearchable."""
    vector = json.loads((Path(__file__).parent / "vectors" / "obfuscation.json").read_text())
    projection = BlockProjection(bytes.fromhex(vector["key"]), vector["dim"], n_blocks=vector["n_blocks"])
    y = projection.project(np.asarray(vector["x"], dtype=np.float32))
    np.testing.assert_allclose(y, np.asarray(vector["y"], dtype=np.float32), atol=1e-6)


def test_building_a_projection_uses_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy machine OpenBLAS's spinning threads made the first query of a collection 300 ms slower."""
    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    if max(blas_threads(), default=1) < 2:
        pytest.skip("numpy's BLAS runs one thread here anyway")
    seen: list[list[int]] = []
    qr = np.linalg.qr

    def spy(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(blas_threads())
        return qr(a)

    monkeypatch.setattr(np.linalg, "qr", spy)
    BlockProjection(bytes(32), 384, n_blocks=4)
    assert len(seen) == 4 and all(threads == [1] * len(threads) for threads in seen)
    assert max(blas_threads()) >= 2  # and the limit ends with the build
