"""Markdown tables and plots written beside benchmark JSON files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def quality_markdown(results: dict) -> str:
    """Two tables: paper-protocol P/R/F1 per domain and N, and retrieval metrics per domain."""
    lines = [f"# Quality: encoder `{results['encoder']}`, split `{results.get('split', '?')}`", ""]
    lines += ["| domain | N | precision | recall | F1 | F1 standard error over draws |", "|---|---|---|---|---|---|"]
    for domain, per_n in results["paper_protocol"].items():
        for n, s in per_n.items():
            se = f"{s['f1_se']:.3f}" if "f1_se" in s else "-"  # results written before it was recorded
            lines.append(f"| {domain} | {n} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {se} |")
    lines += ["", "| domain | top-1 | t2i P@10 | t2i R@50 | t2i mAP | i2i P@10 |", "|---|---|---|---|---|---|"]
    for domain, r in results["retrieval"].items():
        lines.append(
            f"| {domain} | {r['top1']:.3f} | {r['t2i_p@10']:.3f} | {r['t2i_r@50']:.3f} | "
            f"{r['t2i_map']:.3f} | {r['i2i_p@10']:.3f} |"
        )
    if "mean_f1" in results:
        lines += ["", "Mean F1 over domains: " + ", ".join(f"N={n}: {v:.3f}" for n, v in results["mean_f1"].items())]
    return "\n".join(lines) + "\n"


def write_quality_report(results: dict, json_path: Path) -> None:
    """Write ``<name>.md`` and a bar plot ``<name>.png`` of F1 per domain and N."""
    json_path.with_suffix(".md").write_text(quality_markdown(results))
    domains = list(results["paper_protocol"])
    n_keys = list(next(iter(results["paper_protocol"].values())))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(n_keys), 1)
    for j, n in enumerate(n_keys):
        values = [results["paper_protocol"][d][n]["f1"] for d in domains]
        ax.bar([i + j * width for i in range(len(domains))], values, width, label=f"N={n}")
    ax.set_xticks([i + width * (len(n_keys) - 1) / 2 for i in range(len(domains))], domains)
    ax.set_ylim(0, 1)
    ax.set_ylabel("paper-protocol F1")
    ax.set_title(f"PMIRS quality ({results['encoder']})")
    ax.legend(ncols=len(n_keys), fontsize=8, loc="upper center")
    fig.tight_layout()
    fig.savefig(json_path.with_suffix(".png"), dpi=120)
    plt.close(fig)


def grouped_bar_plot(path: Path, labels: list[str], series: list[tuple[str, list[float]]], ylabel: str,
                     title: str, targets: list[float] | None = None) -> None:
    """One bar per (name, values) of ``series`` for each labelled set (e.g. base and tuned), on a 0-1
    scale, saved to ``path``; ``targets`` (one per set) are drawn as a line across its bars."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(labels)), 3.5))
    x = list(range(len(labels)))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series):
        ax.bar([i + (k - (len(series) - 1) / 2) * width for i in x], values, width=width, label=name)
    if targets is not None:
        ax.hlines(targets, [i - 0.45 for i in x], [i + 0.45 for i in x], colors="black", linestyles="--",
                  label="target")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
