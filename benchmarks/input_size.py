"""`pmirs bench input-size`: how well the frozen image tower recognises photos at each input size
and upsampling filter.

ConSE can only be as good as the tower's own ImageNet classifier, and small photos (e.g. 64-px
thumbnails) must be upsampled. Larger inputs help models trained with random-resized crops on
full-size photos (FixRes); whether they help here is measured, not assumed: the tower's top-1 and
top-5 over the 1000 ImageNet classes, per input size, on labelled photos whose labels are ImageNet
classes (by ``wnid`` in ``classes.csv``, else by exact class name). Results are keyed ``SIZE`` for
the default bicubic filter and ``SIZE:FILTER`` otherwise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.output import write_json
from middleware.datasets import PHRASE_IMAGENET, LabelledImage
from middleware.encoder.preprocess import DEFAULT_RESAMPLING, RESAMPLING, resampling_filter
from middleware.encoder.small_photos import SmallInput, imagenet_index


def tower_accuracy(items: Sequence[LabelledImage], targets: np.ndarray, sizes: Sequence[int],
                   batch_size: int = 64, filters: Sequence[str] = (DEFAULT_RESAMPLING,)) -> dict[str, dict[str, float]]:
    """Top-1 / top-5 of the tower's classifier and seconds taken, per input size and filter."""
    from middleware.datasets import open_image
    from middleware.encoder.preprocess import images_to_array
    from middleware.encoder.towers import ImageTower

    tower = ImageTower()
    images = [open_image(item.path) for item in items]
    results = {}
    for size in sizes:
        for resample in filters:
            key = SmallInput(size, resample).label
            started = time.perf_counter()
            logits = np.concatenate([
                tower.features(images_to_array(images[s : s + batch_size], size=size, resample=resample))[1]
                for s in range(0, len(images), batch_size)])
            top5 = np.argsort(-logits, axis=1)[:, :5]
            results[key] = {"top1": round(float((top5[:, 0] == targets).mean()), 4),
                            "top5": round(float((top5 == targets[:, None]).any(axis=1).mean()), 4),
                            "seconds": round(time.perf_counter() - started, 1)}
            print(f"  {size} px {resample}: top-1 {results[key]['top1']:.3f}, top-5 {results[key]['top5']:.3f}",
                  flush=True)
    return results


def run_input_size_benchmark(data_root: str | Path, split: str, per_class: int, sizes: Sequence[int],
                             out: str | Path, filters: Sequence[str] = (DEFAULT_RESAMPLING,)) -> dict:
    """Measure every size and filter on ``<data_root>/<split>`` (``per_class`` photos per label) and
    write JSON."""
    from middleware.datasets import limit_per_class, scan_image_folder

    data_root = Path(data_root)
    items = limit_per_class(scan_image_folder(data_root / split if split else data_root), per_class or None)
    index = imagenet_index(items, data_root)
    kept = [item for item in items if item.label in index]
    if not kept:
        raise SystemExit(f"no label under {data_root / split} names an ImageNet class")
    targets = np.asarray([index[item.label] for item in kept])
    results = {"data": str(data_root / split), "photos": len(kept), "classes": len(index),
               "skipped_labels": sorted({i.label for i in items} - set(index)),
               "sizes": tower_accuracy(kept, targets, sizes, filters=filters)}
    write_json(out, results)
    return results


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench input-size``."""
    parser = sub.add_parser("input-size", help="the image tower's ImageNet accuracy per input size")
    parser.add_argument("--data", default=str(PHRASE_IMAGENET), help="dataset root (classes.csv with wnid helps)")
    parser.add_argument("--split", default="pretrain", help="sub-folder of --data ('' = --data itself)")
    parser.add_argument("--per-class", type=int, default=15, help="photos per label (0 = all)")
    parser.add_argument("--sizes", default="224,256", help="comma-separated input sizes in pixels")
    parser.add_argument("--filters", default=DEFAULT_RESAMPLING,
                        help=f"comma-separated upsampling filters ({', '.join(sorted(RESAMPLING))})")
    parser.add_argument("--out", default="input_size.json", help="results JSON")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    filters = [f.strip() for f in args.filters.split(",") if f.strip()]
    try:
        for name in filters:
            resampling_filter(name)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    results = run_input_size_benchmark(args.data, args.split, args.per_class, sizes, args.out, filters)
    print(f"{results['photos']} photos of {results['classes']} ImageNet classes; results in {args.out}")
    return 0
