"""`pmirs bench latency`: synthetic items, result shape, and that the benchmark's server is stopped."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from hash_encoder import HashEncoder

from benchmarks.latency import (
    STAGES,
    latency_markdown,
    run_latency_benchmark,
    synthetic_vectors,
    write_latency_plot,
)


def test_synthetic_vectors_are_reproducible_unit_rows_around_their_centres() -> None:
    centres = np.eye(4, 16, dtype=np.float32)
    whole = synthetic_vectors(centres, 0, 40, seed=3)
    pieces = np.concatenate([synthetic_vectors(centres, 0, 13, seed=3), synthetic_vectors(centres, 13, 40, seed=3)])
    assert np.array_equal(whole, pieces)  # the same rows whatever the upload batching
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    own = np.sum(whole * centres[np.arange(40) % 4], axis=1)
    assert 0.5 < own.mean() < 0.9  # clustered around the centre, not on it
    assert not np.array_equal(whole, synthetic_vectors(centres, 0, 40, seed=4))


@pytest.mark.service
def test_latency_benchmark_shape_and_cleanup(tmp_path: Path) -> None:
    encoder = HashEncoder()
    centres = encoder.encode_texts(["a cat", "a car", "a cake", "a tree"])
    results = run_latency_benchmark(encoder, centres, ["cat", "car"], items=(120, 40), queries=6, k=3,
                                    concurrency=2, concurrent_queries=3, work_dir=tmp_path, progress=False)
    assert list(results["items"]) == ["40", "120"]
    for entry in results["items"].values():
        private, plain = entry["private"], entry["plain"]
        assert set(private["stages"]) == set(STAGES)
        assert private["n"] == plain["n"] == 6  # warm-up excluded
        assert private["p50_ms"] <= private["p95_ms"]
        assert private["stages"]["obfuscate"]["p50_ms"] > 0 and private["stages"]["encrypt"]["p50_ms"] > 0
        assert plain["stages"]["encrypt"]["p95_ms"] == 0  # the baseline really skips the crypto
        assert entry["overhead_p95"] == pytest.approx(private["p95_ms"] / plain["p95_ms"], rel=1e-2)
    assert results["concurrent_qps"] > 0 and results["synthetic_items"] is True
    json.dumps(results)  # JSON-able as written by the CLI
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{results['server_url']}/healthz", timeout=2)
    write_latency_plot(results, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert "overhead" in latency_markdown(results).lower()
