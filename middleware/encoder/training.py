"""Contrastive alignment of the heads on cached features (no Flower, no I/O: reused by federated/).

A training example is (cached pooled features of a photo, MiniLM embedding of one phrase of its
class). Phrases come from the paper's ten templates and the class synonyms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from middleware.encoder.heads import DualHeads
from middleware.encoder.loss import ClassCrossEntropy, ClipLoss, distillation_loss
from middleware.encoder.templates import PAPER_TEMPLATES

# "clip": symmetric InfoNCE against one phrase per photo (in-batch negatives); "class-ce":
# cross-entropy of each photo over one phrase of every class (all classes are negatives).
LOSSES = ("clip", "class-ce")
# Photos per forward pass when embedding a whole set for evaluation: through tuned tower blocks one
# photo's activations take ~0.5 MB per layer, so a 5,000-photo set at once held over 10 GB.
EMBED_BATCH = 256


@dataclass
class PhraseBank:
    """Every phrase of every class, embedded once by the frozen text tower."""

    embeddings: np.ndarray  # (n_phrases, text_dim)
    owner: np.ndarray  # (n_phrases,) class index of each phrase

    def sample(self, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random phrase embedding for each class index in ``classes``."""
        starts = np.searchsorted(self.owner, classes, side="left")
        ends = np.searchsorted(self.owner, classes, side="right")
        picks = starts + (rng.random(len(classes)) * (ends - starts)).astype(int)
        return self.embeddings[picks]

    @property
    def class_count(self) -> int:
        """Classes this bank holds phrases of (indices 0..count-1)."""
        return int(self.owner.max()) + 1 if len(self.owner) else 0


def class_phrases(label: str, synonyms: Sequence[str] = (), templates: Sequence[str] = PAPER_TEMPLATES) -> list[str]:
    """All training phrases of one class: each template with the label and each synonym."""
    names = list(dict.fromkeys([label, *synonyms]))
    return [t.format(name) for name in names for t in templates]


def build_phrase_bank(
    classes: Sequence[str],
    synonyms: dict[str, list[str]],
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    templates: Sequence[str] = PAPER_TEMPLATES,
) -> PhraseBank:
    """Embed the phrases of ``classes`` (index order) with the frozen text tower."""
    phrases, owner = [], []
    for index, label in enumerate(classes):
        mine = class_phrases(label, synonyms.get(label, ()), templates)
        phrases += mine
        owner += [index] * len(mine)
    return PhraseBank(np.asarray(encode_texts(phrases), dtype=np.float32), np.asarray(owner))


@dataclass
class ImageExamples:
    """Cached frozen image-side inputs of some photos, and their shared-space embedding by some heads."""

    conse: np.ndarray  # (n, dim) ConSE image embeddings (frozen)
    pooled: np.ndarray  # (n, 1280) pooled tower features (frozen)
    maps: np.ndarray | None = None  # (n, c, h, w) input maps of the first tuned tower layer, float16
    mirrored_maps: np.ndarray | None = None  # the same maps of each photo's mirror image (augmentation)
    class_bank: np.ndarray | None = None  # (1000, dim) ConSE class-name bank: heads with a tuned classifier need it

    def embed(self, heads: DualHeads, idx: np.ndarray | slice = slice(None),
              mirror: np.ndarray | None = None) -> torch.Tensor:
        """Unit-norm embeddings of rows ``idx`` (with gradients): the tuned tower layers read maps.

        ``mirror`` (a mask over ``idx``) reads those photos' mirror-image maps instead; their frozen
        ConSE input stays the photo's own (a mirror image is the same thing to the frozen classifier).
        """
        return self.embed_with_logits(heads, idx, mirror)[0]

    def embed_with_logits(self, heads: DualHeads, idx: np.ndarray | slice = slice(None),
                          mirror: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`embed`, and the tuned classifier's ImageNet logits when the heads carry one (else None)."""
        pooled = heads.pooled_features(torch.from_numpy(self._tower_input(heads, idx, mirror)))
        if heads.tower_classifier is None:
            conse, logits = torch.from_numpy(np.asarray(self.conse[idx], dtype=np.float32)), None
        elif self.class_bank is None:
            raise ValueError("these heads tune the tower's classifier: the examples need the ConSE class bank")
        else:
            conse, logits = heads.tuned_conse(pooled, torch.from_numpy(np.asarray(self.class_bank, dtype=np.float32)))
        return heads.encode_image(conse, pooled), logits

    @torch.inference_mode()
    def embed_all(self, heads: DualHeads, batch_size: int = EMBED_BATCH) -> torch.Tensor:
        """Unit-norm embeddings of every photo, ``batch_size`` at a time (evaluation: no gradients)."""
        parts = [self.embed(heads, slice(start, start + batch_size)) for start in range(0, len(self.conse), batch_size)]
        return torch.cat(parts) if parts else torch.zeros((0, heads.config.dim))

    def _tower_input(self, heads: DualHeads, idx: np.ndarray | slice, mirror: np.ndarray | None) -> np.ndarray:
        """What the heads' pooled-feature term reads for rows ``idx``: frozen pooled features, or maps."""
        if heads.tower_head is None:
            features = self.pooled[idx]
        elif self.maps is None:
            raise ValueError("these heads tune the tower's last layers, but the examples hold no input maps")
        else:
            features = np.array(self.maps[idx], dtype=np.float32)
            if mirror is not None and mirror.any():
                if self.mirrored_maps is None:
                    raise ValueError("mirroring needs the examples' mirror-image maps")
                features[mirror] = self.mirrored_maps[np.asarray(idx)[mirror]]
        return np.asarray(features, dtype=np.float32)


@dataclass
class TrainingExamples:
    """A client's or a trainer's cached inputs: ConSE embeddings, pooled features, class ids."""

    conse: np.ndarray  # (n, dim) ConSE image embeddings (frozen)
    pooled: np.ndarray  # (n, 1280) pooled tower features (frozen)
    labels: np.ndarray  # (n,) class index into the phrase bank
    phrases: PhraseBank
    maps: np.ndarray | None = None  # (n, c, h, w) input maps of the first tuned tower layer, float16
    small_share: float = 0.0  # share of thumbnails among these photos (which photos trained terms fit)
    mirrored_maps: np.ndarray | None = None  # maps of the mirror images: training flips photos at random
    logits: np.ndarray | None = None  # (n, 1000) the frozen tower's ImageNet logits (distillation targets)
    class_bank: np.ndarray | None = None  # (1000, dim) ConSE class-name bank (heads with a tuned classifier)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> ImageExamples:
        """The image side of these examples."""
        return ImageExamples(self.conse, self.pooled, self.maps, self.mirrored_maps, self.class_bank)


@dataclass
class TrainConfig:
    """Optimiser settings; the defaults are what `train-heads` uses (federated runs set their own)."""

    epochs: int = 10
    steps: int = 0  # > 0: exactly this many optimiser steps, passing over the data as often as needed
    batch_size: int = 256
    lr: float = 1e-3
    tower_lr_scale: float = 1.0  # the tuned tower layers learn at lr x this (pretrained weights move less)
    anchor: float = 1e-2  # L2 pull of the residual weights toward zero (= toward ConSE)
    proximal_mu: float = 0.0  # FedProx: pull toward the round's global weights
    # Heads with a tuned classifier: weight of the KL divergence from the frozen tower's class probabilities
    # to the tuned ones, both softened by the ConSE temperature (learning without forgetting: it keeps the
    # classes a trainer's photos do not show where the tower had them, with no one else's data)
    distill: float = 0.0
    loss: str = "clip"  # one of LOSSES
    seed: int = 0
    history: list[float] = field(default_factory=list)


def train_epochs(
    heads: DualHeads,
    data: TrainingExamples,
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``heads`` in place; returns the mean loss of the last epoch.

    With mirror-image maps in ``data`` each photo is read mirrored with probability 1/2 per step.
    """
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.distill and heads.tower_classifier is not None and data.logits is None:
        raise ValueError("distillation needs the frozen tower's logits of the examples")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    loss_fn = ClipLoss() if config.loss == "clip" else ClassCrossEntropy()
    trainable = [p for p in heads.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(_parameter_groups(heads, trainable, config), lr=config.lr, weight_decay=0.0)
    global_params = [p.detach().clone() for p in trainable] if config.proximal_mu else None
    images = data.images
    heads.train()
    epoch_loss = float("nan")
    total_steps = config.steps or config.epochs * -(-len(data) // config.batch_size)
    steps, epoch = 0, 0
    while steps < total_steps:
        order = rng.permutation(len(data))
        losses = []
        for start in range(0, len(order), config.batch_size):
            if steps == total_steps:
                break
            steps += 1
            idx = order[start : start + config.batch_size]
            labels = data.labels[idx]
            text = torch.from_numpy(_phrase_targets(data.phrases, labels, config.loss, rng))
            mirror = rng.random(len(idx)) < 0.5 if images.mirrored_maps is not None else None
            image_emb, logits = images.embed_with_logits(heads, idx, mirror)
            text_emb = heads.encode_text(text)
            loss = loss_fn(image_emb, text_emb, heads.logit_scale, torch.from_numpy(labels))
            total = loss + config.anchor * heads.residual_norm()
            if config.distill and logits is not None:
                frozen = torch.from_numpy(np.asarray(data.logits[idx], dtype=np.float32))
                total = total + config.distill * distillation_loss(logits, frozen, heads.config.conse_temperature)
            if global_params is not None:
                total = total + config.proximal_mu / 2 * sum(
                    ((p - g) ** 2).sum() for p, g in zip(trainable, global_params, strict=True)
                )
            optimiser.zero_grad()
            total.backward()
            optimiser.step()
            losses.append(loss.item())
        epoch_loss = float(np.mean(losses))
        config.history.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
        epoch += 1
    heads.eval()
    return epoch_loss


def _phrase_targets(phrases: PhraseBank, labels: np.ndarray, loss: str, rng: np.random.Generator) -> np.ndarray:
    """The raw phrase embeddings a batch is scored against: a random phrase of each photo's class
    ("clip"), or of every class ("class-ce"; drawn afresh each step, as the paper protocol draws)."""
    return phrases.sample(labels if loss == "clip" else np.arange(phrases.class_count), rng)


def _parameter_groups(heads: DualHeads, trainable: list[torch.nn.Parameter], config: TrainConfig) -> list[dict]:
    """``trainable`` split in two groups: the tuned tower layers at ``lr x tower_lr_scale``, the rest at ``lr``."""
    tower = {id(p) for module in (heads.tower_head, heads.tower_blocks) if module is not None
             for p in module.parameters()}
    groups = [{"params": [p for p in trainable if id(p) not in tower]},
              {"params": [p for p in trainable if id(p) in tower], "lr": config.lr * config.tower_lr_scale}]
    return [g for g in groups if g["params"]]
