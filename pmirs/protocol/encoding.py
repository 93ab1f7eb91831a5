"""Canonical byte encodings shared by the handshake, the envelope and the key files.

Strict on input: a decoder that accepted two spellings of the same bytes would make the wire
format malleable, so every decode failure raises ``InvalidMessage`` and nothing is normalised.
"""

from __future__ import annotations

import base64
import re

from pmirs.errors import InvalidMessage

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without ``=`` padding (RFC 4648 section 5), as JSON-friendly text."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


def b64url_decode(text: object) -> bytes:
    """Decode unpadded base64url; anything else (wrong type, padding, stray bits) is ``InvalidMessage``."""
    if not isinstance(text, str) or len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise InvalidMessage()
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as e:
        raise InvalidMessage() from e
    if b64url_encode(data) != text:  # non-zero unused bits: a second spelling of the same bytes
        raise InvalidMessage()
    return data


def length_prefixed(*parts: bytes | str | int) -> bytes:
    """Unambiguous concatenation for MAC and signature inputs.

    ``str`` is UTF-8 encoded, ``int`` becomes 8 signed big-endian bytes; every part is preceded by
    its 8-byte big-endian length, so no two different tuples encode to the same bytes.
    """
    out = []
    for part in parts:
        if isinstance(part, bool):
            raise TypeError("bool is not a valid part")
        if isinstance(part, str):
            raw = part.encode("utf-8")
        elif isinstance(part, int):
            raw = part.to_bytes(8, "big", signed=True)
        elif isinstance(part, bytes | bytearray | memoryview):
            raw = bytes(part)
        else:
            raise TypeError(f"cannot encode {type(part).__name__}")
        out.append(len(raw).to_bytes(8, "big") + raw)
    return b"".join(out)
