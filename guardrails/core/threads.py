"""The worker pool and the BLAS limiter shared by the kernel and risk expansion.

Both parallelise over blocks with one process-wide pool per size, and both run BLAS
inside the workers: BLAS is limited to one thread there, so the pool is the only
source of parallelism and the two never oversubscribe the cores.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["default_num_threads", "shared_pool", "blas_single_thread", "PicklableLock"]

_POOL_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}
_BLAS = None


class PicklableLock:
    """A lock that pickles (and copies) as a new, unlocked lock.

    Guards per-process caches of objects that travel to other processes (Dask
    workers, ``copy.deepcopy``): a lock's state means nothing in another process, so
    the objects holding one need no ``__getstate__`` of their own for it.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __reduce__(self):
        return (PicklableLock, ())


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
