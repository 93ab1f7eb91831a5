"""Model, data, train and test for federated fine-tuning of the lite encoder's heads (no Flower).

The towers stay frozen: a client trains only the zero-initialised residual heads
(:class:`~middleware.encoder.heads.DualHeads`) on its cached tower outputs with the CLIP loss (or
``loss = "class-ce"``), via the one training loop in :mod:`middleware.encoder.training`. The ConSE
class bank and the head shapes come from the base checkpoint, loaded at run time (never copied).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from federated.partition import FROZEN_FEATURES, ClientPartition
from middleware.encoder.conse import conse_embed
from middleware.encoder.heads import (
    BASE_HEADS_PATH,
    MAX_TUNED_BLOCKS,
    DualHeads,
    HeadsCheckpoint,
    load_heads,
    save_heads,
    with_tower_head,
)
from middleware.encoder.loss import ClipLoss
from middleware.encoder.small_photos import SmallPhotoLayer
from middleware.encoder.training import LOSSES, PhraseBank, TrainConfig, TrainingExamples, train_epochs
from pmirs.errors import FederatedError

STRATEGIES = ("fedavg", "fedprox", "fedavgm")
# How the clients' learning rate moves over the rounds: "constant", or "cosine" (round r of R learns at
# learning-rate x (1 + cos(pi (r - 1) / R)) / 2: the full rate first, small steps to settle at the end)
LR_SCHEDULES = ("constant", "cosine")
CLIENT_WEIGHTINGS = ("examples", "uniform")
BASE_VERSION_KEY = "base-version"  # the server pins the base heads; clients refuse another one
TRAIN_LOSS_KEY = "train-loss"
NUM_EXAMPLES_KEY = "num-examples"  # how many photos a client trained on (reported, not a weight)
# The weight the server averages client updates with: the client's photo count (FedAvg's weighting)
# or 1 for every client (``client-weighting = "uniform"``); metrics are always averaged per photo.
AGGREGATION_WEIGHT_KEY = "aggregation-weight"
# Share of a client's photos that are thumbnails; its example-weighted mean over clients says which
# photos the trained image terms fit (small_photos.trained_photo_kind).
SMALL_SHARE_KEY = "small-share"
# L2 norm of a client's whole update before any DP clipping (the server logs its per-photo mean):
# what a DP run's clipping norm is set against.
UPDATE_NORM_KEY = "update-norm"


@dataclass
class FederatedSettings:
    """Every knob of a federated run; the Flower run config uses the same names in kebab-case."""

    num_server_rounds: int = 10  # federated rounds
    local_epochs: int = 3  # client epochs per round over its own photos
    # > 0: every client takes exactly this many optimiser steps per round instead of local-epochs
    # passes, so a client with few photos moves the shared weights as far as one with many
    local_steps: int = 0
    client_weighting: str = "examples"  # "examples" (FedAvg) or "uniform" (each client's update counts the same)
    batch_size: int = 256  # contrastive batch (in-batch negatives)
    learning_rate: float = 1e-3  # client AdamW learning rate
    lr_schedule: str = "constant"  # one of LR_SCHEDULES
    anchor: float = 3e-2  # L2 pull of the residual heads toward zero (= the base); keeps held-out F1
    loss: str = "clip"  # "clip" (InfoNCE, in-batch negatives) or "class-ce" (every own class a negative)
    strategy: str = "fedavg"  # "fedavg", "fedprox" or "fedavgm" (the last two for non-IID clients)
    proximal_mu: float = 0.0  # FedProx pull toward the round's global weights
    server_momentum: float = 0.9  # FedAvgM: momentum of the server's update (damps client drift)
    server_learning_rate: float = 1.0  # FedAvgM: step of the server's update
    fraction_train: float = 1.0  # share of connected clients sampled per round
    fraction_evaluate: float = 1.0  # share asked to score the global heads on their photos (0 = skip)
    min_nodes: int = 2  # wait for this many clients before a round starts
    dp_noise_multiplier: float = 0.0  # > 0: central DP, Gaussian noise std = this x clip / clients
    dp_clipping_norm: float = 0.5  # client-side L2 clip of each update (DP only)
    secagg: bool = False  # SecAgg+: the server sees only the sum of the (masked) updates
    secagg_num_shares: float = 1.0  # SecAgg+ shares per client: <= 1 a share of the clients, > 2 a count
    secagg_reconstruction_threshold: float = 0.67  # SecAgg+ shares to unmask a dropout (same convention)
    secagg_max_weight: int = 5000  # SecAgg+ bound on a client's example count (uniform weighting uses 1)
    tower_head: bool = False  # also tune the image tower's last conv layer (stores need pre-head maps)
    tower_blocks: int = 0  # with tower-head: also tune this many last MBConv blocks (stores need their input maps)
    tower_lr_scale: float = 1.0  # the tuned tower layers learn at learning-rate x this
    tower_classifier: bool = False  # with tower-head: also tune the tower's ImageNet classifier, which ConSE reads
    distill: float = 0.0  # with tower-classifier: weight of distillation toward the frozen tower (no forgetting)
    mirror: bool = False  # with tower-head: read each photo or its mirror image at random (stores need both maps)
    train_text: bool = False  # also tune the text head (off: queries keep the base's text space)
    heads_path: str = ""  # base heads checkpoint ("" = the shipped zero-shot base)
    out_dir: str = ""  # where the aggregated checkpoint + manifest go ("" = not saved)
    partitions_root: str = ""  # simulation: client k reads <root>/client-<k> (node config overrides)
    partition: str = ""  # how the data was split (recorded in the manifest)
    seed: int = 0  # client shuffling seed (mixed with round and partition id)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FederatedSettings:
        """Parse a Flower run config (kebab-case keys) into settings, refusing unknown keys.

        Raises:
            FederatedError: unknown key, a value of the wrong type, or an invalid combination.
        """
        by_key = {f.name.replace("_", "-"): f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in config.items():
            if key not in by_key:
                raise FederatedError(f"unknown federated setting {key!r}")
            kind = type(getattr(cls(), by_key[key].name))
            try:
                values[by_key[key].name] = _coerce(value, kind)
            except (TypeError, ValueError) as exc:
                raise FederatedError(f"setting {key!r}: {exc}") from exc
        settings = cls(**values)
        settings.validate()
        return settings

    def to_config(self) -> dict[str, Any]:
        """The kebab-case run config Flower passes around (values are TOML scalars)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    def validate(self) -> None:
        """Reject settings no run can use."""
        if self.strategy not in STRATEGIES:
            raise FederatedError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FederatedError(f"unknown lr-schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if self.loss not in LOSSES:
            raise FederatedError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.client_weighting not in CLIENT_WEIGHTINGS:
            raise FederatedError(f"unknown client weighting {self.client_weighting!r}; choose one of "
                                 f"{', '.join(CLIENT_WEIGHTINGS)}")
        if self.num_server_rounds < 1 or self.local_epochs < 1 or self.batch_size < 2:
            raise FederatedError("rounds and local epochs must be >= 1 and the batch size >= 2")
        if self.local_steps < 0:
            raise FederatedError("local steps must be >= 0 (0 = local-epochs passes over the photos)")
        if self.dp_noise_multiplier < 0 or (self.dp_noise_multiplier > 0 and self.dp_clipping_norm <= 0):
            raise FederatedError("DP needs a noise multiplier >= 0 and a positive clipping norm")
        if not 0 <= self.tower_blocks <= MAX_TUNED_BLOCKS or (self.tower_blocks and not self.tower_head):
            raise FederatedError(f"tower-blocks must be 0..{MAX_TUNED_BLOCKS}, and > 0 only with tower-head")
        if self.tower_lr_scale <= 0:
            raise FederatedError("tower-lr-scale must be > 0")
        if self.tower_classifier and not self.tower_head:
            raise FederatedError("tower-classifier reads the tuned tower layers' output: it needs tower-head")
        if self.distill < 0 or (self.distill and not self.tower_classifier):
            raise FederatedError("distill must be >= 0, and > 0 only with tower-classifier (what it distils)")
        if self.mirror and not self.tower_head:
            raise FederatedError("mirror flips the tuned tower layers' input maps: it needs tower-head")
        if self.dp and self.client_weighting != "uniform":
            raise FederatedError("central DP calibrates its noise to the unweighted mean of the clipped updates: "
                                 "set client-weighting to \"uniform\" for DP runs")
        if self.secagg and self.dp_noise_multiplier > 0:
            raise FederatedError("choose DP or SecAgg+ for a run, not both (not wired together yet)")
        if self.secagg and not (0 < self.secagg_num_shares <= 1 or self.secagg_num_shares > 2):
            raise FederatedError("SecAgg+ shares: a fraction in (0, 1] of the clients or a count > 2")
        if self.secagg and not (0 < self.secagg_reconstruction_threshold <= 1
                                or 1 < self.secagg_reconstruction_threshold < self.secagg_num_shares):
            raise FederatedError("SecAgg+ threshold: a fraction in (0, 1] or a count below the number of shares")

    @property
    def dp(self) -> bool:
        """Whether central DP (client-side clipping + server noise) is on."""
        return self.dp_noise_multiplier > 0


def secagg_max_weight(settings: FederatedSettings) -> int:
    """SecAgg+'s bound on a client's weight. Each masked vector is scaled by weight / bound before it
    is quantised, so a loose bound costs precision: under uniform weighting every weight is 1, and
    a bound of 5000 would blur each client's exchanged values by up to about 0.01 each."""
    return 1 if settings.client_weighting == "uniform" else settings.secagg_max_weight


def secagg_count(value: float) -> int | float:
    """Flower reads a SecAgg+ share setting as a count when it is an int, a fraction when a float."""
    return int(value) if value > 1 and float(value).is_integer() else float(value)


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"expected true/false, got {value!r}")
            return value.lower() == "true"
        return bool(value)
    return kind(value)


def load_base(heads_path: str | Path | None = None) -> HeadsCheckpoint:
    """The base heads checkpoint (config, weights, ConSE bank); ``""``/None = the shipped zero-shot base."""
    return load_heads(heads_path or BASE_HEADS_PATH)


def check_base(base: HeadsCheckpoint, expected: str | None) -> None:
    """Refuse to train when this client's base heads differ from the server's (e.g. replaced mid-run):
    ConSE inputs computed with another class bank would silently poison the average."""
    if expected and base.version != expected:
        raise FederatedError(f"base heads {base.version} differ from the server's {expected}; restart the run")


def build_heads(base: HeadsCheckpoint, settings: FederatedSettings) -> DualHeads:
    """The heads a run trains and exchanges, identical on the server and every client.

    From the base: with ``tower-head``, plus a copy of the image tower's last conv layer (and of its
    last ``tower-blocks`` MBConv blocks, and with ``tower-classifier`` of its ImageNet classifier); the text
    head is frozen unless ``train-text`` (text queries then keep the base's space, so text-to-text
    scores and the text relevance threshold stay as they were). Frozen parts never travel.
    """
    heads = base.build()
    if settings.tower_head:
        heads = with_tower_head(heads, _pretrained_tower_model(), settings.tower_blocks, settings.tower_classifier)
    heads.text_residual.requires_grad_(settings.train_text)
    return heads


@functools.cache
def _pretrained_tower_model() -> torch.nn.Module:
    """The frozen image tower, loaded once per process: a client builds its heads every round, and
    only reads the weights and statistics of the tower's last layers from it."""
    from middleware.encoder.towers import ImageTower

    return ImageTower().model


def store_features_tag(base: HeadsCheckpoint) -> str:
    """What a client store built for ``base`` records as the origin of its features: the base's
    version when its small-photo layer computed them, else the frozen tower's tag."""
    return base.version if base.config.small_photo_max_side else FROZEN_FEATURES


def small_photo_layer(base: HeadsCheckpoint) -> SmallPhotoLayer | None:
    """The base's small-photo layer, which client stores must be built with."""
    return base.build().small_photo_layer


def make_examples(partition: ClientPartition, base: HeadsCheckpoint) -> TrainingExamples:
    """A client's training inputs: ConSE embeddings from its cached logits, its cached features (and those
    logits and the class bank, for heads that tune the tower's classifier).

    Raises:
        FederatedError: the store's features were computed for other base heads.
    """
    if partition.features_for != store_features_tag(base):
        raise FederatedError(
            f"this client's store holds features for base heads {partition.features_for!r}, not for "
            f"{store_features_tag(base)!r}: rebuild it with `pmirs federated prepare` (or partition)")
    cfg = base.config
    conse = conse_embed(partition.logits, base.class_bank, cfg.conse_top_k, cfg.conse_temperature)
    return TrainingExamples(
        conse=conse.astype(np.float32),
        pooled=partition.pooled,
        labels=partition.labels,
        phrases=PhraseBank(partition.phrase_emb, partition.phrase_owner),
        maps=partition.maps,
        small_share=partition.small_share,
        mirrored_maps=partition.mirrored_maps,
        logits=partition.logits,
        class_bank=base.class_bank,
    )


def check_store_maps(data: TrainingExamples, heads: DualHeads, mirror: bool = False) -> None:
    """Refuse a store whose maps (or lack of them) do not fit what the heads tune.

    Raises:
        FederatedError: the run tunes tower layers and the store holds no maps, or maps of another block,
            or the run mirrors photos and the store holds no mirror-image maps.
    """
    channels = heads.maps_channels
    if channels is None:
        return
    if mirror and data.mirrored_maps is None:
        raise FederatedError("this run mirrors photos but this client's store holds no mirror-image maps: "
                             "rebuild it with --mirror")
    found = None if data.maps is None else data.maps.shape[1]
    if found != channels:
        what = "no maps" if found is None else f"maps with {found} channels"
        raise FederatedError(
            f"this run tunes the tower from block {heads.config.first_tuned_block} on (maps with {channels} "
            f"channels) but this client's store holds {what}: rebuild it with the run's --tower-head/--tower-blocks")


def train(heads: DualHeads, data: TrainingExamples, settings: FederatedSettings, proximal_mu: float = 0.0,
          seed: int = 0, server_round: int = 1) -> dict[str, float]:
    """Train the heads in place on one client's examples; returns metrics for the server."""
    started = time.perf_counter()
    config = train_config(settings, proximal_mu, seed, server_round)
    before = {k: v.clone() for k, v in exchange_state(heads).items()}
    loss = train_epochs(heads, training_view(data, settings), config)
    return {TRAIN_LOSS_KEY: float(loss), NUM_EXAMPLES_KEY: len(data), AGGREGATION_WEIGHT_KEY: aggregation_weight(
        settings, len(data)), SMALL_SHARE_KEY: float(data.small_share), "train-seconds": time.perf_counter() - started,
            UPDATE_NORM_KEY: update_norm(before, exchange_state(heads))}


def update_norm(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of a client's whole update (all exchanged arrays as one vector), before any DP clipping:
    the number a DP run's clipping norm is chosen against."""
    squares = sum(float(torch.sum((after[k].double() - before[k].double()) ** 2)) for k in before)
    return math.sqrt(squares)


def train_config(settings: FederatedSettings, proximal_mu: float = 0.0, seed: int = 0,
                 server_round: int = 1) -> TrainConfig:
    """The optimiser settings of one client round (or one centralized round) under ``settings``."""
    return TrainConfig(epochs=settings.local_epochs, steps=settings.local_steps, batch_size=settings.batch_size,
                       lr=round_learning_rate(settings, server_round), tower_lr_scale=settings.tower_lr_scale,
                       anchor=settings.anchor, proximal_mu=proximal_mu, distill=settings.distill, loss=settings.loss,
                       seed=seed)


def round_learning_rate(settings: FederatedSettings, server_round: int) -> float:
    """The clients' learning rate in round ``server_round`` (1-based) under the run's schedule."""
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    progress = min(max(server_round - 1, 0), settings.num_server_rounds) / settings.num_server_rounds
    return settings.learning_rate * (1 + math.cos(math.pi * progress)) / 2


def training_view(data: TrainingExamples, settings: FederatedSettings) -> TrainingExamples:
    """``data`` as this run trains on it: without mirror-image maps unless the run mirrors photos."""
    return data if settings.mirror else replace(data, mirrored_maps=None)


def aggregation_weight(settings: FederatedSettings, num_examples: int) -> int:
    """How much this client's update counts in the average: its photo count, or 1 under uniform weighting
    (clients that hold different domains of unequal size then pull the shared weights equally)."""
    return 1 if settings.client_weighting == "uniform" else num_examples


@torch.inference_mode()
def test(heads: DualHeads, data: TrainingExamples, seed: int = 0) -> dict[str, float]:
    """CLIP loss and top-1 accuracy of each photo against its client's class phrases."""
    heads.eval()
    rng = np.random.default_rng(seed)
    image = data.images.embed_all(heads)
    text = heads.encode_text(torch.from_numpy(data.phrases.sample(data.labels, rng)))
    loss = ClipLoss()(image, text, heads.logit_scale, torch.from_numpy(data.labels))
    class_text = heads.encode_text(torch.from_numpy(class_means(data.phrases)))
    top1 = (image @ class_text.T).argmax(dim=1).numpy() == data.labels
    # Flower checks every reply for the strategy's weight key; evaluation metrics are averaged per photo
    # (server_app.per_photo_metrics), so the value here only has to be present.
    return {"eval-loss": float(loss), "eval-top1": float(top1.mean()), NUM_EXAMPLES_KEY: len(data),
            AGGREGATION_WEIGHT_KEY: len(data)}


def class_means(phrases: PhraseBank) -> np.ndarray:
    """Mean phrase embedding per class (rows in class-index order)."""
    classes = np.unique(phrases.owner)
    return np.stack([phrases.embeddings[phrases.owner == c].mean(axis=0) for c in classes]).astype(np.float32)


def trainable_keys(heads: DualHeads) -> list[str]:
    """Names of the parameters a run trains (what travels), in state-dict order."""
    return [k for k, v in heads.named_parameters() if v.requires_grad]


def exchange_state(heads: DualHeads) -> dict[str, torch.Tensor]:
    """What travels each round: the trainable parameters only, scalars as shape-(1,) arrays.

    Buffers (the ConSE centre, the tower head's BatchNorm statistics) and frozen parameters stay
    as the base has them, so DP noise never touches them; and flwr 1.42's client-side clipping
    (``compute_clip_model_update``) silently skips 0-d arrays, which would leave the learnable
    temperature unclipped in DP rounds.
    """
    params = dict(heads.named_parameters())
    return {k: params[k].detach().reshape(1) if params[k].dim() == 0 else params[k].detach()
            for k in trainable_keys(heads)}


def load_exchange_state(heads: DualHeads, state: Mapping[str, Any]) -> None:
    """Load exchanged parameters (torch tensors or numpy arrays) into the heads' own shapes."""
    keys = trainable_keys(heads)
    if list(state) != keys:
        raise FederatedError(f"weights do not fit the heads: expected {keys}, got {list(state)}")
    full = heads.state_dict()
    for k in keys:
        value = state[k]
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        full[k] = tensor.reshape(full[k].shape)
    heads.load_state_dict(full)


def get_weights(heads: DualHeads) -> list[np.ndarray]:
    """The trainable state as numpy arrays, in state-dict order (what a round exchanges)."""
    return [v.cpu().numpy().copy() for v in exchange_state(heads).values()]


def set_weights(heads: DualHeads, arrays: Sequence[np.ndarray]) -> None:
    """Load arrays in state-dict order into the heads (shapes must match)."""
    keys = trainable_keys(heads)
    if len(keys) != len(arrays):
        raise FederatedError(f"expected {len(keys)} weight arrays, got {len(arrays)}")
    load_exchange_state(heads, dict(zip(keys, arrays, strict=True)))


def federated_training_summary(manifest: dict, base: HeadsCheckpoint) -> str:
    """What a federated checkpoint was trained on, in words (the base's own data is kept beside it)."""
    return (f"federated fine-tuning from the zero-shot base {base.version}: {manifest.get('rounds', '?')} rounds over "
            f"{manifest.get('clients', '?')} clients' own photos ({manifest.get('partition', '?')} partition, "
            f"{manifest.get('tuned_photos', 'all')} photos); no photo left its client")


def save_checkpoint(out_dir: str | Path, heads: DualHeads, base: HeadsCheckpoint, manifest: dict) -> Path:
    """Save the aggregated heads as a versioned checkpoint ``load_heads`` reads, plus a manifest.

    The manifest also rides inside the checkpoint (``config.extra["federated"]``), so the file
    alone says how it was trained. Returns the checkpoint path ``<out_dir>/fed-heads-<version>.pt``.
    """
    out_dir = Path(out_dir)
    extra = {key: value for key, value in heads.config.extra.items() if key != "trained_on"}
    extra.update(federated=manifest, base_version=base.version, trained_on=federated_training_summary(manifest, base),
                 base_trained_on=base.config.extra.get("trained_on", "unknown"))
    config = replace(heads.config, tuned_photos=manifest.get("tuned_photos", "all"), extra=extra)
    trained = DualHeads(config)
    trained.load_state_dict(heads.state_dict())
    staging = out_dir / "fed-heads.pt.staging"
    version = save_heads(staging, trained, base.class_bank)
    path = out_dir / f"fed-heads-{version}.pt"
    staging.replace(path)
    record = {"checkpoint": path.name, "version": version, "base_version": base.version, **manifest}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    (out_dir / "latest.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    return path
