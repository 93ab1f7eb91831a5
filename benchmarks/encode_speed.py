"""`pmirs bench encode`: single-query latency and batch throughput of an encoder on this machine."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.output import write_json
from middleware.datasets import open_image, scan_image_folder
from middleware.encoder import Encoder, create_encoder

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
QUERY_TEXTS = ("a photo of a tabby cat", "a red sports car on a road", "a bowl of guacamole", "a close-up of a zebra")


def _latencies(call: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "n": repeats}


def _throughput(call: Callable[[], object], items: int) -> float:
    start = time.perf_counter()
    call()
    return items / (time.perf_counter() - start)


def run_encode_benchmark(encoder: Encoder, images_dir: Path = DEMO_DIR, repeats: int = 30, batch: int = 64) -> dict:
    """Median/p95 of one text and one image query; images/s and texts/s in batches of ``batch``."""
    photos = [open_image(item.path) for item in scan_image_folder(images_dir)][:batch]
    texts = [QUERY_TEXTS[i % len(QUERY_TEXTS)] + f" #{i}" for i in range(batch * 4)]
    return {
        "encoder": encoder.version,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "text_query": _latencies(lambda: encoder.encode_texts([QUERY_TEXTS[0]]), repeats),
        "image_query": _latencies(lambda: encoder.encode_images([photos[0]]), repeats),
        "images_per_s": _throughput(lambda: encoder.encode_images(photos, batch_size=32), len(photos)),
        "texts_per_s": _throughput(lambda: encoder.encode_texts(texts, batch_size=64), len(texts)),
        "batch": batch,
    }


def register_bench(sub) -> None:
    """``pmirs bench encode``."""
    parser = sub.add_parser("encode", help="encoder latency (p50/p95) and throughput")
    parser.add_argument("--encoder", default="lite")
    parser.add_argument("--heads", default=None)
    parser.add_argument("--images", default=str(DEMO_DIR), help="an ImageFolder of photos to encode")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="encode.json")
    parser.set_defaults(func=_run_from_args)


def _run_from_args(args) -> int:
    result = run_encode_benchmark(create_encoder(args.encoder, args.heads), Path(args.images), args.repeats)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0
