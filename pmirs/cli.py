"""The ``pmirs`` command line: discovers subcommands in :mod:`pmirs.commands`.

Each module in ``pmirs/commands/`` exposes ``register(subparsers)`` which adds its subcommand(s)
and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Only the CLI reads environment variables; library code takes parameters.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import pmirs.commands
from pmirs.errors import PMIRSError

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "ANONYMIZED_TELEMETRY": "False",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand module registered, in name order."""
    parser = argparse.ArgumentParser(prog="pmirs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(pmirs.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"pmirs.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
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
