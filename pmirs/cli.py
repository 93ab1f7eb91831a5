"""The ``pmirs`` command line: discovers subcommands in :mod:`pmirs.commands`.

Each module in ``pmirs/commands/`` is named after its command (``train-heads`` -> ``train_heads.py``)
and exposes ``register(subparsers)``, which adds the subcommand and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit code). Only the module of the command being
run is imported, so ``pmirs serve`` never pays for torch. Only the CLI reads environment variables;
library code takes parameters.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import pmirs.commands
from pmirs.errors import PMIRSError

# What every PMIRS process runs with: nothing downloads weights or reports telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "ANONYMIZED_TELEMETRY": "False",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser: only the named command's module, or all of them for help and errors."""
    parser = argparse.ArgumentParser(prog="pmirs", description="PMIRS: private multimodal retrieval for chatbots.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = sorted(info.name for info in pkgutil.iter_modules(pmirs.commands.__path__))
    chosen = next((arg for arg in (argv or []) if not arg.startswith("-")), "").replace("-", "_")
    for name in [chosen] if chosen in names else names:
        importlib.import_module(f"pmirs.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PMIRSError as exc:
        print(f"pmirs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pmirs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
