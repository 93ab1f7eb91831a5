"""`pmirs bench latency`: per-stage latency of a text query, private vs plain, at growing collection sizes.

One run starts one retriever (a subprocess on 127.0.0.1, plain routes enabled), fills a private
and a plain collection side by side with the same vectors, and at each size measures the same
text queries through both pipelines, interleaved, so the overhead ratio is taken under the same
machine load. Large collections are synthetic (see :func:`synthetic_vectors`); the queries are
real: encoded by the real encoder, obfuscated, sealed, searched, opened and decrypted.

Stages (ms, as in :class:`middleware.flows.QueryResult`): ``encode`` (text -> vector),
``obfuscate`` (keyed projection), ``encrypt`` (sealing the request), ``http`` (round trip,
server time included), ``server_search`` (Chroma top-k, measured by the server), ``decrypt``
(opening the answer and the k payloads); ``total`` is end to end.
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.output import write_report
from middleware.client import PrivacyMiddleware
from middleware.codecs import PlainCodec, PrivateCodec
from middleware.encoder import Encoder
from middleware.keystore import Keystore
from middleware.payloads import text_payload
from middleware.transport import ClientIdentity, PlainChannel, SealedChannel
from pmirs.protocol.vectors import encode_vector
from retriever.testing import ServiceProcess, register_user

DEFAULT_ITEMS = (1_000, 10_000, 100_000)
STAGES = ("encode", "obfuscate", "encrypt", "http", "server_search", "decrypt")
COLLECTION = "latency"
UPLOAD_BATCH = 1_000  # items per /items/add call (the benchmark server allows this many)
SYNTHETIC_SPREAD = 1.0  # noise norm relative to the unit centre: cos(item, centre) ~ 1/sqrt(2)
QUERY_TEMPLATES = ("a photo of a {}", "a close-up of a {}", "a {} in the wild", "a picture showing a {}")
PASSPHRASE = "latency-benchmark-only"  # a throwaway keystore in a temporary directory


def synthetic_vectors(centres: np.ndarray, start: int, stop: int, seed: int = 0,
                      spread: float = SYNTHETIC_SPREAD) -> np.ndarray:
    """Rows ``start..stop`` of an endless, reproducible stream of unit vectors around real embeddings.

    Row ``i`` is ``normalise(centres[i % len(centres)] + spread * g)`` with ``g ~ N(0, I / dim)``
    seeded by ``(seed, i)``, so the collection is clustered like real photos (not uniform noise,
    which is the worst case for HNSW) and the same rows come out whatever the chunking.
    """
    centres = np.asarray(centres, dtype=np.float32)
    dim = centres.shape[1]
    rows = np.empty((stop - start, dim), dtype=np.float32)
    for offset, i in enumerate(range(start, stop)):
        noise = np.random.default_rng((seed, i)).standard_normal(dim, dtype=np.float32)
        rows[offset] = centres[i % len(centres)] + spread * noise / np.sqrt(dim)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _upload(call: Callable[[str, dict[str, Any]], dict[str, Any]], codec: PrivateCodec | PlainCodec,
            vectors: np.ndarray, first_index: int) -> None:
    """Send pre-made vectors as items whose payload is a short sealed caption (as a real client would)."""
    wire = codec.wire_name(COLLECTION)
    key_version = codec.key_version(COLLECTION)
    projected = codec.project(COLLECTION, vectors, for_storage=True)
    items = []
    for offset, vec in enumerate(projected):
        caption = f"synthetic item {first_index + offset}"
        item_id = codec.item_id(COLLECTION, caption.encode())
        items.append({"id": item_id, "vector": encode_vector(vec),
                      "ciphertext": codec.seal(COLLECTION, item_id, text_payload(caption, None))})
    call("/items/add", {"collection": wire, "items": items, "key_version": key_version})


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p95_ms": round(float(np.percentile(values, 95)), 3)}


def _summarise(timings: list[dict[str, float]]) -> dict[str, Any]:
    out = _quantiles([t["total"] for t in timings])
    out["stages"] = {stage: _quantiles([t[stage] for t in timings]) for stage in STAGES}
    out["n"] = len(timings)
    return out


def _query_texts(labels: Sequence[str], n: int) -> list[str]:
    """``n`` distinct, realistic query texts (labels x templates, then numbered)."""
    base = [t.format(label) for t in QUERY_TEMPLATES for label in labels]
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(n)]


def _measure(private: PrivacyMiddleware, plain: PrivacyMiddleware, texts: Sequence[str],
             k: int) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Interleave the two pipelines query by query (alternating which goes first); drop warm-ups."""
    private.query_text(COLLECTION, "warm-up query", k=k)
    plain.query_text(COLLECTION, "warm-up query", k=k)
    priv, pl = [], []
    for i, text in enumerate(texts):
        order = ((private, priv), (plain, pl)) if i % 2 == 0 else ((plain, pl), (private, priv))
        for client, sink in order:
            result = client.query_text(COLLECTION, text, k=k)
            if not result.items:
                raise RuntimeError("a benchmark query returned nothing: the collection is empty?")
            sink.append(result.timings_ms)
    return priv, pl


def _qps(clients: Sequence[PrivacyMiddleware], texts: Sequence[str], k: int) -> float:
    """Queries per second with one thread per client, each running all ``texts`` after one warm-up."""
    for client in clients:
        client.query_text(COLLECTION, "warm-up query", k=k)
    errors: list[BaseException] = []

    def worker(client: PrivacyMiddleware) -> None:
        try:
            for text in texts:
                client.query_text(COLLECTION, text, k=k)
        except BaseException as e:  # surfaced below: a silent thread failure would inflate qps
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return round(len(clients) * len(texts) / elapsed, 2)


def _machine() -> dict[str, Any]:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def run_latency_benchmark(encoder: Encoder, centres: np.ndarray, labels: Sequence[str],
                          items: Sequence[int] = DEFAULT_ITEMS, queries: int = 100, k: int = 5,
                          concurrency: int = 8, concurrent_queries: int = 20, work_dir: Path | None = None,
                          seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Measure both pipelines at every size in ``items`` (ascending; the collections grow in place).

    Args:
        encoder: the real encoder (its text path is part of what is measured).
        centres: real image embeddings the synthetic items cluster around.
        labels: class names the query texts are made from.
        queries: measured queries per size and pipeline (after one warm-up query each).
        concurrency, concurrent_queries: threads (one client each) and queries per thread for the
            queries/s measurement at the largest size.
        work_dir: where the server keeps its data (a temporary directory, deleted after, if None).
    """
    sizes = sorted({int(n) for n in items})
    if not sizes or sizes[0] < 1:
        raise ValueError("items must be positive sizes")
    with tempfile.TemporaryDirectory(prefix="pmirs-latency-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        return _run(encoder, centres, labels, sizes, queries, k, concurrency, concurrent_queries, root, seed,
                    progress)


def _run(encoder: Encoder, centres: np.ndarray, labels: Sequence[str], sizes: list[int], queries: int, k: int,
         concurrency: int, concurrent_queries: int, root: Path, seed: int, progress: bool) -> dict[str, Any]:
    settings = {"PMIRS_RETRIEVER_MAX_ITEMS_PER_BATCH": str(UPLOAD_BATCH),
                "PMIRS_RETRIEVER_MAX_BODY_BYTES": str(16 * 1024 * 1024)}
    service = ServiceProcess(root / "server", allow_plain=True, env=settings,
                             extra_args=["--log-level", "WARNING"])
    results: dict[str, Any] = {"items": {}, "machine": _machine(), "k": k, "queries_per_size": queries,
                               "encoder": encoder.version, "synthetic_items": True,
                               "synthetic_method": (
                                   f"normalise(centre + {SYNTHETIC_SPREAD} * N(0, I/dim)), centres = "
                                   f"{len(centres)} real image embeddings of data/demo photos; payload = a "
                                   "short caption sealed with the collection key (~100 B)"),
                               "stage_names": list(STAGES), "server_url": service.url}
    with service:
        keystore = Keystore.create(root / "bench.keys", PASSPHRASE, "bench", scrypt_n=2**10)
        register_user(service.data_dir, "bench", keystore.identity_public_key.hex(), tenant="bench")
        keystore.pin_server(service.url, service.fingerprint)
        identity = ClientIdentity(keystore.user_id, keystore.identity_private_key, service.fingerprint)
        private = PrivacyMiddleware(service.url, keystore, encoder)
        plain = PrivacyMiddleware(service.url, None, encoder, private=False)
        upload_private = SealedChannel(service.url, identity)
        upload_plain = PlainChannel(service.url)
        extra: list[PrivacyMiddleware] = []
        try:
            private.create_collection(COLLECTION)
            plain.create_collection(COLLECTION)
            codecs = ((upload_private.call, PrivateCodec(keystore)), (upload_plain.call, PlainCodec()))
            texts = _query_texts(labels, queries)
            stored, index_s = 0, 0.0
            for size in sizes:
                start = time.perf_counter()
                with tqdm(total=2 * (size - stored), desc=f"indexing to {size:,} items (private + plain)",
                          unit="item", disable=not progress) as bar:
                    for lo in range(stored, size, UPLOAD_BATCH):
                        hi = min(lo + UPLOAD_BATCH, size)
                        vectors = synthetic_vectors(centres, lo, hi, seed)
                        for call, codec in codecs:
                            _upload(call, codec, vectors, lo)
                            bar.update(hi - lo)
                index_s += time.perf_counter() - start
                stored = size
                priv, pl = _measure(private, plain, texts, k)
                entry = {"private": _summarise(priv), "plain": _summarise(pl), "index_s_cumulative": round(index_s, 1)}
                entry["overhead_p95"] = round(entry["private"]["p95_ms"] / entry["plain"]["p95_ms"], 3)
                entry["overhead_p50"] = round(entry["private"]["p50_ms"] / entry["plain"]["p50_ms"], 3)
                results["items"][str(size)] = entry
                if progress:
                    tqdm.write(f"{size:>7,} items: private p95 {entry['private']['p95_ms']:.1f} ms, plain p95 "
                               f"{entry['plain']['p95_ms']:.1f} ms, overhead {entry['overhead_p95']:.3f}x")
            per_thread = texts[:concurrent_queries]
            extra = [PrivacyMiddleware(service.url, keystore, encoder) for _ in range(concurrency)]
            results["concurrent_qps"] = _qps(extra, per_thread, k)
            plain_clients = [PrivacyMiddleware(service.url, None, encoder, private=False) for _ in range(concurrency)]
            extra += plain_clients
            results["concurrent_qps_plain"] = _qps(plain_clients, per_thread, k)
            results["concurrency"] = {"clients": concurrency, "queries_per_client": len(per_thread),
                                      "items": sizes[-1], "mode": "threads, one client (and session) each"}
        finally:
            for client in (private, plain, upload_private, upload_plain, *extra):
                client.close()
    results["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return results


def demo_centres(encoder: Encoder, photos_dir: Path, limit: int = 64) -> tuple[np.ndarray, list[str]]:
    """Real image embeddings (spread over the classes) of demo photos, and every class name there."""
    from middleware.datasets import open_image, scan_image_folder

    found = scan_image_folder(photos_dir)
    step = max(1, len(found) // limit)
    chosen = found[::step][:limit]
    return encoder.encode_images([open_image(it.path) for it in chosen]), sorted({it.label for it in found})


def write_latency_plot(results: dict[str, Any], png: Path) -> None:
    """p95 (solid) and p50 (dashed) end-to-end latency against collection size, both pipelines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in results["items"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for pipeline, colour in (("private", "tab:red"), ("plain", "tab:blue")):
        for q, style in (("p95_ms", "-o"), ("p50_ms", "--")):
            ax.plot(sizes, [results["items"][str(n)][pipeline][q] for n in sizes], style, color=colour,
                    label=f"{pipeline} {q[:3]}")
    ax.axhline(30, color="grey", linestyle=":", label="target p95 30 ms")
    ax.set_xscale("log")
    ax.set_xlabel("items in the collection (log)")
    ax.set_ylabel("text query, end to end (ms)")
    ratios = ", ".join(f"{int(n):,}: {results['items'][str(n)]['overhead_p95']:.2f}x" for n in sizes)
    ax.set_title(f"PMIRS query latency (private/plain p95: {ratios})", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def latency_markdown(results: dict[str, Any]) -> str:
    """One table per pipeline: stage p50/p95 per size; then overhead and queries/s."""
    sizes = list(results["items"])
    lines = [f"# Latency: encoder `{results['encoder']}`, k={results['k']}, "
             f"{results['queries_per_size']} queries per size and pipeline", ""]
    header = "| stage | " + " | ".join(f"{int(n):,} p50 / p95" for n in sizes) + " |"
    for pipeline in ("private", "plain"):
        lines += [f"## {pipeline}", "", header, "|---" * (len(sizes) + 1) + "|"]
        for stage in (*STAGES, "total"):
            cells = []
            for n in sizes:
                entry = results["items"][n][pipeline]
                q = entry if stage == "total" else entry["stages"][stage]
                cells.append(f"{q['p50_ms']:.2f} / {q['p95_ms']:.2f}")
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Overhead private/plain (p95): " + ", ".join(
        f"{int(n):,}: {results['items'][n]['overhead_p95']:.3f}x" for n in sizes))
    if "concurrent_qps" in results:
        c = results["concurrency"]
        lines.append(f"Queries/s with {c['clients']} concurrent clients at {c['items']:,} items: private "
                     f"{results['concurrent_qps']}, plain {results['concurrent_qps_plain']}")
    return "\n".join(lines) + "\n"


def register_bench(sub) -> None:
    """``pmirs bench latency``."""
    parser = sub.add_parser("latency", help="per-stage query latency, private vs plain, at several sizes")
    parser.add_argument("--items", default=",".join(str(n) for n in DEFAULT_ITEMS),
                        help="comma-separated collection sizes (default 1000,10000,100000)")
    parser.add_argument("--queries", type=int, default=100, help="measured queries per size and pipeline")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients for queries/s")
    parser.add_argument("--concurrent-queries", type=int, default=20, help="queries per concurrent client")
    parser.add_argument("--encoder", default="lite")
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[1] / "data" / "demo"),
                        help="photos whose embeddings the synthetic items cluster around")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="latency.json", help="JSON results (+ .png plot and .md tables)")
    parser.set_defaults(func=_run_from_args)


def _run_from_args(args) -> int:

    from middleware.encoder import create_encoder
    from pmirs.commands.keys import UsageError

    try:
        items = [int(x) for x in str(args.items).split(",") if x.strip()]
    except ValueError as e:
        raise UsageError(f"--items must be comma-separated integers: {e}") from e
    encoder = create_encoder(args.encoder)
    centres, labels = demo_centres(encoder, Path(args.photos))
    results = run_latency_benchmark(encoder, centres, labels, items, args.queries, args.k, args.concurrency,
                                    args.concurrent_queries, seed=args.seed)
    out = write_report(args.out, results, latency_markdown, write_latency_plot)
    print(latency_markdown(results))
    print(f"wrote {out} (+ .png, .md)")
    return 0
