"""`pmirs bench federated-compare`: runs from several `bench federated` result files on one plot.

Each result file holds the runs of one command; comparing recipes (e.g. IID against non-IID with
fewer local steps and more rounds) means reading several. Runs of different lengths are put on
one axis by the share of their training done, so a 6-round and a 3-round run of the same total
steps end at the same place. The first run is the reference the gaps are measured from.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from federated.json_files import read_json
from federated.report import plot_mean_f1
from pmirs.errors import FederatedError

N_VALUES = ("5", "10")


@dataclass(frozen=True)
class ComparedRun:
    """One run's mean F1 per round (round 0 = before training) and final held-out F1@10, under a label."""

    label: str
    source: str  # "<file>:<run>"
    mean_f1: list[dict[str, float]]
    heldout_f1: float  # F1@10 on classes no run trained on: the forgetting check


def parse_spec(spec: str) -> tuple[str, Path, str]:
    """``LABEL=PATH:RUN`` -> (label, path, run)."""
    label, sep, rest = spec.partition("=")
    path, colon, run = rest.rpartition(":")
    if not sep or not colon or not label or not path or not run:
        raise FederatedError(f"bad run {spec!r}: expected LABEL=RESULTS.json:RUN, e.g. IID=fed.json:fedavg-iid")
    return label, Path(path), run


def load_run(label: str, path: Path, run: str) -> ComparedRun:
    """The run ``run`` of the result file ``path``."""
    runs = read_json(path, "bench federated results").get("runs")
    if not isinstance(runs, dict):
        raise FederatedError(f"cannot read bench federated results {path}: it holds no runs")
    if run not in runs:
        raise FederatedError(f"{path} has no run {run!r} (it has {', '.join(runs)})")
    history = runs[run]["history"]
    return ComparedRun(label, f"{path.name}:{run}", [h["mean_f1"] for h in history], history[-1]["heldout_f1@10"])


def compare_markdown(runs: Sequence[ComparedRun]) -> str:
    """Final mean F1 per run, its gap to the first run in points, and held-out F1@10."""
    reference = runs[0].mean_f1[-1]
    lines = ["| run | source | rounds | mean F1@5 | mean F1@10 | gap to the first (points) | held-out F1@10 |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        final = run.mean_f1[-1]
        gaps = " / ".join(f"{100 * (reference[n] - final[n]):.2f}" for n in N_VALUES)
        lines.append(f"| {run.label} | `{run.source}` | {len(run.mean_f1) - 1} | {final['5']:.3f} | "
                     f"{final['10']:.3f} | {gaps if run is not runs[0] else ''} | {run.heldout_f1:.3f} |")
    return "\n".join(lines) + "\n"


def write_comparison(runs: Sequence[ComparedRun], out: str | Path) -> Path:
    """Write ``out`` (.png: mean F1 at N=5 and 10 against the share of training done) and ``.md`` beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(compare_markdown(runs))
    curves = [(run.label, [r / max(len(run.mean_f1) - 1, 1) for r in range(len(run.mean_f1))], run.mean_f1)
              for run in runs]
    plot_mean_f1(curves, "share of the run's training done", out.with_suffix(".png"))
    return out.with_suffix(".png")


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench federated-compare``."""
    parser = sub.add_parser("federated-compare", help="runs from several `bench federated` result files on one plot")
    parser.add_argument("runs", nargs="+", metavar="LABEL=RESULTS.json:RUN", help="the first is the reference")
    parser.add_argument("--out", default="fed-compare.png", help="the plot (.md with the final rows beside it)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    runs = [load_run(*parse_spec(spec)) for spec in args.runs]
    plot = write_comparison(runs, args.out)
    print(compare_markdown(runs), end="")
    print(f"written: {plot} and {plot.with_suffix('.md')}")
    return 0
