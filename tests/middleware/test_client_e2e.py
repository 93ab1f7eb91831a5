"""End to end with the real lite encoder: private top-k through the retriever equals plain top-k."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from client_harness import make_keystore
from PIL import Image, ImageDraw

from middleware.client import PrivacyMiddleware
from retriever.testing import ServiceProcess

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = [pytest.mark.slow, pytest.mark.service]

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30)}


def shape(colour: str, circle: bool) -> Image.Image:
    image = Image.new("RGB", (96, 96), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if circle else draw.rectangle)((16, 16, 80, 80), fill=COLOURS[colour])
    return image


def test_lite_encoder_private_equals_plain(tmp_path: Path) -> None:
    from middleware.encoder import create_encoder

    encoder = create_encoder("lite")
    images = [(shape(c, circle), f"a {c} {'circle' if circle else 'square'}")
              for c in COLOURS for circle in (False, True)]
    texts = ["a dog playing in the park", "a bowl of fruit", "a red sports car", "a blue ocean wave"]
    with ServiceProcess(tmp_path / "data") as service:
        keystore = make_keystore(tmp_path, "alice", service)
        with PrivacyMiddleware(service.url, keystore, encoder) as pm:
            pm.create_collection("mixed")
            pm.index_images("mixed", [(img, cap, {"kind": "image"}) for img, cap in images])
            pm.index_texts("mixed", texts, public_metadata={"kind": "text"})
            plain = np.concatenate([encoder.encode_images([img for img, _ in images]),
                                    encoder.encode_texts(texts)])
            labels = [cap for _, cap in images] + texts
            for query in ("a red circle", "a photo of a car", "something blue"):
                result = pm.query_text("mixed", query, k=5)
                scores = plain @ encoder.encode_texts([query])[0]
                expected = list(np.argsort(-scores, kind="stable")[:5])
                got = [labels.index(i.caption if i.kind == "image" else i.text) for i in result.items]
                assert got == expected
                assert [i.score for i in result.items] == pytest.approx(list(scores[expected]), abs=1e-4)
            by_image = pm.query_image("mixed", images[3][0], k=1, where={"kind": "image"})
            assert by_image.items[0].caption == images[3][1]
            assert by_image.items[0].score == pytest.approx(1.0, abs=1e-4)
