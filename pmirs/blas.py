"""One BLAS thread for small linear algebra on a busy machine.

OpenBLAS spreads even small factorisations over every core, and its threads spin while they wait.
On a 2-core machine that something else keeps busy, that made a 96x96 QR take about 80 ms instead
of 1 ms, and a 384x384 SVD 3 s instead of 0.04 s. Such sizes gain nothing from threads anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with numpy's BLAS (and LAPACK) limited to one thread."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
