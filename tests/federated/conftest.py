"""Tiny worlds for the federated tests: a few real photo files, stub towers, a random base checkpoint.

The towers are stubbed (deterministic features from the photo's pixels, random phrase vectors) so
the tests exercise the Flower apps and the training loop in seconds, without model weights.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity
from PIL import Image

from federated.partition import partition_indices, prepare_partition, write_partitions
from middleware.datasets import LabelledImage, open_image, scan_image_folder
from middleware.encoder.features import TowerOutputs
from middleware.encoder.heads import DualHeads, HeadsConfig, save_heads
from middleware.encoder.towers import PREHEAD_SHAPE

for _key, _value in {"FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                     "ANONYMIZED_TELEMETRY": "False"}.items():
    os.environ.setdefault(_key, _value)

DOMAINS = {"animals": ["cat", "dog"], "food": ["bread", "soup"]}


def stub_encode(texts: Sequence[str]) -> np.ndarray:
    """Deterministic unit vectors per phrase (a stand-in for MiniLM)."""
    rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=384) for t in texts]
    emb = np.asarray(rows, dtype=np.float32).reshape(len(texts), 384)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def stub_extract(items: Sequence[LabelledImage]) -> TowerOutputs:
    """Tower outputs that depend on the photo's pixels (opened for real) and its class."""
    pooled, logits, maps = [], [], []
    for item in items:
        pixels = np.asarray(open_image(item.path), dtype=np.float32).mean()
        rng = np.random.default_rng(zlib.crc32(item.label.encode()))
        pooled.append(rng.normal(size=1280) + pixels / 255)
        logits.append(rng.normal(size=1000) * 3)
        maps.append(np.abs(rng.normal(size=PREHEAD_SHAPE)) + pixels / 255)
    return TowerOutputs(np.asarray(pooled, dtype=np.float32), np.asarray(logits, dtype=np.float32),
                        np.asarray(maps, dtype=np.float16))


def make_photos(root: Path, per_class: int = 4) -> Path:
    """``<root>/<domain>/<label>/*.png`` with small random photos."""
    rng = np.random.default_rng(0)
    for domain, labels in DOMAINS.items():
        for label in labels:
            folder = root / domain / label
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return root


@pytest.fixture
def base_heads(tmp_path: Path) -> Path:
    """A base heads checkpoint with a random ConSE class bank."""
    bank = np.random.default_rng(1).normal(size=(1000, 384))
    path = tmp_path / "base-heads.pt"
    save_heads(path, DualHeads(HeadsConfig()), bank / np.linalg.norm(bank, axis=1, keepdims=True))
    return path


@pytest.fixture
def stub_towers() -> tuple:
    """(stub image tower, stub text tower), for tests that write stores themselves."""
    return stub_extract, stub_encode


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_photos(tmp_path / "photos")


@pytest.fixture
def stores(tmp_path: Path, photos: Path) -> Path:
    """Two client stores split by domain, under ``<tmp>/parts/client-<k>``."""
    items = scan_image_folder(photos)
    out = stub_extract(items)
    write_partitions(tmp_path / "parts", items, out, partition_indices(items, 2, "domain"), {}, stub_encode)
    return tmp_path / "parts"


@pytest.fixture
def own_stores(tmp_path: Path, photos: Path) -> list[Path]:
    """Stores each client built on its own machine from its own folder (real-deployment path)."""
    return [prepare_partition(tmp_path / f"store-{d}", photos / d, stub_extract, stub_encode) for d in DOMAINS]


@pytest.fixture
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need a task identity, which Flower's runtime sets in a real ClientApp process."""
    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
