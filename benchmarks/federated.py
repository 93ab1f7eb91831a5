"""`pmirs bench federated`: what federated fine-tuning buys over the zero-shot base, per round.

Runs, all scored on cached val/ features after every round: the zero-shot base, centralized
fine-tuning on the union of the clients' photos (upper bound), FedAvg IID, FedAvg and FedProx
non-IID (clients split by domain), FedAvg with central DP, and FedAvg with SecAgg+. Every
federated run is a real Flower simulation (Ray). Forgetting is measured as the paper-protocol
F1@10 on the held-out pretrain/ classes, which no client holds, of the raw heads; `bench
forgetting` checks a shipped encoder the way the product embeds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.forgetting import FORGETTING_TOLERANCE, HELDOUT_PER_CLASS
from benchmarks.output import write_json
from benchmarks.paper_protocol import draws_argument
from benchmarks.quality import evaluate_domain
from middleware.datasets import PHRASE_IMAGENET, read_synonyms
from middleware.encoder.base import TextMemo
from middleware.encoder.conse import conse_embed
from middleware.encoder.features import TowerOutputs
from middleware.encoder.heads import DualHeads
from middleware.encoder.training import ImageExamples, PhraseBank, TrainingExamples
from pmirs.commands.federated import add_tower_args, add_training_args, training_settings
from pmirs.errors import FederatedError

N_VALUES: tuple[int | str, ...] = (5, 10, 15, "all")
# Label draws per N when scoring a round. A domain's F1 then has a standard error of 0.01-0.02 (the
# default's val, measured): differences of a point or two between runs or rounds are noise; --draws
# 100 brings it to ~0.004 for a few seconds more per round.
DEFAULT_DRAWS = 6
DEFAULT_RUNS = ("centralized", "fedavg-iid", "fedavg-noniid", "fedprox-noniid", "fedavgm-noniid", "dp-iid",
                "secagg-iid")


def run_plans(dp_noise: float, dp_clip: float) -> dict[str, tuple[str, dict]]:
    """Each run's partition scheme and the settings it adds to the shared ones."""
    return {
        "centralized": ("iid", {}),  # trains on the union of the IID stores
        "fedavg-iid": ("iid", {}),
        "fedavg-noniid": ("domain", {}),
        "fedprox-noniid": ("domain", {"strategy": "fedprox", "proximal-mu": 0.1}),
        "fedavgm-noniid": ("domain", {"strategy": "fedavgm", "server-momentum": 0.9}),
        "dp-iid": ("iid", {"dp-noise-multiplier": dp_noise, "dp-clipping-norm": dp_clip,
                           "client-weighting": "uniform"}),
        "secagg-iid": ("iid", {"secagg": True}),
    }


class Scorer:
    """Scores heads on cached features: paper protocol + t2i mAP per val domain, held-out F1@10."""

    def __init__(self, base, raw_texts: TextMemo, val: tuple[list, TowerOutputs], heldout: tuple[list, TowerOutputs],
                 draws: int = DEFAULT_DRAWS) -> None:
        cfg = base.config
        self.raw_texts, self.draws = raw_texts, draws

        def inputs(rows: np.ndarray, out: TowerOutputs) -> ImageExamples:
            conse = conse_embed(out.logits[rows], base.class_bank, cfg.conse_top_k, cfg.conse_temperature)
            maps = None if out.maps is None else out.maps[rows]
            return ImageExamples(conse.astype(np.float32), out.pooled[rows], maps, class_bank=base.class_bank)

        items, out = val
        self.val = {}
        for domain in dict.fromkeys(i.domain for i in items):
            rows = np.flatnonzero([i.domain == domain for i in items])
            self.val[domain] = ([items[r].label for r in rows], inputs(rows, out))
        self.heldout = ([i.label for i in heldout[0]], inputs(np.arange(len(heldout[0])), heldout[1]))

    @torch.inference_mode()
    def __call__(self, heads: DualHeads) -> dict:
        """Metrics of ``heads``: {"f1": {domain: {N: f1}}, "f1_se" (its standard error over the draws),
        "map": {...}, "mean_f1": {N: f}, "heldout_f1@10"}."""
        heads.eval()

        def encode_texts(texts: Sequence[str]) -> np.ndarray:
            return heads.encode_text(torch.from_numpy(self.raw_texts(list(texts)))).numpy()

        out: dict = {"f1": {}, "f1_se": {}, "map": {}}
        for domain, (labels, images) in self.val.items():
            embeddings = images.embed_all(heads).numpy()
            paper, retrieval = evaluate_domain(embeddings, labels, encode_texts, N_VALUES, self.draws)
            out["f1"][domain] = {n: round(s["f1"], 4) for n, s in paper.items()}
            out["f1_se"][domain] = {n: round(s["f1_se"], 4) for n, s in paper.items()}
            out["map"][domain] = round(retrieval["t2i_map"], 4)
        out["mean_f1"] = {str(n): round(float(np.mean([f[str(n)] for f in out["f1"].values()])), 4) for n in N_VALUES}
        labels, images = self.heldout
        paper, _ = evaluate_domain(images.embed_all(heads).numpy(), labels, encode_texts, (10,), self.draws)
        out["heldout_f1@10"] = round(paper["10"]["f1"], 4)
        return out


def _centralized(base, parts_root: Path, settings: dict, rounds: int, scorer: Scorer) -> dict:
    """Upper bound: the same training loop on the union of every client's store, no Flower (local-epochs
    passes over the union per round; local-steps only paces federated clients)."""
    from federated.partition import load_partition
    from federated.task import FederatedSettings, build_heads, make_examples, train_config, training_view
    from middleware.encoder.training import train_epochs

    stores = [load_partition(d) for d in sorted(parts_root.iterdir())]
    classes = sorted({c for s in stores for c in s.classes})
    conse, pooled, maps, mirrored, logits, labels, phrase_emb = [], [], [], [], [], [], {}
    for store in stores:
        data = make_examples(store, base)
        conse.append(data.conse)
        pooled.append(data.pooled)
        maps.append(data.maps)
        mirrored.append(data.mirrored_maps)
        logits.append(data.logits)
        labels.append(np.asarray([classes.index(store.classes[k]) for k in store.labels]))
        for k, name in enumerate(store.classes):
            phrase_emb[name] = store.phrase_emb[store.phrase_owner == k]
    emb = np.concatenate([phrase_emb[c] for c in classes])
    own = np.concatenate([np.full(len(phrase_emb[c]), i) for i, c in enumerate(classes)])

    def joined(arrays: list) -> np.ndarray | None:
        return None if arrays[0] is None else np.concatenate(arrays)

    s = FederatedSettings.from_config(settings)
    union = training_view(TrainingExamples(np.concatenate(conse), np.concatenate(pooled), np.concatenate(labels),
                                           PhraseBank(emb, own), joined(maps), mirrored_maps=joined(mirrored),
                                           logits=joined(logits), class_bank=base.class_bank), s)
    heads = build_heads(base, s)
    history, seconds = [scorer(heads)], []
    for r in range(rounds):
        started = time.perf_counter()
        train_epochs(heads, union, replace(train_config(s, seed=r, server_round=r + 1), steps=0))
        seconds.append(time.perf_counter() - started)
        history.append(scorer(heads))
        print(f"  centralized round {r + 1}/{rounds}: mean F1@5 {history[-1]['mean_f1']['5']:.3f}", flush=True)
    return {"history": history, "round_seconds": seconds, "examples": len(union)}


def _federated(name: str, base, parts_root: Path, num_clients: int, settings: dict, scorer: Scorer,
               work_dir: Path) -> dict:
    """One Flower simulation, scored after every round through the ServerApp's round callback."""
    from federated.simulation import simulate
    from federated.task import FederatedSettings, build_heads, load_exchange_state

    states: list[dict[str, np.ndarray]] = []

    def on_round(server_round: int, state: dict[str, np.ndarray]) -> None:
        # Only keep a copy here: heavy numpy/torch work in the ServerApp thread while Ray starts
        # up in the main thread can deadlock the BLAS thread pools (seen on this 2-core host).
        states.append({k: np.array(v, copy=True) for k, v in state.items()})
        print(f"  {name} round {server_round} done", flush=True)

    started = time.perf_counter()
    manifest = simulate({**settings, "partitions-root": str(parts_root), "out-dir": str(work_dir / name)},
                        num_clients, on_round=on_round)
    history = []
    for state in states:
        heads = build_heads(base, FederatedSettings.from_config(settings))
        load_exchange_state(heads, state)
        history.append(scorer(heads))
    print(f"  {name}: mean F1 per round (N=5) {[h['mean_f1']['5'] for h in history]}", flush=True)
    return {"history": history, "round_seconds": manifest["round_seconds"], "checkpoint": manifest.get("checkpoint"),
            "wall_seconds": time.perf_counter() - started, "settings": settings, "dp": manifest["dp"],
            "failed_rounds": manifest["failed_rounds"]}


def run_federated_benchmark(
    data_root: str | Path,
    out: str | Path,
    feature_cache: str | Path = "cache/features",
    work_dir: str | Path = "runs/federated",
    clients: int = 6,
    rounds: int = 10,
    settings: dict | None = None,
    dp_noise: float = 0.05,
    dp_clip: float = 0.5,
    runs: Sequence[str] = DEFAULT_RUNS,
    train_per_class: int = 100,
    heldout_per_class: int = HELDOUT_PER_CLASS,
    draws: int = DEFAULT_DRAWS,
) -> dict:
    """Run every configuration, write ``out`` (JSON) plus ``.md`` and ``.png`` beside it."""
    from federated.partition import partition_indices, write_partitions
    from federated.report import write_federated_report
    from federated.task import load_base, small_photo_layer, store_features_tag
    from middleware.datasets import limit_per_class, scan_image_folder
    from middleware.encoder.features import tower_outputs
    from middleware.encoder.towers import TOWER_BLOCKS, ImageTower, TextTower

    plans = run_plans(dp_noise, dp_clip)
    unknown = [name for name in runs if name not in plans]
    if unknown:
        raise FederatedError(f"unknown runs {unknown}: choose from {', '.join(plans)}")
    data_root, work_dir, out = Path(data_root), Path(work_dir), Path(out)
    # Clients' own evaluation is skipped: every round is scored here on val/ instead.
    settings = {"num-server-rounds": rounds, "fraction-evaluate": 0.0, **(settings or {})}
    base = load_base(settings.get("heads-path"))
    with_maps = bool(settings.get("tower-head"))
    mirrored = bool(settings.get("mirror"))
    first_block = TOWER_BLOCKS - int(settings.get("tower-blocks", 0))
    print(f"base heads {base.version}; loading cached features"
          f"{f' and input maps of block {first_block}' if with_maps else ''}", flush=True)
    image_tower = ImageTower()

    def split(name: str, per_class: int | None) -> tuple[list, TowerOutputs]:
        items = limit_per_class(scan_image_folder(data_root / name), per_class)
        return items, tower_outputs(items, image_tower, feature_cache, with_maps, desc=f"features {name}",
                                    small_photos=small_photo_layer(base), first_block=first_block,
                                    mirrored=mirrored and name == "train")

    train, val, heldout = split("train", train_per_class), split("val", None), split("pretrain", heldout_per_class)
    raw_texts = TextMemo(TextTower().encode)
    scorer = Scorer(base, raw_texts, val, heldout, draws)
    synonyms = read_synonyms(data_root)
    roots = {}
    for scheme in dict.fromkeys(plans[name][0] for name in runs):  # only the splits these runs use
        roots[scheme] = work_dir / f"partitions-{scheme}-{clients}"
        parts = partition_indices(train[0], clients, scheme)
        write_partitions(roots[scheme], train[0], train[1], parts, synonyms, raw_texts, store_features_tag(base))
    results: dict = {"base_version": base.version, "clients": clients, "rounds": rounds, "settings": settings,
                     "draws": draws,
                     "runs": {"base": {"history": [scorer(base.build())]}}}
    print(f"zero-shot base: mean F1 {results['runs']['base']['history'][0]['mean_f1']}", flush=True)
    for name in runs:
        print(f"run {name}", flush=True)
        if name == "centralized":
            results["runs"][name] = _centralized(base, roots["iid"], settings, rounds, scorer)
        else:
            scheme, extra = plans[name]
            run_settings = {**settings, **extra, "partition": scheme}
            results["runs"][name] = _federated(name, base, roots[scheme], clients, run_settings, scorer, work_dir)
    results["best"] = pick_best(results)
    write_json(out, results, default=float)
    write_federated_report(results, out)
    return results


def pick_best(results: dict) -> dict | None:
    """The federated checkpoint with the best final mean F1 (N=5 and 10) that does not forget."""
    base_heldout = results["runs"]["base"]["history"][0]["heldout_f1@10"]
    best = None
    for name, run in results["runs"].items():
        final = run["history"][-1]
        if not run.get("checkpoint") or base_heldout - final["heldout_f1@10"] > FORGETTING_TOLERANCE:
            continue
        score = final["mean_f1"]["5"] + final["mean_f1"]["10"]
        if best is None or score > best["score"]:
            best = {"run": name, "checkpoint": run["checkpoint"], "score": score, "final": final}
    return best


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench federated``."""
    parser = sub.add_parser("federated", help="federated fine-tuning: base vs centralized vs FedAvg/FedProx/DP/SecAgg+")
    parser.add_argument("--data", default=str(PHRASE_IMAGENET), help="phrase-imagenet root")
    parser.add_argument("--out", default="fed.json", help="results JSON (.md and .png written beside it)")
    parser.add_argument("--feature-cache", default="cache/features", help="cached tower features directory")
    parser.add_argument("--work-dir", default="runs/federated", help="partition stores and checkpoints")
    parser.add_argument("--clients", type=int, default=6)
    add_training_args(parser)
    add_tower_args(parser)
    parser.add_argument("--client-weighting", choices=("examples", "uniform"), default="examples",
                        help="how client updates are averaged (the DP run is always uniform)")
    parser.add_argument("--dp-noise", type=float, default=0.05, help="DP noise multiplier of the DP run")
    parser.add_argument("--dp-clip", type=float, default=0.5, help="DP clipping norm of the DP run")
    parser.add_argument("--heads", default="", help="base heads (default: the zero-shot base lite-heads.pt)")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS))
    parser.add_argument("--train-per-class", type=int, default=100, help="train/ photos per class (cached)")
    parser.add_argument("--heldout-per-class", type=int, default=HELDOUT_PER_CLASS,
                        help="pretrain/ photos per class (cached)")
    parser.add_argument("--draws", type=draws_argument, default=DEFAULT_DRAWS,
                        help="paper-protocol label draws per N when scoring each round (more: less noise)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    settings = {**training_settings(args), "client-weighting": args.client_weighting}
    results = run_federated_benchmark(
        args.data, args.out, args.feature_cache, args.work_dir, args.clients, args.rounds, settings,
        dp_noise=args.dp_noise, dp_clip=args.dp_clip, runs=[r for r in args.runs.split(",") if r],
        train_per_class=args.train_per_class, heldout_per_class=args.heldout_per_class, draws=args.draws,
    )
    print(Path(args.out).with_suffix(".md").read_text())
    best = results["best"]
    print(f"best federated checkpoint: {best['checkpoint'] if best else 'none passes the forgetting check'}")
    return 0
