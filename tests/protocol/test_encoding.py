"""Canonical encodings and private files: strict decoding, unambiguous MAC inputs, 0600 writes."""

from __future__ import annotations

import os
import stat

import pytest

from pmirs.errors import InvalidMessage
from pmirs.protocol.encoding import b64url_decode, b64url_encode, length_prefixed
from pmirs.protocol.files import is_private, write_private_file


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", bytes(range(256))])
def test_b64url_round_trip_without_padding(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["YQ==", "Y", "YR", "a+b/", "ab cd", "ab\n", None, 5, b"YQ"])
def test_b64url_rejects_other_spellings(text: object) -> None:
    with pytest.raises(InvalidMessage):
        b64url_decode(text)


def test_length_prefixed_is_unambiguous() -> None:
    assert length_prefixed(b"ab", b"c") != length_prefixed(b"a", b"bc")
    assert length_prefixed("a", 1) != length_prefixed(b"a", b"\x01")
    assert length_prefixed(1) == (8).to_bytes(8, "big") + (1).to_bytes(8, "big")
    with pytest.raises(TypeError):
        length_prefixed(True)
    with pytest.raises(TypeError):
        length_prefixed(1.5)  # type: ignore[arg-type]


def test_write_private_file_replaces_atomically_with_mode_0600(tmp_path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    assert not is_private(path)
    write_private_file(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert is_private(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]  # no temporary file left
    with pytest.raises(TypeError):
        write_private_file(path, "text")  # type: ignore[arg-type]
