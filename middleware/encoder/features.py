"""On-disk cache of frozen image-tower features, so training epochs and benchmarks take seconds.

The towers are frozen, so a photo's pooled features never change for a given tower and input
size: compute them once (with a progress bar) and keep them per photo folder, keyed by file name
and a hash of the file's bytes, so a changed photo is recomputed while a photo that was merely
copied or touched (a fresh checkout, a re-synced data folder) is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from middleware.datasets import LabelledImage, open_image
from middleware.encoder.preprocess import DEFAULT_RESAMPLING
from middleware.encoder.small_photos import one_kind, photo_sizes
from middleware.encoder.towers import IMAGE_FEATURE_DIM, TOWER_BLOCKS

if TYPE_CHECKING:
    from middleware.encoder.small_photos import SmallPhotoLayer
    from middleware.encoder.towers import ImageTower

POOLED_FORMAT = "lite0-pooled-v1"  # (1280,) pooled features per photo
PREHEAD_FORMAT = "lite0-prehead-v1"  # (320, 7, 7) at 224 px: input of the last conv layer (~31 KB per photo)


def maps_format(first_block: int) -> str:
    """Cache format of the input maps of MBConv block ``first_block`` (16: the pre-head maps)."""
    return PREHEAD_FORMAT if first_block == TOWER_BLOCKS else f"lite0-block{first_block}-input-v1"


def resampled_format(feature_format: str, resample: str) -> str:
    """The cache format of features from photos resized with ``resample`` (the default adds nothing)."""
    return feature_format if resample == DEFAULT_RESAMPLING else f"{feature_format}+{resample}"


def mirrored_format(feature_format: str) -> str:
    """The cache format of the same features computed from the photos' mirror images."""
    return f"{feature_format}+mirrored"


def _folder_cache_path(cache_dir: Path, folder: Path, image_size: int, feature_format: str) -> Path:
    digest = hashlib.sha256(f"{feature_format}:{image_size}:{folder.resolve()}".encode()).hexdigest()[:20]
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
    # Hashing a photo costs far less than a tower pass (~0.01 ms for a 2 KB thumbnail vs ~25 ms).
    return f"{path.name}|{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def _cache_lookup(items: Sequence[LabelledImage], cache_dir: Path, image_size: int, feature_format: str
                  ) -> tuple[dict[Path, dict[str, np.ndarray]], list[str], list[int]]:
    """The folder caches ``items`` live in, each photo's cache key, and the indices of photos not cached."""
    folders = dict.fromkeys(item.path.parent for item in items)
    caches = {f: _load_folder_cache(_folder_cache_path(cache_dir, f, image_size, feature_format)) for f in folders}
    keys = [_photo_key(item.path) for item in items]
    missing = [i for i, item in enumerate(items) if keys[i] not in caches[item.path.parent]]
    return caches, keys, missing


def features_cached(items: Sequence[LabelledImage], cache_dir: str | Path, image_size: int = 224,
                    feature_format: str = POOLED_FORMAT) -> bool:
    """True when every photo of ``items`` already has features of this format in the cache."""
    return not _cache_lookup(items, Path(cache_dir), image_size, feature_format)[2]


def cached_image_features(
    items: Sequence[LabelledImage],
    extract: Callable[[list], np.ndarray],
    cache_dir: str | Path,
    image_size: int = 224,
    batch_size: int = 64,
    desc: str = "image features",
    feature_format: str = POOLED_FORMAT,
    dtype: type = np.float32,
) -> np.ndarray:
    """Features (of ``feature_format``) for ``items``; photos not cached yet go through ``extract(list[PIL.Image])``.
    The cache keeps float16; ``dtype`` float16 returns them without a float32 copy (maps of a whole split).

    The cache holds one file per photo folder (file name -> features), so any selection of photos
    reuses what an earlier, different selection computed.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    caches, keys, missing = _cache_lookup(items, cache_dir, image_size, feature_format)
    if missing:
        # A folder's file is rewritten once the pass moves past it (photos come folder by folder), not
        # after every batch: with maps of ~44 KB per photo, rewriting a growing file per batch slowed a
        # caching pass from ~70 to ~20 photos/s as its folders filled.
        pending: set[Path] = set()

        def save(folders: set[Path]) -> None:
            for folder in folders:
                _save_folder_cache(_folder_cache_path(cache_dir, folder, image_size, feature_format), caches[folder])

        try:
            with tqdm(total=len(missing), desc=desc, unit="img") as progress:
                for start in range(0, len(missing), batch_size):
                    chunk = missing[start : start + batch_size]
                    features = extract([open_image(items[i].path) for i in chunk])
                    for i, feature in zip(chunk, features, strict=True):
                        caches[items[i].path.parent][keys[i]] = feature
                    progress.update(len(chunk))
                    touched = {items[i].path.parent for i in chunk}
                    save(pending - touched)
                    pending = touched
        finally:  # an interrupted pass keeps what it computed
            save(pending)
    if not items:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([caches[item.path.parent][keys[i]] for i, item in enumerate(items)]).astype(dtype, copy=False)


@dataclass
class TowerOutputs:
    """Everything the frozen image tower gives a set of photos, for training without re-running it."""

    pooled: np.ndarray  # (n, 1280) pooled features
    logits: np.ndarray  # (n, 1000) ImageNet logits (ConSE reads them)
    maps: np.ndarray | None  # (n, c, h, w) input maps of the first tuned block (float16), only when tuning the tower
    small: np.ndarray | None = None  # (n,) which photos took the small-photo path; None without one
    mirrored_maps: np.ndarray | None = None  # the same maps of each photo's mirror image (augmentation)

    def select(self, index: np.ndarray) -> TowerOutputs:
        """The outputs of the photos at ``index`` (e.g. one client's share)."""
        def rows(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[index]

        return TowerOutputs(self.pooled[index], self.logits[index], rows(self.maps), rows(self.small),
                            rows(self.mirrored_maps))

    @property
    def small_count(self) -> int:
        """How many of these photos took the small-photo path."""
        return 0 if self.small is None else int(np.count_nonzero(self.small))


def tower_outputs(
    items: Sequence[LabelledImage],
    tower: ImageTower,
    cache_dir: str | Path,
    with_maps: bool = False,
    image_size: int = 224,
    desc: str = "image features",
    small_photos: SmallPhotoLayer | None = None,
    resample: str = DEFAULT_RESAMPLING,
    first_block: int = TOWER_BLOCKS,
    mirrored: bool = False,
) -> TowerOutputs:
    """Cached tower outputs for ``items``: one tower pass per new photo, whichever format is cached.

    With ``with_maps`` the cache keeps the input maps of block ``first_block`` (default: the pre-head
    maps) and the pooled features are recomputed from them through the frozen rest of the tower
    (milliseconds); otherwise it keeps only the pooled features. Photos are
    resized to ``image_size`` with ``resample``. With a ``small_photos`` layer, the photos it
    applies to take the small-photo path (their maps at its input size and filter, through its
    head); maps are then returned only when all photos take one path. ``mirrored`` (with maps) also
    returns the maps of every photo's mirror image, so training can flip photos at random without
    a tower pass per step.
    """
    if mirrored and not with_maps:
        raise ValueError("mirrored maps need with_maps")
    outputs = _tower_outputs(items, tower, cache_dir, with_maps, image_size, desc, small_photos, resample, first_block)
    if mirrored:
        # The mirror images take the same path (size, filter) as the photos themselves.
        on_small_path = outputs.small is not None and bool(outputs.small.all())
        size, filter_ = _tower_input(small_photos, on_small_path, image_size, resample)
        outputs.mirrored_maps = _cached_maps(items, tower, cache_dir, size, filter_, first_block,
                                             f"{desc} (mirrored)", mirror=True)
    return outputs


def cached_block_maps(items: Sequence[LabelledImage], tower: ImageTower, cache_dir: str | Path, first_block: int,
                      small_photos: SmallPhotoLayer | None = None, image_size: int = 224,
                      desc: str = "block maps") -> tuple[np.ndarray, np.ndarray, bool]:
    """Cached input maps of block ``first_block`` for photos of one kind and for their mirror images,
    and whether they are thumbnails (which take ``small_photos``' size and filter, as in
    :func:`tower_outputs`). Unlike it, no pooled features: for training the blocks from there."""
    on_small_path = small_photos is not None and one_kind(small_photos.applies_to(photo_sizes(items)))
    size, filter_ = _tower_input(small_photos, on_small_path, image_size, DEFAULT_RESAMPLING)
    own, mirrored = (_cached_maps(items, tower, cache_dir, size, filter_, first_block, desc + suffix, mirror=mirror)
                     for mirror, suffix in ((False, ""), (True, " (mirrored)")))
    return own, mirrored, on_small_path


def _tower_input(small_photos: SmallPhotoLayer | None, on_small_path: bool, image_size: int, resample: str
                 ) -> tuple[int, str]:
    """The size and filter photos enter the tower with: the small-photo layer's for thumbnails."""
    if on_small_path:
        return small_photos.input_size, small_photos.resample
    return image_size, resample if small_photos is None else DEFAULT_RESAMPLING


def _tower_outputs(items: Sequence[LabelledImage], tower: ImageTower, cache_dir: str | Path, with_maps: bool,
                   image_size: int, desc: str, small_photos: SmallPhotoLayer | None, resample: str,
                   first_block: int) -> TowerOutputs:
    if small_photos is None:
        return _frozen_outputs(items, tower, cache_dir, with_maps, image_size, desc, resample, first_block)
    small = small_photos.applies_to(photo_sizes(items))
    if with_maps:
        one_kind(small)
    pooled = np.empty((len(items), IMAGE_FEATURE_DIM), dtype=np.float32)
    maps = None
    if small.any():
        thumbnails = [item for item, is_small in zip(items, small, strict=True) if is_small]
        maps = _frozen_outputs(thumbnails, tower, cache_dir, True, small_photos.input_size, desc,
                               small_photos.resample, first_block).maps
        pooled[small] = small_photos.read(tower.frozen_tail(maps, first_block))
    if not small.all():
        sharp = [item for item, is_small in zip(items, small, strict=True) if not is_small]
        frozen = _frozen_outputs(sharp, tower, cache_dir, with_maps, image_size, desc, first_block=first_block)
        pooled[~small], maps = frozen.pooled, frozen.maps
    return TowerOutputs(pooled, tower.logits_from_pooled(pooled), maps if with_maps else None, small)


def _cached_maps(items: Sequence[LabelledImage], tower: ImageTower, cache_dir: str | Path, image_size: int,
                 resample: str, first_block: int, desc: str, mirror: bool = False) -> np.ndarray:
    """Cached input maps of block ``first_block`` for ``items`` (of their mirror images with ``mirror``), float16
    as cached: a whole train split's block-11 maps and their mirror images take 5.2 GB so, 10.4 GB as float32."""
    from PIL import ImageOps

    from middleware.encoder.preprocess import images_to_array

    def maps_of(images: list) -> np.ndarray:
        if mirror:
            images = [ImageOps.mirror(image) for image in images]
        return tower.block_input_maps(images_to_array(images, size=image_size, resample=resample), first_block)

    feature_format = resampled_format(maps_format(first_block), resample)
    return cached_image_features(items, maps_of, cache_dir, image_size, desc=desc, dtype=np.float16,
                                 feature_format=mirrored_format(feature_format) if mirror else feature_format)


def _frozen_outputs(items: Sequence[LabelledImage], tower: ImageTower, cache_dir: str | Path, with_maps: bool,
                    image_size: int, desc: str, resample: str = DEFAULT_RESAMPLING,
                    first_block: int = TOWER_BLOCKS) -> TowerOutputs:
    from middleware.encoder.preprocess import images_to_array

    def tower_input(images: list) -> np.ndarray:
        return images_to_array(images, size=image_size, resample=resample)

    if with_maps:
        maps = _cached_maps(items, tower, cache_dir, image_size, resample, first_block, desc)
        pooled = tower.pooled_from_maps(tower.frozen_tail(maps, first_block))
    else:
        maps = None
        pooled = cached_image_features(items, lambda ims: tower.features(tower_input(ims))[0], cache_dir, image_size,
                                       desc=desc, feature_format=resampled_format(POOLED_FORMAT, resample))
    return TowerOutputs(pooled, tower.logits_from_pooled(pooled), maps)
