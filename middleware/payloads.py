"""What an item carries inside its sealed blob, and how inputs become items.

An item's private payload is a small JSON document: kind, caption or text, the image bytes
(JPEG/PNG) and private metadata. Nothing in it ever reaches the retriever unencrypted (unless the
benchmark-only plain pipeline is used).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from middleware.encoder.preprocess import to_rgb
from pmirs.errors import InvalidImageError, InvalidMessage
from pmirs.protocol.encoding import length_prefixed

PAYLOAD_VERSION = 1
MAX_KEPT_IMAGE_BYTES = 2 * 1024 * 1024  # larger originals are re-encoded
REENCODE_MAX_SIDE = 1024
ImageInput = Image.Image | str | Path | bytes


@dataclass
class ImageItem:
    """An image to index: the picture, its caption, and metadata the server may (public) or may not see."""

    image: ImageInput
    caption: str = ""
    public: dict[str, Any] | None = None
    private: dict[str, Any] | None = None


@dataclass
class LoadedImage:
    """A decoded image plus the exact bytes that will be stored (sealed)."""

    image: Image.Image
    data: bytes
    format: str  # "jpeg" or "png"


@dataclass
class RetrievedItem:
    """One decrypted search result."""

    id: str
    score: float
    kind: str  # "image" or "text"
    caption: str | None = None
    text: str | None = None
    image_bytes: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # private metadata (was encrypted)
    public: dict[str, Any] = field(default_factory=dict)  # public metadata (the server saw it)

    def __repr__(self) -> str:  # keep plaintext out of logs and tracebacks
        return f"RetrievedItem(id={self.id[:12]!r}, score={self.score:.4f}, kind={self.kind!r})"

    def open_image(self) -> Image.Image:
        """The image as a PIL image (``ValueError`` for a text item)."""
        if self.image_bytes is None:
            raise ValueError("this item has no image")
        return Image.open(io.BytesIO(self.image_bytes))


def as_image_item(value: ImageItem | tuple | Mapping) -> ImageItem:
    """Accept ``ImageItem``, ``(image, caption[, public[, private]])`` or a dict with those keys."""
    if isinstance(value, ImageItem):
        return value
    if isinstance(value, Mapping):
        return ImageItem(**value)
    if isinstance(value, tuple) and 1 <= len(value) <= 4:
        return ImageItem(*value)
    raise TypeError("images must be ImageItem, (image, caption, public_metadata) tuples or dicts")


def _describe(source: ImageInput) -> str:
    return str(source) if isinstance(source, str | Path) else type(source).__name__


def check_image(source: ImageInput) -> None:
    """Cheap validation (header and structure) so bad inputs fail before anything is sent."""
    if isinstance(source, Image.Image):
        return
    try:
        if isinstance(source, bytes):
            with Image.open(io.BytesIO(source)) as probe:
                probe.verify()
        elif isinstance(source, str | Path):
            with Image.open(source) as probe:
                probe.verify()
        else:
            raise InvalidImageError(f"unsupported image input of type {type(source).__name__}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"not a readable image: {_describe(source)}") from e


def load_image(source: ImageInput) -> LoadedImage:
    """Decode an input and choose the stored bytes: the original JPEG/PNG when small, else re-encoded."""
    try:
        if isinstance(source, Image.Image):
            return LoadedImage(to_rgb(source), _encode(source), "png" if _has_alpha(source) else "jpeg")
        raw = Path(source).read_bytes() if isinstance(source, str | Path) else source
        if not isinstance(raw, bytes):
            raise InvalidImageError(f"unsupported image input of type {type(source).__name__}")
        with Image.open(io.BytesIO(raw)) as opened:
            fmt = (opened.format or "").lower()
            opened.load()
            rgb = to_rgb(opened)
            if fmt in ("jpeg", "png") and len(raw) <= MAX_KEPT_IMAGE_BYTES:
                return LoadedImage(rgb, raw, fmt)
            return LoadedImage(rgb, _encode(opened), "png" if _has_alpha(opened) else "jpeg")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"not a readable image: {_describe(source)}") from e


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)


def _encode(image: Image.Image) -> bytes:
    image = image.copy()
    image.thumbnail((REENCODE_MAX_SIDE, REENCODE_MAX_SIDE))
    out = io.BytesIO()
    if _has_alpha(image):
        image.convert("RGBA").save(out, format="PNG", optimize=True)
    else:
        to_rgb(image).save(out, format="JPEG", quality=90)
    return out.getvalue()


def image_id_content(loaded: LoadedImage, caption: str) -> bytes:
    """What an image item's keyed id is computed from: same picture + caption -> same id."""
    return length_prefixed(b"pmirs/item/image", loaded.data, caption)


def text_id_content(text: str) -> bytes:
    """What a text item's keyed id is computed from."""
    return length_prefixed(b"pmirs/item/text", text)


def image_payload(loaded: LoadedImage, caption: str, private: Mapping[str, Any] | None) -> bytes:
    """The private JSON payload of an image item."""
    return _dump({"v": PAYLOAD_VERSION, "kind": "image", "caption": caption, "format": loaded.format,
                  "image": base64.b64encode(loaded.data).decode("ascii"), "metadata": dict(private or {})})


def text_payload(text: str, private: Mapping[str, Any] | None) -> bytes:
    """The private JSON payload of a text item."""
    return _dump({"v": PAYLOAD_VERSION, "kind": "text", "text": text, "metadata": dict(private or {})})


def _dump(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError("private metadata must be JSON-serialisable") from e


def parse_payload(item_id: str, score: float, payload: bytes, public: dict[str, Any]) -> RetrievedItem:
    """Turn a decrypted payload back into a :class:`RetrievedItem`."""
    try:
        doc = json.loads(payload)
        kind = doc["kind"]
        image = base64.b64decode(doc["image"], validate=True) if kind == "image" else None
        return RetrievedItem(id=item_id, score=score, kind=kind, caption=doc.get("caption"),
                             text=doc.get("text"), image_bytes=image, metadata=doc.get("metadata") or {},
                             public=dict(public or {}))
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidMessage() from e
