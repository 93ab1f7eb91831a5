"""``hf-clip:PATH`` encoder: any local Hugging Face CLIP model directory, for users with real CLIP weights."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from middleware.encoder.base import Encoder, l2_normalise
from middleware.encoder.preprocess import images_to_array
from pmirs.errors import ModelUnavailableError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _projected(output: object) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is projected; older ones a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFClipEncoder(Encoder):
    """A transformers ``CLIPModel`` loaded from a directory, with PIL/numpy preprocessing."""

    name = "hf-clip"

    def __init__(self, model_dir: str | Path) -> None:
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"no CLIP model at {path}: expected a directory with config.json")
        try:
            from transformers import AutoTokenizer, CLIPModel

            self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise ModelUnavailableError(f"cannot load CLIP model from {path}: {exc}") from exc
        self.dim = int(self.model.config.projection_dim)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self._mean, self._std = self._normalisation(path)
        weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        digest = hashlib.sha256(b"".join(w.read_bytes()[:1 << 20] for w in weights) or path.name.encode())
        self._version = f"hf-clip-{digest.hexdigest()[:12]}"

    @property
    def version(self) -> str:
        return self._version

    @staticmethod
    def _normalisation(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
        config_path = path / "preprocessor_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        mean = tuple(v * 255 for v in config.get("image_mean", CLIP_MEAN))
        std = tuple(v * 255 for v in config.get("image_std", CLIP_STD))
        return mean, std

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
            )
            chunks.append(_projected(out).numpy())
        return l2_normalise(np.concatenate(chunks))

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), batch_size):
            batch = images_to_array(images[start : start + batch_size], self.image_size, self._mean, self._std)
            out = self.model.get_image_features(pixel_values=torch.from_numpy(batch))
            chunks.append(_projected(out).numpy())
        return l2_normalise(np.concatenate(chunks))
