"""`pmirs bench quality --private`: scores through the keyed projection equal the plain ones at noise 0."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmarks.quality import (
    bench_projection_key,
    evaluate_embeddings,
    private_transforms,
    run_quality_benchmark,
)
from middleware.datasets import LabelledImage
from middleware.encoder.base import Encoder, l2_normalise

DIM = 16


def _close(a: object, b: object, tol: float) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return abs(float(a) - float(b)) <= tol


def _synthetic(seed: int = 0) -> tuple[dict[str, list[LabelledImage]], np.ndarray, object]:
    """Two domains of weakly separated classes (so rankings are close and noise can change them)."""
    rng = np.random.default_rng(seed)
    centres = {f"class{i}": rng.standard_normal(DIM) for i in range(6)}
    domains, rows = {}, []
    for d, labels in (("d0", ["class0", "class1", "class2"]), ("d1", ["class3", "class4", "class5"])):
        domains[d] = []
        for label in labels:
            for j in range(8):
                domains[d].append(LabelledImage(Path(f"/nowhere/{label}/{j}.jpg"), label, d))
                rows.append(centres[label] + 1.5 * rng.standard_normal(DIM))

    def encode_texts(texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            label = text.split()[-1]
            wobble = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)).standard_normal(DIM)
            out.append(centres[label] + 0.5 * wobble)
        return l2_normalise(np.stack(out))

    return domains, l2_normalise(np.stack(rows)), encode_texts


def test_private_scores_equal_plain_at_zero_noise_and_differ_with_noise() -> None:
    domains, emb, encode_texts = _synthetic()
    plain = evaluate_embeddings(domains, emb, encode_texts, n_values=(2, "all"), draws=3)
    key = bench_projection_key(0)
    image_fn, text_fn = private_transforms(key, DIM, 0.0)
    assert not np.allclose(image_fn(emb), emb)  # the server really sees other coordinates
    private = evaluate_embeddings(domains, emb, encode_texts, (2, "all"), 3, 0, image_fn, text_fn)
    assert _close(private, plain, 1e-5)
    noisy_image, noisy_text = private_transforms(key, DIM, 0.5)
    noisy = evaluate_embeddings(domains, emb, encode_texts, (2, "all"), 3, 0, noisy_image, noisy_text)
    assert not _close(noisy["retrieval"], plain["retrieval"], 1e-6)


class _PixelEncoder(Encoder):
    """Tiny stand-in encoder: images by their 4x4 colour thumbnail, texts by the class named last."""

    name = "pixel"
    dim = DIM

    def __init__(self, prototypes: dict[str, np.ndarray]) -> None:
        self.prototypes = prototypes

    @property
    def version(self) -> str:
        return "pixel-v1"

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        return l2_normalise(np.stack([_thumb(im) for im in images]))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rows = [self.prototypes[" ".join(t.split()[-1:])] + 0.05 * len(t) for t in texts]
        return l2_normalise(np.stack(rows))


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((4, 4)), dtype=np.float32).reshape(-1) / 255.0 - 0.5


def _demo_split(demo_dir: Path, root: Path) -> dict[str, Path]:
    """``root/val/<domain>/<label>/`` with the demo photo of 3 labels per domain and two augmentations."""
    photos = {}
    for domain in ("food", "mammals"):
        for label_dir in sorted((demo_dir / domain).iterdir())[:3]:
            source = next(label_dir.glob("*.jpg"))
            target = root / "val" / domain / label_dir.name
            target.mkdir(parents=True)
            shutil.copy(source, target / "a.jpg")
            with Image.open(source) as im:
                ImageOps.mirror(im).save(target / "b.jpg")
                im.rotate(8).save(target / "c.jpg")
            photos[label_dir.name.replace("_", " ")] = source
    return photos


def test_run_quality_benchmark_private_section(demo_dir: Path, tmp_path: Path) -> None:
    photos = _demo_split(demo_dir, tmp_path / "data")
    prototypes = {label: _thumb(Image.open(path)) for label, path in photos.items()}
    prototypes = {" ".join(k.split()[-1:]): v for k, v in prototypes.items()}
    out = tmp_path / "out" / "quality.json"
    results = run_quality_benchmark(tmp_path / "data", "val", encoder=_PixelEncoder(prototypes), out=out,
                                    n_values=(2, "all"), draws=2, private_noise=[0.0, 0.6])
    assert set(results["private"]) == {"0.0", "0.6"}
    zero = results["private"]["0.0"]
    assert _close(zero["paper_protocol"], results["paper_protocol"], 1e-5)
    assert _close(zero["retrieval"], results["retrieval"], 1e-5)
    assert zero["max_abs_difference_vs_plain"] < 1e-5
    assert results["private"]["0.6"]["max_abs_difference_vs_plain"] > 0
    written = json.loads(out.read_text())
    assert set(written) >= {"paper_protocol", "retrieval", "mean_f1", "private"}
    assert "Private pipeline" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 0
