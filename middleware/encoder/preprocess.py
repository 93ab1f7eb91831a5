"""Deterministic image preprocessing with PIL and numpy only (no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# EfficientNet-Lite0 (ported from the TF release) was trained on inputs scaled as (x - 127) / 128.
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)
# Resampling filters a photo may be resized with, by name (the name is what configs and caches record).
RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}
DEFAULT_RESAMPLING = "bicubic"


def resampling_filter(name: str) -> Image.Resampling:
    """The PIL filter called ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    if name not in RESAMPLING:
        raise ValueError(f"unknown resampling filter {name!r}; choose from {sorted(RESAMPLING)}")
    return RESAMPLING[name]


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB copy of any PIL image (grayscale, palette, RGBA on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int, resample: str = DEFAULT_RESAMPLING) -> Image.Image:
    """Resize the short side to ``size`` with the ``resample`` filter and crop the centre square.

    Small photos (e.g. 64x64) are upsampled: the tower was trained at 224 px and upsampling
    beats running it at the native resolution. Which filter upsamples them best is measured
    (`pmirs bench input-size --filters`): bicubic's overshoot halos cost the tower accuracy.
    """
    resample_filter = resampling_filter(resample)
    image = to_rgb(image)
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), resample_filter)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def images_to_array(
    images: Sequence[Image.Image],
    size: int = 224,
    mean: Sequence[float] = LITE_MEAN,
    std: Sequence[float] = LITE_STD,
    resample: str = DEFAULT_RESAMPLING,
) -> np.ndarray:
    """Stack images into a normalised float32 NCHW batch."""
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    mean_arr = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_arr = np.asarray(std, dtype=np.float32)[:, None, None]
    for i, image in enumerate(images):
        pixels = np.asarray(resize_center_crop(image, size, resample), dtype=np.float32).transpose(2, 0, 1)
        batch[i] = (pixels - mean_arr) / std_arr
    return batch
