"""The worker pool and the BLAS limiter shared by the kernel and risk expansion.

Both parallelise over blocks with one process-wide pool per size, and both run BLAS
inside the workers: BLAS is limited to one thread there, so the pool is the only
source of parallelism and the two never oversubscribe the cores.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["default_num_threads", "shared_pool", "blas_single_thread"]

_POOL_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}
_BLAS = None


def default_num_threads() -> int:
    """Number of worker threads used when a caller passes ``num_threads=0``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def shared_pool(n: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``n`` workers (created once, reused by every call)."""
    with _POOL_LOCK:
        p = _POOLS.get(n)
        if p is None:
            p = ThreadPoolExecutor(max_workers=n, thread_name_prefix="guardrails-kernel")
            _POOLS[n] = p
        return p


def blas_single_thread():
    """Context manager limiting BLAS to one thread (the pool provides the parallelism)."""
    global _BLAS
    # threadpoolctl inspects the loaded BLAS libraries when first built: done once, late,
    # so importing the library stays cheap.
    from threadpoolctl import ThreadpoolController

    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")
