"""`pmirs bench relevance`: where the chat's relevance thresholds sit for one encoder.

The assistant answers only from items that score at or above a threshold. Each heads version has
its own cosine scale (centring lifts every cosine, fine-tuning spreads them), so every version
needs its own values. This benchmark embeds the demo photos and the shop's policy passages, scores
related and unrelated probe questions against them (the best item per question: the same cosine
the private pipeline returns, since private scores equal plain ones), and proposes each threshold
as the midpoint of the gap between the highest unrelated and the lowest related score.

The probes are generic questions a user of the demo would ask, written without looking at any
benchmark class list; unrelated ones are questions no photo or policy can answer.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.output import write_json

# Questions a photo in data/demo answers (the demo holds ~170 everyday subjects).
RELATED_PHOTO_QUESTIONS: tuple[str, ...] = (
    "Do I have a photo of a sports car?",
    "show me the picture of a lion",
    "a photo of pizza",
    "Is there a school bus in my photos?",
    "find the picture with a teapot",
    "photos of a golden retriever",
    "do I have an image of a gorilla?",
    "show me a bridge",
    "a tractor on a farm",
    "is there a cup of espresso?",
    "pictures of a penguin",
    "show me the elephant",
)
# Questions the shop's policy passages answer.
RELATED_POLICY_QUESTIONS: tuple[str, ...] = (
    "Can I return an item I bought?",
    "how long does shipping take?",
    "how much does delivery cost?",
    "what does the warranty cover?",
    "which payment methods do you accept?",
    "how can I contact customer service?",
    "can I get a refund for opened food?",
    "do you ship to Germany?",
)
# The longer side of the demo photos' thumbnail copies: the size of the benchmark's photos. Thresholds
# are calibrated on the sharp photos; the copies show how they gate a collection of thumbnails.
THUMBNAIL_SIDE = 64
# Questions nothing in the demo collection or the policies answers.
UNRELATED_QUESTIONS: tuple[str, ...] = (
    "what is the capital of Peru?",
    "explain recursion in python",
    "who won the 1998 world cup?",
    "how do I compute a matrix inverse?",
    "what is the meaning of life?",
    "translate good morning into Japanese",
    "write a haiku about autumn",
    "what is the boiling point of nitrogen?",
    "summarise the French revolution",
    "how many megabytes are in a gigabyte?",
)


def best_scores(questions: Sequence[str], item_emb: np.ndarray, encode_texts) -> list[float]:
    """For each question, the cosine of its best-matching item."""
    query = encode_texts(list(questions))
    return [round(float(s), 4) for s in (query @ item_emb.T).max(axis=1)]


def propose_threshold(related: Sequence[float], unrelated: Sequence[float]) -> dict:
    """The midpoint of the gap between unrelated and related best scores, and how wide that gap is.

    A negative margin means no threshold separates the probes; the midpoint is still the value
    that misclassifies the fewest of them on both sides.
    """
    low, high = min(related), max(unrelated)
    return {"threshold": round((low + high) / 2, 2), "margin": round(low - high, 4),
            "related_min": low, "related_median": float(np.median(related)), "unrelated_max": high}


def thumbnail_copies(photos: Sequence, side: int = THUMBNAIL_SIDE) -> list:
    """Copies of PIL photos shrunk to ``side`` px on the longer side (aspect kept), like the benchmark's."""
    copies = []
    for photo in photos:
        copy = photo.copy()
        copy.thumbnail((side, side))
        copies.append(copy)
    return copies


def gating_on(related: Sequence[float], unrelated: Sequence[float], threshold: float) -> dict:
    """How a threshold calibrated elsewhere gates these best scores: related answered, unrelated let through."""
    return {**propose_threshold(related, unrelated), "scores": {"related": list(related), "unrelated": list(unrelated)},
            "at_threshold": threshold, "related_answered": sum(s >= threshold for s in related),
            "unrelated_let_through": sum(s >= threshold for s in unrelated)}


def write_calibrated_heads(heads: str | Path | None, results: dict, out: str | Path) -> str:
    """Save a copy of ``heads`` that carries the proposed thresholds (``config.extra["relevance"]``),
    so every surface using it picks them up; returns the new version (the file's hash changes)."""
    from middleware.encoder.heads import load_heads, save_reconfigured

    checkpoint = load_heads(heads or None)
    relevance = {kind: results[kind]["threshold"] for kind in ("image", "text")}
    return save_reconfigured(checkpoint, out, extra={**checkpoint.config.extra, "relevance": relevance})


def run_relevance_benchmark(heads: str | None = None, out: str | Path = "relevance.json") -> dict:
    """Score the probes with the lite encoder (``heads`` or the default) and write the JSON."""
    from chatbot.customer_service import DEMO_PHOTOS, load_catalogue
    from middleware.datasets import open_image, scan_image_folder
    from middleware.encoder.base import TextMemo
    from middleware.encoder.lite import LiteEncoder

    encoder = LiteEncoder(heads or None)
    questions = TextMemo(encoder.encode_texts)  # the unrelated questions are scored against three item sets
    photos = [open_image(p.path) for p in scan_image_folder(DEMO_PHOTOS)]
    photo_emb = encoder.encode_images(photos)
    thumbnail_emb = encoder.encode_images(thumbnail_copies(photos))
    policy_emb = encoder.encode_texts([p.text for p in load_catalogue().policies])
    image = {"related": best_scores(RELATED_PHOTO_QUESTIONS, photo_emb, questions),
             "unrelated": best_scores(UNRELATED_QUESTIONS, photo_emb, questions)}
    text = {"related": best_scores(RELATED_POLICY_QUESTIONS, policy_emb, questions),
            "unrelated": best_scores(UNRELATED_QUESTIONS, policy_emb, questions)}
    results = {
        "encoder": encoder.version,
        "image": {**propose_threshold(image["related"], image["unrelated"]), "scores": image},
        "text": {**propose_threshold(text["related"], text["unrelated"]), "scores": text},
    }
    results["image_thumbnails"] = gating_on(best_scores(RELATED_PHOTO_QUESTIONS, thumbnail_emb, questions),
                                            best_scores(UNRELATED_QUESTIONS, thumbnail_emb, questions),
                                            results["image"]["threshold"])
    write_json(out, results)
    return results


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench relevance``."""
    parser = sub.add_parser("relevance", help="related vs unrelated probe scores: where the chat thresholds go")
    parser.add_argument("--heads", default="", help="heads checkpoint (default: the shipped default)")
    parser.add_argument("--out", default="relevance.json", help="results JSON")
    parser.add_argument("--write-to", default="", help="also save the heads with these thresholds to this path")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    results = run_relevance_benchmark(args.heads, args.out)
    for kind in ("image", "text"):
        r = results[kind]
        print(f"{kind} items: related >= {r['related_min']:.3f} (median {r['related_median']:.3f}), "
              f"unrelated <= {r['unrelated_max']:.3f}; threshold {r['threshold']:.2f} (margin {r['margin']:+.3f})")
    thumbs = results["image_thumbnails"]
    print(f"{THUMBNAIL_SIDE}-px copies of the photos at the image threshold: {thumbs['related_answered']}/"
          f"{len(RELATED_PHOTO_QUESTIONS)} related questions answered, {thumbs['unrelated_let_through']}/"
          f"{len(UNRELATED_QUESTIONS)} unrelated let through (margin {thumbs['margin']:+.3f})")
    if args.write_to:
        version = write_calibrated_heads(args.heads, results, args.write_to)
        print(f"wrote {args.write_to} (version {version}) carrying these thresholds")
    return 0
