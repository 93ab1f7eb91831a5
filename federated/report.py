"""Markdown tables and the F1-per-round plot written beside ``pmirs bench federated`` results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def federated_markdown(results: dict) -> str:
    """Final F1 per domain at N=5/10, mean F1, t2i mAP, held-out F1@10 and seconds per round."""
    runs = results["runs"]
    base = runs["base"]["history"][0]
    domains = list(base["f1"])
    settings = results.get("settings", {})
    blocks = int(settings.get("tower-blocks", 0))
    trained = "image heads" + (" + tower's last conv layer" if settings.get("tower-head") else "") + (
        f" + its last {blocks} MBConv block(s)" if blocks else "") + (
        " + its ImageNet classifier (ConSE reads it)" if settings.get("tower-classifier") else "") + (
        f", distilled toward the frozen tower x{settings['distill']}" if settings.get("distill") else "") + (
        " + text head" if settings.get("train-text") else "") + (
        ", photos mirrored at random" if settings.get("mirror") else "")
    lines = [f"# Federated fine-tuning: {results['clients']} clients, {results['rounds']} rounds "
             f"(base heads `{results['base_version']}`)", "",
             f"Trained: {trained}; {_local_work(settings)} per round, learning rate "
             f"{settings.get('learning-rate', '?')}{_tower_lr(settings)}{_schedule(settings)}, "
             f"anchor {settings.get('anchor', '?')}, "
             f"{settings.get('loss', 'clip')} loss; "
             f"client updates weighted by {_weighting(settings)}.", "", _noise_line(results), ""]
    head = " | ".join(f"{d} F1@5 | {d} F1@10" for d in domains)
    lines += [f"| run | {head} | mean F1@5 | mean F1@10 | mean mAP | held-out F1@10 | s/round |",
              "|---|" + "---|" * (2 * len(domains) + 5)]
    for name, run in runs.items():
        final = run["history"][-1]
        cells = " | ".join(f"{final['f1'][d]['5']:.3f} | {final['f1'][d]['10']:.3f}" for d in domains)
        mean_map = sum(final["map"].values()) / len(final["map"])
        seconds = run.get("round_seconds") or []
        per_round = f"{sum(seconds) / len(seconds):.1f}" if seconds else "-"
        lines.append(f"| {name} | {cells} | {final['mean_f1']['5']:.3f} | {final['mean_f1']['10']:.3f} | "
                     f"{mean_map:.3f} | {final['heldout_f1@10']:.3f} | {per_round} |")
    for name, run in runs.items():
        dp = (run.get("dp") or {})
        if dp.get("enabled"):
            lines += ["", f"{name}: noise multiplier {dp['noise_multiplier']}, clipping norm {dp['clipping_norm']}, "
                          f"client-level epsilon {dp['epsilon']:.3g} at delta {dp['delta']:g} ({dp['accountant']})"]
        if run.get("failed_rounds"):
            lines += ["", f"{name}: rounds {run['failed_rounds']} aggregated no client update (every client failed "
                          "or SecAgg+ halted); the weights stayed as they were"]
    lines += ["", _best_line(results)]
    return "\n".join(lines) + "\n"


def _schedule(settings: dict) -> str:
    schedule = settings.get("lr-schedule", "constant")
    return "" if schedule == "constant" else f" ({schedule} over the rounds)"


def _noise_line(results: dict) -> str:
    """How many label draws scored each round, and the largest standard error of a final domain F1."""
    draws = results.get("draws", 6)  # results written before draws were recorded used 6
    errors = [se for run in results["runs"].values() for per_n in run["history"][-1].get("f1_se", {}).values()
              for n, se in per_n.items() if n in ("5", "10")]
    worst = f"; largest standard error of a final domain F1@5/@10: {max(errors):.3f}" if errors else ""
    return f"Scored with {draws} label draws per N{worst}."


def _best_line(results: dict) -> str:
    """Which federated checkpoint the benchmark would ship, or why none."""
    best = results.get("best")
    if best:
        return f"Best shippable federated checkpoint: `{best['checkpoint']}` ({best['run']})"
    if not any(run.get("checkpoint") for run in results["runs"].values()):
        return "No federated run saved a checkpoint here (centralized and base runs are not shippable)."
    return "No federated checkpoint passed the forgetting check."


def _local_work(settings: dict) -> str:
    steps = int(settings.get("local-steps", 0))
    return f"{steps} local steps" if steps else f"{settings.get('local-epochs', '?')} local epoch(s)"


def _tower_lr(settings: dict) -> str:
    scale = float(settings.get("tower-lr-scale", 1.0))
    return f" (tuned tower layers x{scale:g})" if scale != 1.0 and settings.get("tower-head") else ""


def _weighting(settings: dict) -> str:
    uniform = settings.get("client-weighting") == "uniform"
    return "1 per client (DP runs always)" if uniform else "photo count (DP runs: 1 per client)"


def write_federated_report(results: dict, json_path: Path) -> None:
    """Write ``<name>.md`` and ``<name>.png`` (mean F1 at N=5 and N=10 against rounds, per run)."""
    json_path = Path(json_path)
    json_path.with_suffix(".md").write_text(federated_markdown(results))
    curves = [(name, list(range(len(run["history"]))), [h["mean_f1"] for h in run["history"]])
              for name, run in results["runs"].items()]
    plot_mean_f1(curves, "round", json_path.with_suffix(".png"))


def plot_mean_f1(curves: Sequence[tuple[str, Sequence[float], Sequence[dict[str, float]]]], xlabel: str,
                 out: Path) -> None:
    """Mean F1 at N=5 and N=10 per curve (label, x values, mean F1 per point); a one-point curve (the
    zero-shot base) is drawn as a dashed level."""
    # The legend goes below both panels: inside one it covered the lowest curves (a DP run's).
    columns = 3
    legend_inches = 0.25 * -(-len(curves) // columns) + 0.15
    fig, axes = plt.subplots(1, 2, figsize=(10, 4 + legend_inches), sharey=True)
    for ax, n in zip(axes, ("5", "10"), strict=True):
        for label, x, mean_f1 in curves:
            values = [point[n] for point in mean_f1]
            if len(values) == 1:
                ax.axhline(values[0], linestyle="--", color="grey", label=label)
            else:
                ax.plot(x, values, marker="o", markersize=3, label=label)
        ax.set_title(f"mean paper-protocol F1, N={n}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("F1 (val)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_inches / (4 + legend_inches), 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
