"""On-disk cache of frozen image-tower features, so training epochs and benchmarks take seconds.

The towers are frozen, so a photo's pooled features never change for a given tower and input
size: compute them once (with a progress bar) and keep them per photo folder, keyed by file name,
size and modification time, so a changed photo is recomputed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from middleware.datasets import LabelledImage, open_image

FEATURE_FORMAT = "lite0-pooled-v1"


def _folder_cache_path(cache_dir: Path, folder: Path, image_size: int) -> Path:
    digest = hashlib.sha256(f"{FEATURE_FORMAT}:{image_size}:{folder.resolve()}".encode()).hexdigest()[:20]
    return cache_dir / f"{digest}.npz"


def _load_folder_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return dict(zip(data["names"].tolist(), data["features"], strict=True))


def _save_folder_cache(path: Path, cached: dict[str, np.ndarray]) -> None:
    names = sorted(cached)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.asarray(names), features=np.stack([cached[n] for n in names]).astype(np.float16))
    tmp.replace(path)


def _photo_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}|{stat.st_size}|{int(stat.st_mtime)}"


def cached_image_features(
    items: Sequence[LabelledImage],
    extract: Callable[[list], np.ndarray],
    cache_dir: str | Path,
    image_size: int = 224,
    batch_size: int = 64,
    desc: str = "image features",
) -> np.ndarray:
    """Pooled features for ``items``; photos not cached yet go through ``extract(list[PIL.Image])``.

    The cache holds one file per photo folder (file name -> features), so any selection of photos
    reuses what an earlier, different selection computed.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folders: dict[Path, list[int]] = {}
    for index, item in enumerate(items):
        folders.setdefault(item.path.parent, []).append(index)
    caches = {f: _load_folder_cache(_folder_cache_path(cache_dir, f, image_size)) for f in folders}
    keys = [_photo_key(item.path) for item in items]
    missing = [i for i, item in enumerate(items) if keys[i] not in caches[item.path.parent]]
    if missing:
        with tqdm(total=len(missing), desc=desc, unit="img") as progress:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                features = extract([open_image(items[i].path) for i in chunk])
                for i, feature in zip(chunk, features, strict=True):
                    caches[items[i].path.parent][keys[i]] = feature
                progress.update(len(chunk))
                touched = {items[i].path.parent for i in chunk}
                for folder in touched:
                    _save_folder_cache(_folder_cache_path(cache_dir, folder, image_size), caches[folder])
    if not items:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([caches[item.path.parent][keys[i]] for i, item in enumerate(items)]).astype(np.float32)


def split_features(
    data_root: str | Path,
    split: str,
    extract: Callable[[list], np.ndarray],
    cache_dir: str | Path,
    image_size: int = 224,
    per_class: int | None = None,
) -> tuple[list[LabelledImage], np.ndarray]:
    """Photos of ``<data_root>/<split>`` (the first ``per_class`` of each label, if given) and
    their cached pooled features (one cache file per selection)."""
    from middleware.datasets import limit_per_class, scan_image_folder

    items = limit_per_class(scan_image_folder(Path(data_root) / split), per_class)
    features = cached_image_features(items, extract, cache_dir, image_size, desc=f"features {split}")
    return items, features
