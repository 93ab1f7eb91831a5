"""Relevance thresholds: the lowest score an item needs to ground an answer, per item kind.

Scores are cosines in the encoder's space, and their scale depends on the heads: centring lifts
every cosine, fine-tuning spreads them. So calibrated values travel with a heads checkpoint
(``config.extra["relevance"]``, written by ``pmirs bench relevance --write-to``); an encoder
without them gets the values calibrated for the zero-shot base heads (see
:mod:`chatbot.assistant`). An explicit threshold always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RelevanceThresholds:
    """Minimum cosine of an image item and of a text item (text passages score higher)."""

    image: float
    text: float


# Calibrated for the zero-shot base heads on the demo photos and the shop's policies.
BASE_THRESHOLDS = RelevanceThresholds(image=0.78, text=0.77)


def thresholds_for(encoder: Any) -> RelevanceThresholds:
    """The encoder's calibrated thresholds, or the base heads' when it carries none."""
    calibrated = getattr(encoder, "relevance", None)
    if not calibrated:
        return BASE_THRESHOLDS
    return RelevanceThresholds(image=float(calibrated["image"]), text=float(calibrated["text"]))


def resolve_thresholds(middleware: Any, image: float | None, text: float | None) -> RelevanceThresholds:
    """Explicit values where given, else the thresholds of the middleware's encoder."""
    calibrated = thresholds_for(getattr(middleware, "encoder", None))
    return RelevanceThresholds(image=calibrated.image if image is None else image,
                               text=calibrated.text if text is None else text)
