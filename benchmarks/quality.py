"""`pmirs bench quality`: the paper's protocol and standard retrieval metrics on any labelled split."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.output import write_json
from benchmarks.paper_protocol import draws_argument, run_paper_protocol
from benchmarks.reports import write_quality_report
from benchmarks.retrieval_metrics import image_to_image_precision, text_to_image, zero_shot_top1
from middleware.datasets import LabelledImage, load_split, open_image
from middleware.encoder import Encoder, create_encoder
from middleware.encoder.base import TextMemo

DEFAULT_N_VALUES: tuple[int | str, ...] = (5, 10, 15, "all")
CLASS_QUERY_TEMPLATE = "a photo of a {}"


def evaluate_domain(
    image_emb: np.ndarray,
    labels: Sequence[str],
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    n_values: Sequence[int | str] = DEFAULT_N_VALUES,
    draws: int = 6,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Paper-protocol scores per N and retrieval metrics for one domain's image embeddings."""
    label_array = np.asarray(labels)
    classes = list(dict.fromkeys(labels))
    by_label = {label: image_emb[label_array == label] for label in classes}
    paper = run_paper_protocol(by_label, encode_texts, n_values, draws=draws, seed=seed)
    class_emb = encode_texts([CLASS_QUERY_TEMPLATE.format(c) for c in classes])
    label_index = np.asarray([classes.index(label) for label in labels])
    retrieval = {"top1": zero_shot_top1(image_emb, label_index, class_emb)}
    retrieval.update(text_to_image(class_emb, np.arange(len(classes)), image_emb, label_index))
    retrieval["i2i_p@10"] = image_to_image_precision(image_emb, label_index)
    return paper, retrieval


def embed_items(
    encoder: Encoder, items: Sequence[LabelledImage], feature_cache: Path | None, data_root: Path, split: str
) -> np.ndarray:
    """Image embeddings for a split: from cached tower features when the encoder supports it."""
    from middleware.datasets import scan_image_folder
    from middleware.encoder.lite import LiteEncoder

    if isinstance(encoder, LiteEncoder) and feature_cache is not None:
        return encoder.cached_embeddings(scan_image_folder(Path(data_root) / split), feature_cache,
                                         desc=f"features {split}")
    return encoder.encode_images([open_image(item.path) for item in items])


def evaluate_embeddings(
    domains: Mapping[str, Sequence[LabelledImage]],
    all_emb: np.ndarray,
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    n_values: Sequence[int | str] = DEFAULT_N_VALUES,
    draws: int = 6,
    seed: int = 0,
    image_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    text_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Paper protocol and retrieval metrics of every domain, with embeddings mapped before scoring.

    ``all_emb`` holds the domains' image embeddings in order; ``encode_texts`` gives plain text
    embeddings. The transforms are separate because the private pipeline treats the two sides
    differently: stored image vectors get storage noise, query text vectors never do.
    """
    image_fn = image_transform or (lambda x: x)
    text_fn = text_transform or (lambda x: x)
    results: dict = {"paper_protocol": {}, "retrieval": {}}
    start = 0
    for domain, items in domains.items():
        emb = image_fn(all_emb[start : start + len(items)])
        start += len(items)
        paper, retrieval = evaluate_domain(emb, [i.label for i in items], lambda t: text_fn(encode_texts(t)),
                                           n_values, draws, seed)
        results["paper_protocol"][domain] = paper
        results["retrieval"][domain] = retrieval
    results["mean_f1"] = {
        str(n): float(np.mean([results["paper_protocol"][d][str(n)]["f1"] for d in domains])) for n in n_values
    }
    return results


def private_transforms(key: bytes, dim: int, noise: float, n_blocks: int = 4) -> tuple[Callable, Callable]:
    """What the server scores on: the keyed projection of stored vectors (with storage noise) and of
    query vectors (without noise), exactly as :class:`middleware.codecs.PrivateCodec` applies it."""
    from middleware.obfuscation import BlockProjection

    projection = BlockProjection(key, dim, n_blocks=n_blocks, noise=noise)
    return (lambda x: projection.project(x, for_storage=True)), (lambda x: projection.project(x, for_storage=False))


def bench_projection_key(seed: int) -> bytes:
    """A fixed projection key per seed, so private runs are reproducible (storage noise is not)."""
    return hashlib.sha256(f"pmirs/bench/projection/{seed}".encode()).digest()


def _mean_retrieval(per_domain: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    metrics = next(iter(per_domain.values()))
    return {m: float(np.mean([per_domain[d][m] for d in per_domain])) for m in metrics}


def _max_difference(a: object, b: object) -> float:
    """Largest absolute difference between two nested dicts of numbers with the same keys."""
    if isinstance(a, Mapping):
        return max((_max_difference(a[k], b[k]) for k in a), default=0.0)
    return abs(float(a) - float(b))


def run_quality_benchmark(
    data_root: str | Path,
    split: str = "val",
    encoder: Encoder | None = None,
    encoder_spec: str = "lite",
    heads: str | Path | None = None,
    out: str | Path | None = None,
    feature_cache: str | Path | None = None,
    n_values: Sequence[int | str] = DEFAULT_N_VALUES,
    draws: int = 6,
    seed: int = 0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    private_noise: Sequence[float] | None = None,
    n_blocks: int = 4,
) -> dict:
    """Evaluate an encoder on every domain of ``<data_root>/<split>``; optionally write a report.

    ``transform`` maps every embedding (image and text) before scoring. ``private_noise`` adds a
    ``"private"`` section: for each noise level, the same evaluation on what the server scores
    (keyed projection of stored image vectors with that storage noise, of query texts without),
    with its loss against the plain numbers (0 up to float rounding when the noise is 0).
    """
    data_root = Path(data_root)
    encoder = encoder or create_encoder(encoder_spec, heads)
    domains = load_split(data_root, split)
    all_items = [item for items in domains.values() for item in items]
    cache = Path(feature_cache) if feature_cache else None
    all_emb = embed_items(encoder, all_items, cache, data_root, split)
    raw_texts = TextMemo(lambda texts: encoder.encode_texts(list(texts)))
    results: dict = {"encoder": encoder.version, "split": split}
    results.update(evaluate_embeddings(domains, all_emb, raw_texts, n_values, draws, seed, transform, transform))
    if private_noise is not None:
        key = bench_projection_key(seed)
        results["private"] = {}
        for noise in private_noise:
            image_fn, text_fn = private_transforms(key, all_emb.shape[1], float(noise), n_blocks)
            if transform is not None:
                image_fn, text_fn = _then(transform, image_fn), _then(transform, text_fn)
            private = evaluate_embeddings(domains, all_emb, raw_texts, n_values, draws, seed, image_fn, text_fn)
            private["mean_retrieval"] = _mean_retrieval(private["retrieval"])
            private["max_abs_difference_vs_plain"] = max(
                _max_difference(private["paper_protocol"], results["paper_protocol"]),
                _max_difference(private["retrieval"], results["retrieval"]))
            results["private"][str(noise)] = private
        results["private_setup"] = {"n_blocks": n_blocks, "key": "sha256('pmirs/bench/projection/<seed>')",
                                    "storage_noise": "fresh per stored vector, unseeded (as in the client)"}
    results["mean_retrieval"] = _mean_retrieval(results["retrieval"])
    if out is not None:
        out = write_json(out, results)
        write_quality_report(results, out)
        if "private" in results:
            with out.with_suffix(".md").open("a") as md:
                md.write("\n" + private_markdown(results))
    return results


def _then(first: Callable[[np.ndarray], np.ndarray], second: Callable[[np.ndarray], np.ndarray]) -> Callable:
    return lambda x: second(first(x))


def private_markdown(results: dict) -> str:
    """Plain vs private (per storage-noise level): mean F1 per N and mean retrieval metrics."""
    n_keys = list(results["mean_f1"])
    metrics = list(results["mean_retrieval"])
    lines = ["## Private pipeline (scores computed on the obfuscated vectors)", "",
             "| pipeline | " + " | ".join(f"F1 N={n}" for n in n_keys) + " | " + " | ".join(metrics)
             + " | max abs diff vs plain |", "|---" * (len(n_keys) + len(metrics) + 2) + "|"]

    def row(name: str, entry: dict, diff: str) -> str:
        return (f"| {name} | " + " | ".join(f"{entry['mean_f1'][n]:.3f}" for n in n_keys) + " | "
                + " | ".join(f"{entry['mean_retrieval'][m]:.3f}" for m in metrics) + f" | {diff} |")

    lines.append(row("plain", results, "-"))
    for noise, entry in results.get("private", {}).items():
        lines.append(row(f"private, noise {noise}", entry, f"{entry['max_abs_difference_vs_plain']:.2e}"))
    return "\n".join(lines) + "\n"


def register_bench(sub) -> None:
    """``pmirs bench quality``."""
    parser = sub.add_parser("quality", help="paper protocol + retrieval metrics on a labelled split")
    parser.add_argument("--data", required=True, help="dataset root holding <split>/<domain>/<label>/*")
    parser.add_argument("--split", default="val")
    parser.add_argument("--encoder", default="lite", help="lite | hf-clip:PATH")
    parser.add_argument("--heads", default=None, help="heads checkpoint for the lite encoder")
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--feature-cache", default="cache/features", help="'' disables the cache")
    parser.add_argument("--draws", type=draws_argument, default=6, help="label draws per N (at least 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--private", action="store_true",
                        help="also score through the keyed projection the server sees, per storage-noise level")
    parser.add_argument("--noise", default="0,0.05,0.1,0.2", help="storage-noise levels for --private")
    parser.set_defaults(func=_run_from_args)


def _run_from_args(args) -> int:
    from benchmarks.reports import quality_markdown
    from pmirs.commands.keys import UsageError

    noise = None
    if args.private:
        try:
            noise = [float(x) for x in args.noise.split(",") if x.strip()]
        except ValueError as e:
            raise UsageError(f"--noise must be comma-separated numbers: {e}") from e
    results = run_quality_benchmark(
        args.data, args.split, encoder_spec=args.encoder, heads=args.heads, out=args.out,
        feature_cache=args.feature_cache or None, draws=args.draws, seed=args.seed, private_noise=noise,
    )
    print(quality_markdown(results))
    if "private" in results:
        print(private_markdown(results))
    print(f"wrote {args.out} (+ .md, .png)")
    return 0
