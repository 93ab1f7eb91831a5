"""``pmirs train-heads``: align the lite encoder's heads on the pretraining pool."""

from __future__ import annotations

import argparse

from middleware.encoder.alignment import SMALL_INPUT_CANDIDATES
from middleware.encoder.heads import BASE_HEADS_PATH
from middleware.encoder.small_photos import DEFAULT_MAX_SIDE, AdaptConfig, SmallInput


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-heads", help="train the lite encoder's heads on <data>/pretrain")
    parser.add_argument("--data", required=True, help="dataset root with pretrain/<label>/* (and classes.csv)")
    parser.add_argument("--out", default=str(BASE_HEADS_PATH), help="checkpoint to write")
    parser.add_argument("--feature-cache", default="cache/features")
    parser.add_argument("--per-class", type=int, default=0,
                        help="photos per class (0 = all, as the shipped base used)")
    parser.add_argument("--holdout", type=float, default=0.25, help="share of classes held out to check transfer")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--anchor", type=float, default=1e-2, help="L2 pull of the heads toward ConSE")
    parser.add_argument("--no-tune", action="store_true", help="keep ConSE's top-k/temperature as they are")
    parser.add_argument("--no-small-photos", action="store_true",
                        help="skip the tower layer adapted to small photos (ConSE then reads the frozen tower)")
    parser.add_argument("--small-max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help="photos whose longer side is at most this many pixels count as small")
    parser.add_argument("--small-inputs", default=",".join(c.label for c in SMALL_INPUT_CANDIDATES), type=_small_inputs,
                        help="inputs tried for small photos, SIZE or SIZE:FILTER (bicubic, bilinear); "
                             "held-out classes pick one")
    parser.add_argument("--adapt-epochs", type=int, default=AdaptConfig.epochs,
                        help="most epochs tried for the small-photo layer (held-out classes pick how many)")
    parser.add_argument("--adapt-lr", type=float, default=AdaptConfig.lr)
    parser.add_argument("--adapt-distill", type=float, default=AdaptConfig.distill,
                        help="weight of the pull toward the frozen tower's predictions")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run)


def _small_inputs(text: str) -> list[SmallInput]:
    """``--small-inputs``: comma-separated ``SIZE`` or ``SIZE:FILTER`` (a usage error, not a traceback)."""
    try:
        return [SmallInput.parse(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    from middleware.encoder.alignment import train_heads_on_pretrain
    from middleware.encoder.training import TrainConfig

    adapt = None if args.no_small_photos else AdaptConfig(
        epochs=args.adapt_epochs, lr=args.adapt_lr, distill=args.adapt_distill, seed=args.seed)
    report = train_heads_on_pretrain(
        args.data, args.out, args.feature_cache, args.per_class or None, args.holdout,
        TrainConfig(epochs=args.epochs, lr=args.lr, anchor=args.anchor, seed=args.seed),
        tune=not args.no_tune, seed=args.seed, adapt_config=adapt, small_max_side=args.small_max_side,
        small_inputs=args.small_inputs,
    )
    print(f"chose {report.chosen_epochs} epochs; wrote {args.out} (version {report.checkpoint_version})")
    return 0
