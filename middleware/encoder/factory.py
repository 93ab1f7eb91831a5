"""The one place that builds encoders from a spec string; it wires, it holds no logic."""

from __future__ import annotations

from pathlib import Path

from middleware.encoder.base import Encoder
from pmirs.errors import ModelUnavailableError

ENCODER_SPECS = ("lite", "hf-clip:PATH")


def create_encoder(spec: str = "lite", heads_path: str | Path | None = None) -> Encoder:
    """Build an encoder.

    Args:
        spec: ``"lite"`` (EfficientNet-Lite0 + MiniLM, offline) or ``"hf-clip:PATH"`` (a local
            Hugging Face CLIP model directory).
        heads_path: a heads checkpoint for ``lite`` (default: the shipped default, see ``heads.DEFAULT_HEADS_PATH``).

    Raises:
        ModelUnavailableError: unknown spec, or a model file/package is missing.
    """
    if spec == "lite":
        from middleware.encoder.lite import LiteEncoder

        return LiteEncoder(heads_path)
    if spec.startswith("hf-clip:"):
        if heads_path is not None:
            raise ModelUnavailableError("--heads applies to the lite encoder only")
        from middleware.encoder.hf_clip import HFClipEncoder

        return HFClipEncoder(spec.removeprefix("hf-clip:"))
    raise ModelUnavailableError(f"unknown encoder {spec!r}; choose one of {', '.join(ENCODER_SPECS)}")
