"""The hf-clip encoder on a tiny randomly initialised CLIP saved to a temp folder (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from middleware.encoder import create_encoder
from pmirs.errors import ModelUnavailableError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-clip")
    words = ["[PAD]", "[UNK]", "a", "photo", "of", "cat", "dog", "car"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(path)
    config = CLIPConfig(
        text_config={"vocab_size": len(words), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    return path


def test_tiny_clip_encodes_texts_and_images(tiny_clip_dir):
    encoder = create_encoder(f"hf-clip:{tiny_clip_dir}")
    texts = encoder.encode_texts(["a photo of a cat", "a dog", "car"])
    images = encoder.encode_images([Image.new("RGB", (64, 48), (200, 10, 10)), Image.new("L", (20, 20), 128)])
    assert encoder.dim == 16 and texts.shape == (3, 16) and images.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(["a dog"])[0], texts[1], atol=1e-5)
    assert encoder.version.startswith("hf-clip-")


def test_missing_clip_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no CLIP model"):
        create_encoder(f"hf-clip:{tmp_path / 'absent'}")
