"""`pmirs bench mirror-average`: should tuned photos be embedded as the mean with their mirror image?

Test-time flip: a photo and its mirror image show the same thing, while the tower's errors on the
two differ (most of all on blurred, upsampled thumbnails), so the mean of both embeddings is a
steadier estimate. It costs a second tower pass for every photo it applies to: tuned photos only
(``tuned_photos``), so sharp photos keep the zero-shot base and the relevance thresholds hold.
The choice is made on classes no training saw: the held-out ``pretrain/`` thumbnails (plus any
``--folder`` as thumbnails); it is switched on when it raises F1@10 there without lowering mAP.
``val/`` domains are only reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.forgetting import HELDOUT_PER_CLASS, PhotoSet, folder_set, score_set
from benchmarks.output import write_report
from pmirs.errors import DatasetError


def photo_sets(data_root: Path, folders: list[str], thumbnail_side: int) -> tuple[list[PhotoSet], list[PhotoSet]]:
    """The sets the choice is made on (held-out classes) and the ``val/`` domains, only reported."""
    if not (data_root / "pretrain").is_dir():
        raise DatasetError(f"no pretrain/ split under {data_root}: the choice needs its held-out classes")
    heldout = [folder_set(data_root / "pretrain", HELDOUT_PER_CLASS)]
    heldout += [folder_set(folder, thumbnail_side=thumbnail_side) for folder in folders]
    val = data_root / "val"
    reported = [folder_set(d) for d in sorted(val.iterdir()) if d.is_dir()] if val.is_dir() else []
    return heldout, reported


def choose(heldout: dict[str, dict[str, dict[str, float]]]) -> bool:
    """On when, summed over the held-out sets, it raises F1@10 and does not lower class-name query mAP."""
    def gain(metric: str) -> float:
        return sum(entry["on"][metric] - entry["off"][metric] for entry in heldout.values())

    return gain("f1@10") > 0 and gain("t2i_map") >= 0


def run_mirror_average_benchmark(data_root: str | Path, heads: str | Path | None = None, folders: list[str] = (),
                                 thumbnail_side: int = 64, out: str | Path = "mirror_average.json",
                                 feature_cache: str | Path = "cache/features") -> dict:
    """Score the heads with and without mirror averaging on every set; write JSON, table and plot."""
    from middleware.encoder.heads import load_heads
    from middleware.encoder.lite import LiteEncoder

    checkpoint = load_heads(heads or None)
    heldout_sets, val_sets = photo_sets(Path(data_root), list(folders), thumbnail_side)
    off = LiteEncoder(checkpoint=checkpoint.reconfigured(mirror_average=False))
    encoders = {"off": off, "on": off.reconfigured(mirror_average=True)}

    def scores(sets: list[PhotoSet]) -> dict:
        return {s.name: {"label": s.label, "photos": len(s.items),
                         **{name: score_set(enc, s, Path(feature_cache)) for name, enc in encoders.items()}}
                for s in sets}

    heldout = scores(heldout_sets)
    results = {"heads": checkpoint.version, "tuned_photos": checkpoint.config.tuned_photos,
               "current": checkpoint.config.mirror_average, "chosen": choose(heldout),
               "chosen_on": ", ".join(heldout), "heldout": heldout, "val": scores(val_sets)}
    write_report(out, results, mirror_average_markdown, _plot)
    return results


def mirror_average_markdown(results: dict) -> str:
    """One row per set: F1@5 / F1@10 / mAP without and with mirror averaging."""
    lines = [f"# Mirror averaging: heads `{results['heads']}` (applies to {results['tuned_photos']} photos)", "",
             f"Chosen: {'on' if results['chosen'] else 'off'}, on {results['chosen_on']}.", "",
             "| set | photos | off F1@5 / @10 / mAP | on F1@5 / @10 / mAP | F1@10 gain | mAP gain |",
             "|---|---|---|---|---|---|"]
    for group in ("heldout", "val"):
        for name, entry in results[group].items():
            off, on = entry["off"], entry["on"]
            lines.append(f"| {group}: {name} | {entry['photos']} | "
                         f"{off['f1@5']:.3f} / {off['f1@10']:.3f} / {off['t2i_map']:.3f} | "
                         f"{on['f1@5']:.3f} / {on['f1@10']:.3f} / {on['t2i_map']:.3f} | "
                         f"{on['f1@10'] - off['f1@10']:+.3f} | {on['t2i_map'] - off['t2i_map']:+.3f} |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, path: Path) -> None:
    from benchmarks.reports import grouped_bar_plot

    entries = [*results["heldout"].values(), *results["val"].values()]
    grouped_bar_plot(path, [e["label"] for e in entries],
                    [(f"mirror average {name}", [e[name]["f1@10"] for e in entries]) for name in ("off", "on")],
                    "paper-protocol F1@10", f"Test-time flip on tuned photos ({results['heads']})")


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench mirror-average``."""
    parser = sub.add_parser("mirror-average", help="tuned photos averaged with their mirror image: on or off")
    parser.add_argument("--data", required=True, help="phrase-imagenet root (pretrain/, val/)")
    parser.add_argument("--heads", default="", help="heads checkpoint (default: the shipped default)")
    parser.add_argument("--folder", action="append", default=[],
                        help="also judge on this labelled folder of untrained classes, as thumbnails; repeatable")
    parser.add_argument("--thumbnail-side", type=int, default=64, help="side of those thumbnails")
    parser.add_argument("--out", default="mirror_average.json", help="results JSON (+ .md, .png)")
    parser.add_argument("--feature-cache", default="cache/features")
    parser.add_argument("--write-to", default="", help="also save the heads with the chosen setting to this path")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from middleware.encoder.heads import load_heads, save_reconfigured

    results = run_mirror_average_benchmark(args.data, args.heads, args.folder, args.thumbnail_side, args.out,
                                           args.feature_cache)
    print(mirror_average_markdown(results))
    if args.write_to:
        version = save_reconfigured(load_heads(args.heads or None), args.write_to, mirror_average=results["chosen"])
        print(f"wrote {args.write_to} (version {version}) with mirror_average {results['chosen']}")
    return 0
