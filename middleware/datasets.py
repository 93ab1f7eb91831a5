"""Labelled photo collections in the ImageFolder layout, ours or any user's.

Layouts understood:
    <root>/<label>/*.jpg                      one domain (the folder name is the label)
    <root>/<domain>/<label>/*.jpg             several domains
    <data>/<split>/<domain>/<label>/*.jpg     a benchmark split (train/, val/)
    <data>/pretrain/<label>/*.jpg             the pretraining pool
``classes.csv`` beside the splits is optional and only adds synonyms.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from middleware.encoder.preprocess import to_rgb
from pmirs.errors import DatasetError, InvalidImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


@dataclass(frozen=True)
class LabelledImage:
    """One photo and the label its folder gives it."""

    path: Path
    label: str
    domain: str | None = None


def label_from_folder(name: str) -> str:
    """Turn a folder name into a label phrase: ``car_side`` -> ``car side``."""
    return " ".join(name.replace("_", " ").split())


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_image_folder(root: str | Path) -> list[LabelledImage]:
    """List every photo under ``root`` with its label (and domain for two-level trees).

    Raises:
        DatasetError: the folder is missing or holds no images in a recognised layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"not a directory: {root}")
    items: list[LabelledImage] = []
    for first in _subdirs(root):
        direct = _images_in(first)
        if direct:
            label = label_from_folder(first.name)
            items.extend(LabelledImage(p, label, None) for p in direct)
            continue
        for second in _subdirs(first):
            label = label_from_folder(second.name)
            domain = label_from_folder(first.name)
            items.extend(LabelledImage(p, label, domain) for p in _images_in(second))
    if not items:
        raise DatasetError(
            f"no images found under {root}: expected <root>/<label>/*.jpg or <root>/<domain>/<label>/*.jpg"
        )
    return items


def load_split(data_root: str | Path, split: str) -> dict[str, list[LabelledImage]]:
    """Return ``{domain: images}`` for a split; ``pretrain`` (flat) becomes one domain."""
    split_root = Path(data_root) / split
    by_domain: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in scan_image_folder(split_root):
        by_domain[item.domain or split].append(item)
    return dict(by_domain)


def read_synonyms(data_root: str | Path) -> dict[str, list[str]]:
    """Synonyms per label from an optional ``classes.csv`` (``label``, ``synonyms`` columns)."""
    path = Path(data_root) / "classes.csv"
    if not path.is_file():
        return {}
    synonyms: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = (row.get("label") or "").strip()
            names = [s.strip() for s in (row.get("synonyms") or "").split(";") if s.strip()]
            if label:
                synonyms[label] = names or [label]
    return synonyms


def open_image(path: str | Path) -> Image.Image:
    """Open a photo as RGB, with a clear error for files that are not images."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImageError(f"not a readable image: {path}") from exc


def labels_of(items: list[LabelledImage]) -> list[str]:
    """Distinct labels in first-seen order."""
    return list(dict.fromkeys(item.label for item in items))


def limit_per_class(items: list[LabelledImage], per_class: int | None) -> list[LabelledImage]:
    """Keep the first ``per_class`` photos of each (domain, label), in order; None keeps all."""
    if per_class is None:
        return list(items)
    seen: dict[tuple[str | None, str], int] = defaultdict(int)
    kept = []
    for item in items:
        key = (item.domain, item.label)
        if seen[key] < per_class:
            seen[key] += 1
            kept.append(item)
    return kept


def photo_caption(label: str) -> str:
    """The caption a labelled photo is indexed with: ``a photo of a koala``, ``an abacus``."""
    article = "an" if label[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} {label}"


# Where the team's benchmark data sits: `shared/` beside the repository checkout (see its README).
PHRASE_IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "phrase-imagenet"
DEMO_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "demo"  # shipped full-resolution demo photos
