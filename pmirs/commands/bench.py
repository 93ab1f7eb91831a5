"""``pmirs bench KIND``: every module in :mod:`benchmarks` that defines ``register_bench(sub)``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import benchmarks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and write its results to a file")
    bench_sub = parser.add_subparsers(dest="bench", required=True, metavar="KIND")
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"benchmarks.{info.name}")
        if hasattr(module, "register_bench"):
            module.register_bench(bench_sub)
