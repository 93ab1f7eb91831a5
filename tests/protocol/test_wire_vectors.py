"""The shared wire form of vectors."""

from __future__ import annotations

import numpy as np
import pytest

from pmirs.protocol.vectors import decode_vector, encode_vector


def test_round_trip_is_exact_float32():
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    np.testing.assert_array_equal(decode_vector(encode_vector(vector)), vector)
    assert encode_vector(np.float64([1.0, -2.5])) == encode_vector(np.float32([1.0, -2.5]))


@pytest.mark.parametrize("bad", ["", "not base64!", "AAA", 42, None])
def test_malformed_vectors_are_value_errors(bad):
    with pytest.raises(ValueError, match="base64url of float32"):
        decode_vector(bad)
