"""The wire form of a vector that client and retriever share: base64url of little-endian float32."""

from __future__ import annotations

import numpy as np

from pmirs.errors import InvalidMessage
from pmirs.protocol.encoding import b64url_decode, b64url_encode


def encode_vector(vector: np.ndarray) -> str:
    """float32 little-endian bytes as base64url."""
    return b64url_encode(np.asarray(vector, dtype="<f4").tobytes())


def decode_vector(text: object) -> np.ndarray:
    """Inverse of :func:`encode_vector`; ``ValueError`` for anything that is not such a vector."""
    try:
        raw = b64url_decode(text)
    except InvalidMessage as e:
        raise ValueError("vector must be base64url of float32 bytes") from e
    if not raw or len(raw) % 4:
        raise ValueError("vector must be base64url of float32 bytes")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
