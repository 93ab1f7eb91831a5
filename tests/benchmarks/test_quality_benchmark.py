"""`pmirs bench quality` end to end on a tiny labelled split built from the demo photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import ImageOps

from benchmarks.quality import run_quality_benchmark
from middleware.datasets import open_image
from pmirs.cli import main

pytestmark = pytest.mark.slow

DOMAINS = {
    "mammals": ["lion", "koala", "tabby", "gorilla", "bison", "dugong"],
    "vehicles": ["school_bus", "tractor", "gondola", "lifeboat", "go-kart", "bullet_train"],
}


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory, demo_dir: Path) -> Path:
    """<root>/val/<domain>/<label>/{a,b}.png: each demo photo and its mirror image."""
    root = tmp_path_factory.mktemp("tiny-data")
    for domain, labels in DOMAINS.items():
        for label in labels:
            photo = open_image(demo_dir / domain / label / f"{label}.jpg")
            folder = root / "val" / domain / label
            folder.mkdir(parents=True)
            photo.save(folder / "a.png")
            ImageOps.mirror(photo).save(folder / "b.png")
    return root


def test_results_have_the_documented_shape(tiny_split, tmp_path, lite_encoder):
    out = tmp_path / "results.json"
    results = run_quality_benchmark(tiny_split, "val", encoder=lite_encoder, out=out, feature_cache=tmp_path / "fc",
                                    draws=2)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["encoder"] == lite_encoder.version
    assert set(saved["paper_protocol"]) == set(DOMAINS) == set(saved["retrieval"])
    for per_n in saved["paper_protocol"].values():
        assert list(per_n) == ["5", "10", "15", "all"]
        for scores in per_n.values():
            assert set(scores) == {"precision", "recall", "f1", "f1_se"}
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    for metrics in saved["retrieval"].values():
        assert set(metrics) == {"top1", "t2i_p@10", "t2i_r@50", "t2i_map", "i2i_p@10"}
    # Clear full-resolution photos: zero-shot top-1 among six labels is far above chance (1/6).
    assert min(m["top1"] for m in saved["retrieval"].values()) >= 0.5
    assert out.with_suffix(".md").read_text().startswith("# Quality")
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_runs_and_uses_the_feature_cache(tiny_split, tmp_path):
    cache = tmp_path / "fc"
    args = ["bench", "quality", "--data", str(tiny_split), "--out", str(tmp_path / "r.json"),
            "--feature-cache", str(cache), "--draws", "1"]
    assert main(args) == 0
    assert len(list(cache.glob("*.npz"))) == 12  # one cache file per photo folder
    first = json.loads((tmp_path / "r.json").read_text())
    assert main(args) == 0  # second run: all features from the cache, same numbers
    assert json.loads((tmp_path / "r.json").read_text()) == first
