"""CLIP-style image/text encoders for the trusted side (towers, ConSE, heads, factory)."""

from middleware.encoder.base import Encoder, l2_normalise
from middleware.encoder.factory import ENCODER_SPECS, create_encoder

__all__ = ["ENCODER_SPECS", "Encoder", "create_encoder", "l2_normalise"]
