"""Keyed, similarity-preserving obfuscation of embeddings before they leave the trusted side.

The retriever must rank vectors by cosine similarity without learning the embedding space. A
secret orthogonal map does exactly that: dot products and norms are unchanged, so search quality
is identical, while the stored coordinates no longer live in the public encoder's space (an
attacker cannot run the public encoder on a guess and compare). The map is a secret permutation of
the dimensions followed by ``n_blocks`` independent random orthogonal blocks (block-diagonal, so
projecting is ``O(dim^2 / n_blocks)`` instead of ``O(dim^2)``).

Everything derives from one 32-byte key with HKDF, so the trusted side stores only the key.

Limits (be honest about them): an orthogonal map preserves all pairwise similarities, so anyone
holding a few (plain, projected) pairs can solve for it; the optional noise (below) trades a
little ranking accuracy for making such exact recovery and exact distance leakage impossible.
"""

from __future__ import annotations

import numpy as np

from pmirs.blas import single_thread_blas
from pmirs.protocol import crypto

KEY_BYTES = 32
_SEED_BYTES = 32  # 256-bit seeds for numpy's PCG64


def _info(version: int, dim: int, n_blocks: int, label: str) -> bytes:
    return f"pmirs/obfuscation/v{version}/dim={dim}/blocks={n_blocks}/{label}".encode()


def _rng(key: bytes, info: bytes) -> np.random.Generator:
    """A numpy generator seeded with 256 HKDF bits: reproducible from the key, independent per label."""
    seed = int.from_bytes(crypto.hkdf_sha256(key, _SEED_BYTES, salt=None, info=info), "big")
    return np.random.Generator(np.random.PCG64(seed))


def _random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the sign fix (Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q *= np.sign(np.diag(r))
    return q


class BlockProjection:
    """A secret, keyed rotation of ``dim``-dimensional embeddings.

    Args:
        key: 32 secret bytes (``CollectionKeys.projection_key``).
        dim: embedding dimension; must be divisible by ``n_blocks``.
        n_blocks: number of independent orthogonal blocks after the permutation.
        noise: 0 for an exact isometry. Above 0, vectors projected with ``for_storage=True`` get
            SAP-style noise (Fuchs et al., "Approximate Distance-Comparison-Preserving Symmetric
            Encryption", 2022): ``y = R x + ||x|| * noise * u`` with ``u`` drawn fresh per vector,
            uniformly from the unit ball (direction: normalised Gaussian; radius ``U^(1/dim)``), then
            ``y`` is rescaled to unit norm. Queries (``for_storage=False``) are projected without
            noise: they are never stored, and noising both sides would double the ranking error.
        version: the key version, mixed into every derivation label.

    ``project`` is deterministic for given ``(key, dim, n_blocks, version)`` when no noise is added.
    """

    def __init__(self, key: bytes, dim: int, n_blocks: int = 4, noise: float = 0.0, version: int = 1) -> None:
        if not isinstance(key, bytes):
            raise TypeError("key must be bytes")
        if len(key) != KEY_BYTES:
            raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
        for name, value in (("dim", dim), ("n_blocks", n_blocks), ("version", version)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int")
        if dim % n_blocks:
            raise ValueError(f"dim ({dim}) must be divisible by n_blocks ({n_blocks})")
        if not 0.0 <= float(noise) < 1.0:
            raise ValueError("noise must be in [0, 1)")
        self.dim = dim
        self.n_blocks = n_blocks
        self.noise = float(noise)
        self.version = version
        self.block_size = dim // n_blocks
        self._permutation = _rng(key, _info(version, dim, n_blocks, "permutation")).permutation(dim)
        self._inverse_permutation = np.argsort(self._permutation)
        with single_thread_blas():  # on a busy machine OpenBLAS threads made this 300 ms, not 3
            self._blocks = np.stack(
                [
                    _random_orthogonal(_rng(key, _info(version, dim, n_blocks, f"block/{i}")), self.block_size)
                    for i in range(n_blocks)
                ]
            )  # (n_blocks, b, b), float64

    def __repr__(self) -> str:
        return (
            f"BlockProjection(dim={self.dim}, n_blocks={self.n_blocks}, noise={self.noise}, "
            f"version={self.version})"
        )

    def _as_rows(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        arr = np.asarray(x)
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.dim:
            raise ValueError(f"expected shape ({self.dim},) or (n, {self.dim}), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError("x must be a numeric array")
        return np.atleast_2d(arr).astype(np.float64), arr.ndim == 1

    def _rotate(self, rows: np.ndarray) -> np.ndarray:
        blocks = rows[:, self._permutation].reshape(len(rows), self.n_blocks, self.block_size)
        return np.einsum("kij,nkj->nki", self._blocks, blocks).reshape(len(rows), self.dim)

    def project(self, x: np.ndarray, for_storage: bool = False) -> np.ndarray:
        """Obfuscate ``(dim,)`` or ``(n, dim)`` vectors; returns float32 of the same shape.

        With ``noise == 0`` or ``for_storage=False`` this is an exact isometry (cosines and norms
        kept). With noise and ``for_storage=True``, fresh noise per vector and unit-norm output.
        """
        rows, single = self._as_rows(x)
        y = self._rotate(rows)
        if for_storage and self.noise > 0:
            y = self._add_noise(y)
        y = y.astype(np.float32)
        return y[0] if single else y

    def _add_noise(self, y: np.ndarray) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(crypto.random_bytes(_SEED_BYTES), "big")))
        n = len(y)
        direction = rng.standard_normal((n, self.dim))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        radius = rng.random((n, 1)) ** (1.0 / self.dim)
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        noisy = y + norms * self.noise * radius * direction
        return noisy / np.maximum(np.linalg.norm(noisy, axis=1, keepdims=True), 1e-12)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`project` (exactly for noise-free vectors). Trusted side only: tests, re-keying."""
        rows, single = self._as_rows(y)
        x = self._unrotate(rows).astype(np.float32)
        return x[0] if single else x

    def _unrotate(self, rows: np.ndarray) -> np.ndarray:
        blocks = rows.reshape(len(rows), self.n_blocks, self.block_size)
        unrotated = np.einsum("kji,nkj->nki", self._blocks, blocks).reshape(len(rows), self.dim)
        return unrotated[:, self._inverse_permutation]


def rekey(old: BlockProjection, new: BlockProjection, stored: np.ndarray) -> np.ndarray:
    """Move stored vectors from ``old``'s key to ``new``'s: ``new.project(old.inverse(stored))``.

    Works batch by batch, so a collection is re-projected in place while the service keeps
    answering (it stores the key version per item). No fresh noise is added: noise already in
    ``stored`` is carried over, so re-keying never accumulates distortion.
    """
    if (old.dim, old.n_blocks) != (new.dim, new.n_blocks):
        raise ValueError("old and new projections must have the same dim and n_blocks")
    rows, single = new._as_rows(stored)
    moved = new._rotate(old._unrotate(rows)).astype(np.float32)
    return moved[0] if single else moved
