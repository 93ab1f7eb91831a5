"""``pmirs federated``: partition photos across clients, simulate a federated run, plan a deployment.

    pmirs federated simulate --clients 6 --rounds 10 --partition domain
    pmirs federated prepare --data ~/my-photos --out ~/pmirs-client      # on each real client
    pmirs federated deploy-config --partitions runs/federated/parts --out runs/federated/deploy
    pmirs federated ship final.pt --run runs/federated/fedavg-iid/fed-heads-<v>.pt --command "..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from federated.task import LR_SCHEDULES
from middleware.datasets import PHRASE_IMAGENET
from middleware.encoder.heads import MAX_TUNED_BLOCKS
from middleware.encoder.towers import TOWER_BLOCKS
from middleware.encoder.training import LOSSES
from pmirs.commands.keys import UsageError

DEFAULT_DATA = str(PHRASE_IMAGENET)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pmirs federated simulate|partition|prepare|deploy-config|ship``."""
    parser = subparsers.add_parser("federated", help="federated fine-tuning of the encoder heads (Flower)")
    sub = parser.add_subparsers(dest="federated_command", required=True, metavar="ACTION")

    part = sub.add_parser("partition", help="split a labelled photo folder into per-client stores")
    _partition_args(part)
    part.add_argument("--out", required=True, help="root of the client-<k> stores")
    part.set_defaults(func=_partition)

    sim = sub.add_parser("simulate", help="run federated fine-tuning on Flower's simulation engine (Ray)")
    _partition_args(sim)
    add_training_args(sim)
    sim.add_argument("--client-weighting", choices=("examples", "uniform"), default=None,
                     help="how client updates are averaged: by photo count (FedAvg) or uniformly; "
                          "default: uniform with --dp-noise (DP needs it), else examples")
    sim.add_argument("--strategy", choices=("fedavg", "fedprox", "fedavgm"), default="fedavg")
    sim.add_argument("--proximal-mu", type=float, default=0.1, help="FedProx only")
    sim.add_argument("--server-momentum", type=float, default=0.9, help="FedAvgM only")
    sim.add_argument("--dp-noise", type=float, default=0.0, help="central DP noise multiplier (0 = off)")
    sim.add_argument("--dp-clip", type=float, default=0.5, help="client-side clipping norm (DP only)")
    sim.add_argument("--secagg", action="store_true", help="aggregate with SecAgg+ (server sees only the sum)")
    sim.add_argument("--work-dir", default="runs/federated", help="where partition stores are written")
    sim.add_argument("--out-dir", default="runs/federated/checkpoints", help="where the checkpoint is saved")
    sim.add_argument("--cpus", type=int, default=2, help="CPUs given to Ray")
    sim.set_defaults(func=_simulate)

    prep = sub.add_parser("prepare", help="on a client: build its store from its own photo folder")
    prep.add_argument("--data", required=True, help="<root>/<label>/*.jpg or <root>/<domain>/<label>/*.jpg")
    prep.add_argument("--out", required=True, help="the store directory (give it to the SuperNode)")
    add_tower_args(prep)
    prep.add_argument("--heads", default="", help="base heads of the run (default: the zero-shot base lite-heads.pt)")
    prep.set_defaults(func=_prepare)

    dep = sub.add_parser("deploy-config", help="write the commands of a real deployment on one host")
    dep.add_argument("--partitions", required=True, help="root holding client-<k> stores")
    dep.add_argument("--out", required=True, help="directory for run.sh (and FLWR_HOME)")
    dep.add_argument("--port", type=int, default=9093, help="SuperLink HTTP port")
    dep.add_argument("--rounds", type=int, default=10)
    dep.add_argument("--out-dir", default="", help="checkpoint directory for the ServerApp (absolute)")
    dep.set_defaults(func=_deploy_config)

    ship = sub.add_parser("ship", help="copy a run's calibrated checkpoint into the repo's weights, with its manifest")
    ship.add_argument("heads", help="the calibrated checkpoint (last --write-to of the calibration benchmarks)")
    ship.add_argument("--run", required=True, help="the run's own checkpoint (its .json manifest beside it)")
    ship.add_argument("--command", required=True, help="how it was trained and calibrated, for the manifest")
    ship.add_argument("--calibration", action="append", default=[],
                      help="a calibration benchmark's result JSON the shipped values came from (repeatable)")
    ship.add_argument("--trained-on", default="", help="the training data in words (default: the run's summary)")
    ship.add_argument("--weights-dir", default="", help="default: middleware/encoder/weights")
    ship.set_defaults(func=_ship)


def _partition_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset root (with classes.csv) or any ImageFolder")
    parser.add_argument("--split", default="train", help="sub-folder of --data to split ('' = --data itself)")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--partition", choices=("iid", "domain", "dirichlet"), default="iid")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet only)")
    parser.add_argument("--heads", default="", help="base heads of the run (default: the zero-shot base lite-heads.pt)")
    parser.add_argument("--per-class", type=int, default=100, help="photos per class to use (0 = all)")
    parser.add_argument("--feature-cache", default="cache/features", help="cached tower features directory")
    add_tower_args(parser)
    parser.add_argument("--seed", type=int, default=0)


def add_tower_args(parser: argparse.ArgumentParser) -> None:
    """Which image tower layers a run tunes: its client stores keep those layers' input maps."""
    parser.add_argument("--tower-head", action="store_true",
                        help="also tune the image tower's last conv layer (stores keep pre-head maps, ~31 KB/photo)")
    parser.add_argument("--tower-blocks", type=int, default=0, choices=range(MAX_TUNED_BLOCKS + 1), metavar="K",
                        help="with --tower-head: also tune the tower's last K MBConv blocks "
                             f"(0..{MAX_TUNED_BLOCKS}; stores keep their input maps: ~19 KB/photo, ~44 KB for 5)")
    parser.add_argument("--mirror", action="store_true",
                        help="with --tower-head: stores also keep the maps of each photo's mirror image, and "
                             "training reads one or the other at random (twice the store size)")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """The clients' local training, shared by ``federated simulate`` and ``bench federated``."""
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=0,
                        help="> 0: every client takes exactly this many optimiser steps per round (not epochs)")
    parser.add_argument("--anchor", type=float, default=3e-2, help="L2 pull of the heads toward the base")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256, help="photos per step (the contrastive batch)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                        help="cosine: round r of R learns at --learning-rate x (1 + cos(pi (r-1) / R)) / 2")
    parser.add_argument("--loss", choices=LOSSES, default="clip",
                        help="clip: InfoNCE against a phrase per photo; class-ce: every own class a negative")
    parser.add_argument("--tower-lr-scale", type=float, default=1.0,
                        help="the tuned tower layers learn at --learning-rate x this")
    parser.add_argument("--train-text", action="store_true", help="also tune the text head (default: frozen)")
    parser.add_argument("--tower-classifier", action="store_true",
                        help="with --tower-head: also tune the tower's ImageNet classifier, which ConSE then reads "
                             "for tuned photos (+1.28 M parameters per update)")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="with --tower-classifier: weight of distillation toward the frozen tower's class "
                             "probabilities on the client's own photos (keeps untrained classes)")


def training_settings(args: argparse.Namespace) -> dict:
    """The run-config entries of :func:`add_training_args` and :func:`add_tower_args` (checked) and ``--heads``."""
    check_tower_args(args)
    if args.tower_classifier and not args.tower_head:
        raise UsageError("--tower-classifier reads the tuned tower layers' output: add --tower-head")
    if args.distill < 0 or (args.distill and not args.tower_classifier):
        raise UsageError("--distill must be >= 0, and > 0 only with --tower-classifier (it distils that classifier)")
    return {"local-epochs": args.local_epochs, "local-steps": args.local_steps, "learning-rate": args.learning_rate,
            "lr-schedule": args.lr_schedule, "batch-size": args.batch_size,
            "anchor": args.anchor, "loss": args.loss, "tower-head": args.tower_head, "tower-blocks": args.tower_blocks,
            "tower-lr-scale": args.tower_lr_scale, "mirror": args.mirror, "train-text": args.train_text,
            "tower-classifier": args.tower_classifier, "distill": args.distill, "heads-path": args.heads}


def check_tower_args(args: argparse.Namespace) -> None:
    """Refuse tower flags that need ``--tower-head`` without it."""
    if args.tower_blocks and not args.tower_head:
        raise UsageError("--tower-blocks tunes blocks in front of the tower's last conv layer: add --tower-head")
    if args.mirror and not args.tower_head:
        raise UsageError("--mirror flips the input maps of the tuned tower layers: add --tower-head")


def _first_block(args: argparse.Namespace) -> int:
    """The tower block whose input maps the stores keep (16 = the pre-head maps)."""
    check_tower_args(args)
    return TOWER_BLOCKS - args.tower_blocks


def _write_stores(args: argparse.Namespace, out: Path) -> list[Path]:
    """Extract (or reuse cached) tower outputs once and write one store per client."""
    from federated.partition import describe_partitions, partition_indices, write_partitions
    from federated.task import load_base, small_photo_layer, store_features_tag
    from middleware.datasets import limit_per_class, read_synonyms, scan_image_folder
    from middleware.encoder.features import tower_outputs
    from middleware.encoder.towers import ImageTower, TextTower

    base = load_base(args.heads)
    items = limit_per_class(scan_image_folder(Path(args.data) / args.split), args.per_class or None)
    tower = tower_outputs(items, ImageTower(), args.feature_cache, with_maps=args.tower_head,
                          desc=f"features {args.split}", small_photos=small_photo_layer(base),
                          first_block=_first_block(args), mirrored=args.mirror)
    parts = partition_indices(items, args.clients, args.partition, args.alpha, args.seed)
    dirs = write_partitions(out, items, tower, parts, read_synonyms(args.data), TextTower().encode,
                            store_features_tag(base))
    for row in describe_partitions(dirs):
        print(f"{row['dir']}: {row['photos']} photos, {row['classes']} classes, domains {', '.join(row['domains'])}")
    return dirs


def _partition(args: argparse.Namespace) -> int:
    _write_stores(args, Path(args.out))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from federated.simulation import simulate

    root = Path(args.work_dir) / f"partitions-{args.partition}-{args.clients}"
    _write_stores(args, root)
    settings = {
        **training_settings(args), "num-server-rounds": args.rounds,
        "client-weighting": args.client_weighting or ("uniform" if args.dp_noise > 0 else "examples"),
        "strategy": args.strategy, "proximal-mu": args.proximal_mu if args.strategy == "fedprox" else 0.0,
        "server-momentum": args.server_momentum,
        "dp-noise-multiplier": args.dp_noise, "dp-clipping-norm": args.dp_clip, "secagg": args.secagg,
        "partitions-root": str(root.resolve()),
        "out-dir": str(Path(args.out_dir).resolve()), "partition": args.partition, "seed": args.seed,
    }
    manifest = simulate(settings, args.clients, num_cpus=args.cpus)
    print(json.dumps({k: manifest[k] for k in ("checkpoint", "rounds", "clients", "partition", "dp", "round_seconds")},
                     indent=2, default=float))
    print(f"use it with: --encoder-heads {manifest['checkpoint']}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from federated.partition import prepare_partition
    from federated.task import load_base, small_photo_layer, store_features_tag
    from middleware.encoder.features import tower_outputs
    from middleware.encoder.towers import ImageTower, TextTower

    first_block = _first_block(args)
    base, image_tower = load_base(args.heads), ImageTower()
    path = prepare_partition(
        args.out, args.data,
        lambda items: tower_outputs(items, image_tower, Path(args.out) / "feature-cache", with_maps=args.tower_head,
                                    small_photos=small_photo_layer(base), first_block=first_block,
                                    mirrored=args.mirror),
        TextTower().encode, store_features_tag(base),
    )
    print(f"client store ready: {path} (start the SuperNode with --node-config 'partition-dir=\"{path}\"')")
    return 0


def _deploy_config(args: argparse.Namespace) -> int:
    from federated.simulation import deployment_plan

    out = Path(args.out).resolve()
    dirs = sorted(p for p in Path(args.partitions).resolve().iterdir() if p.is_dir())
    run_config = {"num-server-rounds": args.rounds, "min-nodes": len(dirs)}
    if args.out_dir:
        run_config["out-dir"] = str(Path(args.out_dir).resolve())
    plan = deployment_plan(dirs, run_config, out / "flwr-home", port=args.port)
    out.mkdir(parents=True, exist_ok=True)
    script = out / "run.sh"
    script.write_text(plan.as_script())
    script.chmod(0o755)
    print(plan.as_script())
    print(f"written: {script}")
    return 0


def _ship(args: argparse.Namespace) -> int:
    from federated.shipping import ship_checkpoint
    from middleware.encoder.heads import WEIGHTS_DIR

    dest = ship_checkpoint(args.heads, args.run, args.command, args.calibration, args.trained_on,
                           args.weights_dir or WEIGHTS_DIR)
    print(f"shipped {dest} (manifest {dest.with_suffix('.json').name}); to make it the default, point "
          f"FEDERATED_HEADS_PATH in middleware/encoder/heads.py at it and re-run the quality benchmarks")
    return 0
