"""`pmirs bench mixed-kinds`: do thumbnails and sharp photos rank together in one collection?

Heads whose image terms were tuned on one kind of photo (``tuned_photos``) embed the other kind at
the zero-shot base. Contrastive fine-tuning only widens cosine gaps, so the tuned photos' cosines
with every text drop (measured: a caption's own thumbnails fell from 0.83 to 0.62 on average, its
sharp photo stayed at 0.92, a sharp photo of another class at 0.63), and in a collection holding
both kinds sharp photos of the wrong class outrank the right thumbnails. ``tuned_offset`` adds the
generic caption direction back to tuned photos; this benchmark measures text->image mAP of
class-name queries over a mixed collection for a grid of offsets and picks the best on held-out
classes: the ``pretrain/`` thumbnails with the one sharp ``fullres/general/`` photo of each class.
No benchmark class takes part in the choice; ``val/`` with ``fullres/<domain>/`` is only reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.forgetting import HELDOUT_PER_CLASS
from benchmarks.output import write_report
from benchmarks.retrieval_metrics import text_to_image
from pmirs.errors import DatasetError

OFFSETS = tuple(round(0.1 * i, 1) for i in range(16))
QUERY_TEMPLATE = "a photo of a {}"
TIE = 0.005  # held-out mixed mAPs this close count as equal (the smallest offset wins): past ~1 the curve is flat


class KindScorer:
    """Embeddings of a split at offset 0, which any offset then shifts without another tower pass."""

    def __init__(self, encoder, thumbnails: list, thumbnail_emb: np.ndarray, sharp_paths: list[Path]) -> None:
        from middleware.datasets import open_image
        from middleware.encoder.small_photos import takes_tuned_terms

        images = [open_image(p) for p in sharp_paths]
        sharp_emb = encoder.encode_images(images)
        small = encoder.small_photos([im.size for im in images])
        kind = encoder.config.tuned_photos
        self.labels = np.asarray([i.label for i in thumbnails] + [p.stem for p in sharp_paths])
        self.emb = torch.from_numpy(np.concatenate([thumbnail_emb, sharp_emb]))
        thumb_tuned = takes_tuned_terms(kind, np.ones(len(thumbnails), dtype=bool), len(thumbnails))
        self.tuned = torch.from_numpy(np.concatenate([thumb_tuned, takes_tuned_terms(kind, small, len(images))]))
        self.is_sharp = np.arange(len(self.labels)) >= len(thumbnails)
        self.direction = encoder.heads.generic_direction().detach()
        classes = sorted(set(self.labels[self.is_sharp]))
        self.classes = np.asarray(classes)
        self.queries = encoder.encode_texts([QUERY_TEMPLATE.format(c) for c in classes])

    def scores(self, offset: float) -> dict[str, float]:
        """Class-name query mAP over thumbnails alone and over thumbnails + sharp photos, and the mean
        cosine of a query with its own thumbnails and with its own sharp photo."""
        from middleware.encoder.heads import shift_toward

        emb = shift_toward(self.emb, self.direction, offset, self.tuned).numpy()
        thumbs = ~self.is_sharp
        own = self.labels[None, :] == self.classes[:, None]
        sims = self.queries @ emb.T
        return {
            "map_thumbnails": text_to_image(self.queries, self.classes, emb[thumbs], self.labels[thumbs])["t2i_map"],
            "map_mixed": text_to_image(self.queries, self.classes, emb, self.labels)["t2i_map"],
            "own_thumbnail_cosine": float(sims[own & thumbs].mean()),
            "own_sharp_cosine": float(sims[own & self.is_sharp].mean()),
        }


def split_scorer(encoder, data_root: Path, split: str, sharp_dirs: list[Path], feature_cache: Path,
                 per_class: int | None) -> KindScorer:
    """A scorer over ``<data_root>/<split>`` thumbnails and the sharp photos of the same classes."""
    from middleware.datasets import limit_per_class, scan_image_folder
    from middleware.encoder.small_photos import photo_sizes

    items = limit_per_class(scan_image_folder(data_root / split), per_class)
    small = encoder.small_photos(photo_sizes(items))
    if small is None or not small.all():
        raise DatasetError(f"{data_root / split} must hold thumbnails only, under these heads' small-photo layer")
    classes = {i.label for i in items}
    sharp = sorted(p for d in sharp_dirs for p in d.glob("*.JPEG") if p.stem in classes)
    if not sharp:
        raise DatasetError(f"no sharp photo of a {split}/ class in {', '.join(str(d) for d in sharp_dirs)} "
                           "(<folder>/<label>.JPEG)")
    return KindScorer(encoder, items, encoder.cached_embeddings(items, feature_cache, desc=f"features {split}"), sharp)


def choose_offset(heldout: dict[str, dict[str, float]]) -> float:
    """The smallest offset whose held-out mixed-collection mAP is within ``TIE`` of the best."""
    best = max(r["map_mixed"] for r in heldout.values())
    return min(float(o) for o, r in heldout.items() if r["map_mixed"] >= best - TIE)


def run_mixed_kinds_benchmark(data_root: str | Path, heads: str | None = None, out: str | Path = "mixed.json",
                              feature_cache: str | Path = "cache/features") -> dict:
    """Sweep ``OFFSETS`` on held-out classes (and report ``val/``); write the JSON, table and plot."""
    from middleware.encoder.heads import load_heads
    from middleware.encoder.lite import LiteEncoder

    data_root, cache = Path(data_root), Path(feature_cache)
    checkpoint = load_heads(heads or None)
    encoder = LiteEncoder(checkpoint=checkpoint.reconfigured(tuned_offset=0.0))
    fullres = data_root / "fullres"
    sets = {"heldout": split_scorer(encoder, data_root, "pretrain", [fullres / "general"], cache, HELDOUT_PER_CLASS)}
    if not (data_root / "val").is_dir():
        raise DatasetError(f"no val/ split under {data_root}")
    domains = sorted(d.name for d in (data_root / "val").iterdir() if d.is_dir())
    sets["val"] = split_scorer(encoder, data_root, "val", [fullres / d for d in domains], cache, None)
    sweep = {name: {str(o): scorer.scores(o) for o in OFFSETS} for name, scorer in sets.items()}
    chosen = choose_offset(sweep["heldout"])
    results = {"heads": checkpoint.version, "tuned_photos": checkpoint.config.tuned_photos,
               "current_offset": checkpoint.config.tuned_offset, "chosen_offset": chosen,
               "chosen_on": f"pretrain/ ({HELDOUT_PER_CLASS} thumbnails per class) + fullres/general/",
               "sweep": sweep}
    write_report(out, results, mixed_kinds_markdown, _plot)
    return results


def mixed_kinds_markdown(results: dict) -> str:
    """One row per offset: mAP over thumbnails and over the mixed collection, held-out and val."""
    lines = [f"# Mixed collections: heads `{results['heads']}` (tuned on {results['tuned_photos']} photos)", "",
             f"Chosen offset {results['chosen_offset']} on {results['chosen_on']}.", "",
             "| offset | held-out mAP thumbnails | held-out mAP mixed | val mAP thumbnails | val mAP mixed "
             "| val cosine own thumbnails / own sharp |", "|---|---|---|---|---|---|"]
    for offset, held in results["sweep"]["heldout"].items():
        val = results["sweep"]["val"][offset]
        lines.append(f"| {offset} | {held['map_thumbnails']:.3f} | {held['map_mixed']:.3f} | "
                     f"{val['map_thumbnails']:.3f} | {val['map_mixed']:.3f} | "
                     f"{val['own_thumbnail_cosine']:.3f} / {val['own_sharp_cosine']:.3f} |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, path: Path) -> None:
    from benchmarks.reports import plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, style in (("heldout", "-"), ("val", "--")):
        sweep = results["sweep"][name]
        offsets = [float(o) for o in sweep]
        for metric in ("map_mixed", "map_thumbnails"):
            ax.plot(offsets, [r[metric] for r in sweep.values()], style, marker=".", label=f"{name}: {metric[4:]}")
    ax.axvline(results["chosen_offset"], color="grey", linewidth=0.8)
    ax.set_xlabel("tuned_offset")
    ax.set_ylabel("class-name query mAP")
    ax.set_title(f"Thumbnails + sharp photos in one collection ({results['heads']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench mixed-kinds``."""
    parser = sub.add_parser("mixed-kinds", help="thumbnails and sharp photos in one collection: the tuned offset")
    parser.add_argument("--data", required=True, help="phrase-imagenet root (pretrain/, val/, fullres/)")
    parser.add_argument("--heads", default="", help="heads checkpoint (default: the shipped default)")
    parser.add_argument("--out", default="mixed_kinds.json", help="results JSON (+ .md, .png)")
    parser.add_argument("--feature-cache", default="cache/features")
    parser.add_argument("--write-to", default="", help="also save the heads with the chosen offset to this path")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from middleware.encoder.heads import load_heads, save_reconfigured

    results = run_mixed_kinds_benchmark(args.data, args.heads, args.out, args.feature_cache)
    print(mixed_kinds_markdown(results))
    if args.write_to:
        checkpoint = load_heads(args.heads or None)
        version = save_reconfigured(checkpoint, args.write_to, tuned_offset=results["chosen_offset"])
        print(f"wrote {args.write_to} (version {version}) with tuned_offset {results['chosen_offset']}")
    return 0
