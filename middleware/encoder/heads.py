"""Trainable heads that map both towers into the shared space, starting exactly at ConSE.

Every trainable layer is a zero-initialised residual: an untrained head is the zero-shot base
(ConSE image embedding, MiniLM text embedding, both centred), so training can only move away from
it as far as the data and the anchor toward zero allow.

Centring subtracts a fixed share of the mean embedding of the 1000 ImageNet class names from both
sides. Every caption shares that "a photo of a thing" direction; removing it widens the cosine
gaps between different things, which the fixed softmax(100 * cosine) of the paper's protocol and
any similarity threshold depend on. It uses no benchmark data: the mean is over ImageNet names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from middleware.encoder.conse import conse_mixture
from middleware.encoder.preprocess import DEFAULT_RESAMPLING
from middleware.encoder.small_photos import DEFAULT_INPUT_SIZE, SmallPhotoLayer, check_photo_kind
from middleware.encoder.towers import IMAGENET_CLASSES, TOWER_BLOCKS, tower_architecture
from pmirs.errors import ModelUnavailableError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_HEADS_PATH = WEIGHTS_DIR / "lite-heads.pt"  # the zero-shot base: never saw a benchmark class
# The best federated run (README, "Federated fine-tuning"): FedAvg over 6 clients on 64-px photos of the
# 59 benchmark classes, from the base (tuned last five blocks, conv layer and classifier). Its image parts
# apply to thumbnails; sharp photos get the base, thumbnails get the generic direction back (tuned_offset)
# so both kinds rank together and embed as the mean with their mirror image (mirror_average).
FEDERATED_HEADS_PATH = WEIGHTS_DIR / "fed-heads-802f652c048a.pt"
DEFAULT_HEADS_PATH = FEDERATED_HEADS_PATH  # what encoders load when no heads are named
# Stage 5 onward (blocks 11-15): block 11 downsamples, so its input maps are 112x14x14 at 224 px
# (~44 KB a photo); the later blocks read 7x7 maps (~19 KB a photo for the first of them).
MAX_TUNED_BLOCKS = 5


@dataclass
class HeadsConfig:
    """Shape and zero-shot settings of the lite encoder's heads."""

    text_dim: int = 384  # all-MiniLM-L6-v2 output size
    image_feature_dim: int = 1280  # EfficientNet-Lite0 pooled features
    dim: int = 384  # shared embedding space (= text space: ConSE lives there)
    conse_top_k: int = 10  # ImageNet classes kept per image in the ConSE mixture
    conse_temperature: float = 1.0  # softmax temperature on the tower's logits
    center_strength: float = 0.0  # how much of the mean class-name embedding both sides subtract
    image_size: int = 224  # input resolution of the image tower (photos are resized to it)
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP's initial temperature
    tower_head: bool = False  # also tune the image tower's last conv layer (reads pre-head maps)
    tower_blocks: int = 0  # with tower_head: also tune this many last MBConv blocks (reads their input maps)
    # with tower_head: also tune a copy of the tower's ImageNet classifier on the tuned layers' output;
    # ConSE then reads it for tuned photos (DualHeads.tuned_conse) instead of the frozen tower's
    tower_classifier: bool = False
    small_photo_max_side: int = 0  # >0: photos this small take the small-photo path (see small_photos)
    small_photo_input: int = DEFAULT_INPUT_SIZE  # the tower's input size on that path
    small_photo_resample: str = DEFAULT_RESAMPLING  # the filter that upsamples them to it
    tuned_photos: str = "all"  # photos the image-side residual terms were trained on (small_photos.PHOTO_KINDS)
    tuned_offset: float = 0.0  # how much of the generic direction tuned photos get back (see DualHeads.encode_image)
    mirror_average: bool = False  # tuned photos embed as the mean with their mirror image (see DualHeads.encode_image)
    extra: dict = field(default_factory=dict)  # free-form notes (training data, metrics)

    def __post_init__(self) -> None:
        check_photo_kind(self.tuned_photos, "tuned_photos")
        if not 0 <= self.tower_blocks <= MAX_TUNED_BLOCKS or (self.tower_blocks and not self.tower_head):
            raise ValueError(f"tower_blocks must be 0..{MAX_TUNED_BLOCKS}, and > 0 only with tower_head")
        if self.tower_classifier and not self.tower_head:
            raise ValueError("tower_classifier reads the tuned tower layers' output: it needs tower_head")

    @property
    def first_tuned_block(self) -> int:
        """Index of the first tuned MBConv block: cached maps are its input (16 = the pre-head maps)."""
        return TOWER_BLOCKS - self.tower_blocks


class TowerHead(nn.Module):
    """A trainable copy of the image tower's last conv layer (1x1 conv 320->1280, BN, ReLU6, pool).

    Tuning it adapts the tower to the photos at hand (e.g. 64-px thumbnails) where a linear head on
    frozen pooled features cannot. Its BatchNorm keeps the tower's running statistics (always
    eval mode): client batches are too small and too skewed to re-estimate them.
    """

    def __init__(self, in_channels: int = 320, out_channels: int = 1280) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3).eval()  # never in training mode, even before .train()

    def copy_from_tower(self, model: nn.Module) -> None:
        """Start from the pretrained tower's own conv head (an EfficientNet-Lite ``_conv_head``/``_bn1``)."""
        with torch.no_grad():
            self.conv.weight.copy_(model._conv_head.weight)
            self.bn.load_state_dict(model._bn1.state_dict())
            self.bn.eps = model._bn1.eps

    def train(self, mode: bool = True) -> TowerHead:
        super().train(mode)
        self.bn.eval()
        return self

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features from (n, 320, h, w) pre-head maps (7x7 at 224 px)."""
        return F.relu6(self.bn(self.conv(maps))).mean(dim=(2, 3))


class TowerBlocks(nn.Module):
    """Trainable copies of the image tower's last MBConv blocks (in front of the :class:`TowerHead`).

    Built from the architecture alone (no weights); :meth:`copy_from_tower` starts them at the
    pretrained tower. Like the tower head, their BatchNorms keep the tower's statistics.
    """

    def __init__(self, count: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(copy.deepcopy(tower_architecture()._blocks[TOWER_BLOCKS - count :]))
        self.train(False)

    def copy_from_tower(self, model: nn.Module) -> None:
        """Start from the pretrained tower's own last blocks (an EfficientNet-Lite ``_blocks``)."""
        self.blocks.load_state_dict(nn.ModuleList(model._blocks[TOWER_BLOCKS - len(self.blocks) :]).state_dict())

    def train(self, mode: bool = True) -> TowerBlocks:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Pre-head maps from the input maps of the first of these blocks."""
        for block in self.blocks:
            maps = block(maps, drop_connect_rate=0.0)
        return maps


class DualHeads(nn.Module):
    """Residual projections for text and image embeddings plus CLIP's learnable temperature."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.text_residual = nn.Linear(config.text_dim, config.dim)
        self.image_residual = nn.Linear(config.dim, config.dim)
        self.image_features = nn.Linear(config.image_feature_dim, config.dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.register_buffer("center", torch.zeros(config.dim))
        self.tower_head = TowerHead() if config.tower_head else None
        self.tower_blocks = TowerBlocks(config.tower_blocks) if config.tower_blocks else None
        self.tower_classifier = (nn.Linear(config.image_feature_dim, IMAGENET_CLASSES) if config.tower_classifier
                                 else None)
        # Adapted by `train-heads` before the CLIP step, then frozen: never trained or exchanged here.
        self.small_photo_head = TowerHead().requires_grad_(False) if config.small_photo_max_side else None
        for layer in (self.text_residual, self.image_residual, self.image_features):
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def encode_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        """Unit-norm shared-space text embeddings from MiniLM embeddings."""
        base = text_emb - self.config.center_strength * self.center
        return F.normalize(base + self.text_residual(text_emb), dim=-1)

    def encode_image(self, conse_emb: torch.Tensor, pooled: torch.Tensor, tuned: torch.Tensor | None = None,
                     mirrored: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Unit-norm shared-space image embeddings from the ConSE embedding and pooled features.

        ``tuned`` (one bool per photo, default all) says which photos get the trained residual terms
        (ConSE residual, pooled-feature term); the others keep the zero-shot base embedding, for
        photos of a kind those terms were not trained on (``tuned_photos``). ``mirrored`` (the same
        two inputs from each photo's mirror image) makes tuned photos the mean of both views'
        embeddings (``mirror_average``; test-time flip), before the offset below.
        """
        embedding = self._image_embedding(conse_emb, pooled, tuned)
        if mirrored is not None:
            both = F.normalize(embedding + self._image_embedding(*mirrored, tuned), dim=-1)
            rows = torch.ones(len(embedding), dtype=torch.bool) if tuned is None else tuned.bool()
            embedding = torch.where(rows.unsqueeze(-1), both, embedding)
        if not self.config.tuned_offset:  # no offset (every training run): skip the direction's text pass
            return embedding
        return shift_toward(embedding, self.generic_direction(), self.config.tuned_offset, tuned)

    def _image_embedding(self, conse_emb: torch.Tensor, pooled: torch.Tensor,
                         tuned: torch.Tensor | None) -> torch.Tensor:
        base = conse_emb - self.config.center_strength * self.center
        residual = self.image_residual(conse_emb) + self.image_features(F.normalize(pooled, dim=-1))
        if tuned is not None:
            residual = residual * tuned.to(residual.dtype).unsqueeze(-1)
        return F.normalize(base + residual, dim=-1)

    def tuned_conse(self, pooled: torch.Tensor, class_bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ConSE embeddings through the tuned classifier from the tuned layers' pooled features, and its
        ImageNet logits (with gradients: training moves which class names a photo's embedding mixes)."""
        logits = self.tower_classifier(pooled)
        return conse_mixture(logits, class_bank, self.config.conse_top_k, self.config.conse_temperature), logits

    def generic_direction(self) -> torch.Tensor:
        """The shared-space embedding of the mean ImageNet class name: what every caption shares.

        Contrastive fine-tuning removes much of it from the tuned photos' embeddings (only cosine
        gaps count in its loss), so their cosines with any text drop below the base's; adding it back
        (``tuned_offset``) puts photos of both kinds on one scale in a mixed collection.
        """
        return self.encode_text(self.center.unsqueeze(0))[0]

    def pooled_features(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features for the image residual: through the tuned tower blocks and head when there
        are some (``features`` are then the input maps of the first tuned block), else ``features`` as
        they are (frozen pooled)."""
        if self.tower_head is None:
            return features
        if features.dim() != 4:
            raise ValueError("these heads tune the tower's last layers: pass the input maps of block "
                             f"{self.config.first_tuned_block} (n, c, h, w)")
        if self.tower_blocks is not None:
            features = self.tower_blocks(features)
        return self.tower_head(features)

    @property
    def maps_channels(self) -> int | None:
        """Channels of the maps :meth:`pooled_features` reads (None: it reads pooled features)."""
        if self.tower_head is None:
            return None
        if self.tower_blocks is not None:
            return self.tower_blocks.blocks[0]._block_args.input_filters
        return self.tower_head.conv.in_channels

    @property
    def small_photo_layer(self) -> SmallPhotoLayer | None:
        """The tower layer adapted to small photos, if these heads carry one."""
        if self.small_photo_head is None:
            return None
        return SmallPhotoLayer(self.small_photo_head, self.config.small_photo_max_side, self.config.small_photo_input,
                               self.config.small_photo_resample)

    def residual_norm(self) -> torch.Tensor:
        """Squared size of everything the heads add to the zero-shot base (for regularisation)."""
        return sum(
            (layer.weight**2).sum() + ((layer.bias**2).sum() if layer.bias is not None else 0.0)
            for layer in (self.text_residual, self.image_residual, self.image_features)
        )


def shift_toward(embedding: torch.Tensor, direction: torch.Tensor, offset: float,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
    """Unit-norm ``embedding + offset * direction`` for the ``rows`` flagged (default all), others as given."""
    if not offset:
        return embedding
    shift = offset * direction.expand_as(embedding)
    if rows is not None:
        shift = shift * rows.to(embedding.dtype).unsqueeze(-1)
    return F.normalize(embedding + shift, dim=-1)


def create_base_heads(config: HeadsConfig, class_bank: np.ndarray) -> DualHeads:
    """Untrained heads (= the zero-shot base) with the centre taken from the class-name bank."""
    heads = DualHeads(config)
    with torch.no_grad():
        heads.center.copy_(torch.from_numpy(np.asarray(class_bank, dtype=np.float32).mean(axis=0)))
    return heads


def with_tower_head(heads: DualHeads, tower_model: nn.Module, blocks: int = 0, classifier: bool = False) -> DualHeads:
    """A copy of ``heads`` that also tunes the tower's last conv layer (and its last ``blocks`` MBConv
    blocks, and with ``classifier`` its ImageNet classifier), starting from the tower's own weights (the
    conv layer from the small-photo layer when ``heads`` carry one, as tuning data are thumbnails).
    Tuned parts ``heads`` already have are kept."""
    config = heads.config
    if heads.tower_head is not None and config.tower_blocks == blocks and config.tower_classifier == classifier:
        return heads
    extended = DualHeads(replace(config, tower_head=True, tower_blocks=blocks, tower_classifier=classifier))
    extended.load_state_dict(heads.state_dict(), strict=False)
    if heads.tower_head is None:
        extended.tower_head.copy_from_tower(tower_model)
        if heads.small_photo_head is not None:
            extended.tower_head.load_state_dict(heads.small_photo_head.state_dict())
    if blocks and config.tower_blocks != blocks:
        extended.tower_blocks.copy_from_tower(tower_model)
    if classifier and heads.tower_classifier is None:
        extended.tower_classifier.load_state_dict(tower_model._fc.state_dict())
    return extended


@dataclass
class HeadsCheckpoint:
    """What a heads file holds: config, weights, and the ConSE class-name bank."""

    config: HeadsConfig
    state_dict: dict[str, torch.Tensor]
    class_bank: np.ndarray  # (1000, text_dim) unit rows, ImageNet-1k class order
    version: str

    def build(self) -> DualHeads:
        """Instantiate the heads with these weights (eval mode)."""
        heads = DualHeads(self.config)
        heads.load_state_dict(self.state_dict)
        return heads.eval()

    def reconfigured(self, **changes: object) -> HeadsCheckpoint:
        """These weights under a config with ``changes`` (in memory: ``version`` still names the file read)."""
        return replace(self, config=replace(self.config, **changes))


def save_heads(path: str | Path, heads: DualHeads, class_bank: np.ndarray) -> str:
    """Write a heads checkpoint; returns its version (a content hash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "pmirs-lite-heads/1",
        "config": json.dumps(asdict(heads.config), sort_keys=True),
        "state_dict": {k: v.detach().cpu().clone() for k, v in heads.state_dict().items()},
        "class_bank": torch.from_numpy(np.asarray(class_bank, dtype=np.float16)),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return heads_version(path)


def save_reconfigured(checkpoint: HeadsCheckpoint, out: str | Path, **changes: object) -> str:
    """Save ``checkpoint``'s weights under a config with ``changes`` applied (calibrated values, not
    training); returns the new version (the file's hash changes with its config)."""
    return save_heads(out, checkpoint.reconfigured(**changes).build(), checkpoint.class_bank)


def heads_version(path: str | Path) -> str:
    """Short content hash that names a heads file (stored vectors record it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_heads(path: str | Path | None = None) -> HeadsCheckpoint:
    """Read a heads checkpoint, with a clear error when it is missing or not ours."""
    path = Path(path) if path is not None else DEFAULT_HEADS_PATH
    if not path.is_file():
        raise ModelUnavailableError(
            f"encoder heads not found: {path} (the repo ships {DEFAULT_HEADS_PATH.name} and the zero-shot base "
            f"{BASE_HEADS_PATH.name}; the README says how each is re-created)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != "pmirs-lite-heads/1":
            raise ValueError("unknown format")
        config = HeadsConfig(**json.loads(payload["config"]))
        bank = payload["class_bank"].float().numpy()
    except Exception as exc:
        raise ModelUnavailableError(f"not a PMIRS heads checkpoint: {path} ({exc})") from exc
    return HeadsCheckpoint(config, payload["state_dict"], bank, heads_version(path))
