"""What the image tower itself could give: its last blocks tuned with a free-weight classifier.

``bench headroom``'s probe reads fixed features, so it bounds heads, not the tower under them. This
bounds a fine-tune of the tower's tail: the encoder's own tunable parts (its last ``blocks`` MBConv
blocks and last conv layer, started from the tower and, for thumbnails, from the small-photo layer)
trained together with a free 59-way (or k-way) classifier by cross-entropy, with mirror flips as
augmentation. A retrieval encoder must meet the frozen text side instead of free class weights, so
its accuracy among N classes stays at or below what this reaches. The epoch is chosen on a held-out
share of ``train/`` (the weights of the best held-out epoch are kept), never on the split scored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from middleware.datasets import LabelledImage
from middleware.encoder.heads import TowerBlocks, TowerHead
from middleware.encoder.towers import TOWER_BLOCKS
from pmirs.errors import DatasetError

if TYPE_CHECKING:
    from middleware.encoder.lite import LiteEncoder


@dataclass(frozen=True)
class TailSettings:
    """The cross-entropy recipe (one-cycle schedule; the tail at a lower rate than the classifier)."""

    blocks: int = 5
    epochs: int = 5
    batch_size: int = 128
    tail_lr: float = 3e-4
    classifier_lr: float = 3e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    dropout: float = 0.2
    seed: int = 0


class TunedTail(nn.Module):
    """The tower's last blocks and conv layer (BatchNorms keep the tower's statistics) + a free classifier."""

    def __init__(self, blocks: int, classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = TowerBlocks(blocks) if blocks else None
        self.head = TowerHead()
        self.classifier = nn.Linear(self.head.conv.out_channels, classes)
        self.dropout = dropout

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Class logits from the input maps of the first tuned block."""
        if self.blocks is not None:
            maps = self.blocks(maps)
        return self.classifier(F.dropout(self.head(maps), self.dropout, self.training))

    @torch.no_grad()
    def log_probs(self, maps: np.ndarray, mirrored: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class log-probabilities averaged over each photo and its mirror image (as embeddings are)."""
        self.eval()
        out = []
        for start in range(0, len(maps), batch_size):
            views = [torch.from_numpy(np.asarray(m[start : start + batch_size], dtype=np.float32))
                     for m in (maps, mirrored)]
            out.append(sum(self(view).log_softmax(dim=1) for view in views).numpy() / 2)
        return np.concatenate(out) if out else np.zeros((0, self.classifier.out_features), np.float32)


@dataclass
class TailInputs:
    """Input maps of the first tuned block for some photos and their mirror images (float16)."""

    maps: np.ndarray
    mirrored: np.ndarray
    small: bool  # whether the photos are thumbnails, which take the small-photo path


def tail_inputs(items: Sequence[LabelledImage], encoder: LiteEncoder, blocks: int, feature_cache: str | Path,
                desc: str) -> TailInputs:
    """Cached tail inputs; thumbnails take the encoder's small-photo path (its input size and filter), as
    its tuned parts do. Photos of both kinds in one split are refused: their maps differ in size."""
    from middleware.encoder.features import cached_block_maps

    try:
        maps, mirrored, small = cached_block_maps(items, encoder.image_tower, feature_cache, TOWER_BLOCKS - blocks,
                                                  encoder.heads.small_photo_layer, encoder.config.image_size, desc)
    except ValueError as error:  # thumbnails and larger photos mixed
        raise DatasetError(f"the tuned tail needs photos of one kind per split: {error}") from error
    return TailInputs(maps, mirrored, small)


def start_tail(tower_model: nn.Module, small_photo_head: nn.Module | None, classes: int,
               settings: TailSettings) -> TunedTail:
    """A tail at the pretrained tower (its conv layer from ``small_photo_head`` for thumbnails); the
    classifier's initial weights come from ``settings.seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        tail = TunedTail(settings.blocks, classes, settings.dropout)
    if tail.blocks is not None:
        tail.blocks.copy_from_tower(tower_model)
    if small_photo_head is not None:
        tail.head.load_state_dict(small_photo_head.state_dict())
    else:
        tail.head.copy_from_tower(tower_model)
    return tail


def train_tuned_tail(tail: TunedTail, inputs: TailInputs, labels: np.ndarray, held: np.ndarray,
                     settings: TailSettings) -> dict:
    """Train ``tail`` on the rows not ``held``; keep the epoch most accurate on the ``held`` rows.

    Each step reads every photo's maps or its mirror image's at random. Returns the held-out accuracy
    per epoch (epoch 0: before training) and the chosen epoch; ``tail`` ends with that epoch's weights.
    Order, flips and dropout follow ``settings.seed`` (the caller's random state is left as it was).
    """
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        return _train(tail, inputs, labels, held, settings)


def _train(tail: TunedTail, inputs: TailInputs, labels: np.ndarray, held: np.ndarray, settings: TailSettings
           ) -> dict:
    maps, mirrored = inputs.maps, inputs.mirrored
    generator = torch.Generator().manual_seed(settings.seed)
    train_rows = np.flatnonzero(~held)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    steps_per_epoch = max(1, len(train_rows) // settings.batch_size)
    params = [p for name, p in tail.named_parameters() if not name.startswith("classifier")]
    optimiser = torch.optim.AdamW([{"params": params, "lr": settings.tail_lr},
                                   {"params": tail.classifier.parameters(), "lr": settings.classifier_lr}],
                                  weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[settings.tail_lr, settings.classifier_lr],
        total_steps=settings.epochs * steps_per_epoch, pct_start=0.15)

    def held_accuracy() -> float:
        scores = tail.log_probs(maps[held], mirrored[held])
        return round(float((scores.argmax(axis=1) == labels[held]).mean()), 4)

    history = [held_accuracy()]
    best = (history[0], 0, copy.deepcopy(tail.state_dict()))
    for epoch in range(1, settings.epochs + 1):
        tail.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        losses = []
        for step in tqdm(range(steps_per_epoch), desc=f"tuned tail epoch {epoch}/{settings.epochs}", unit="step"):
            rows = np.sort(order[step * settings.batch_size : (step + 1) * settings.batch_size])
            flip = torch.rand(len(rows), generator=generator).numpy() < 0.5
            batch = np.where(flip[:, None, None, None], mirrored[rows], maps[rows]).astype(np.float32)
            loss = F.cross_entropy(tail(torch.from_numpy(batch)), y[rows], label_smoothing=settings.label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        history.append(held_accuracy())
        print(f"tuned tail epoch {epoch}: loss {np.mean(losses):.3f}, held-out accuracy {history[-1]:.4f}", flush=True)
        if history[-1] > best[0]:
            best = (history[-1], epoch, copy.deepcopy(tail.state_dict()))
    tail.load_state_dict(best[2])
    return {"settings": asdict(settings), "held_out_accuracy": history, "chosen_epoch": best[1]}
