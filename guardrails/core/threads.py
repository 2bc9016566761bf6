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


class _BlasLimiter:
    """One process-wide, reference-counted "BLAS uses one thread" limit.

    threadpoolctl's limits are process-wide: two overlapping ``with limit(...)`` blocks
    in different threads each save and restore "the original" value, and the one that
    saved the other's limit restores it, leaving BLAS at one thread for the rest of the
    process. Here the first entrant sets the limit and the last one to leave restores
    what the first one found, under a lock, so overlapping calls from any number of
    threads leave the process as they found it. While any guarded call runs, every BLAS
    call in the process is single-threaded: the price of a process-wide setting, paid
    so that the pool, not BLAS, uses the cores.

    Every setting is made from one long-lived control thread: recent OpenBLAS builds
    honour ``openblas_set_num_threads`` only from the thread that first called it and
    silently ignore it from any other, so a limit set by one request thread could not
    be lifted by another. If another thread of the application set BLAS limits first,
    OpenBLAS ignores these settings too; results are the same, only slower.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._restore = None
        self._controller = None
        self._control: ThreadPoolExecutor | None = None

    @property
    def users(self) -> int:
        """Calls currently holding the limit (for tests and health checks)."""
        return self._users

    def _on_control_thread(self, fn):
        if self._control is None:
            self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrails-blas")
        return self._control.submit(fn).result()

    def _set(self):
        if self._controller is None:
            # threadpoolctl inspects the loaded BLAS libraries when first built: done
            # once, late, so importing the library stays cheap.
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller.limit(limits=1, user_api="blas")

    def _after_fork(self) -> None:
        # A forked child has none of the parent's threads: start afresh.
        self._lock = threading.Lock()
        self._users = 0
        self._restore = None
        self._control = None

    def __enter__(self) -> _BlasLimiter:
        with self._lock:
            if self._users == 0:
                self._restore = self._on_control_thread(self._set)
            self._users += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._restore is not None:
                restore, self._restore = self._restore, None
                self._on_control_thread(restore.restore_original_limits)


_BLAS_LIMITER = _BlasLimiter()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_BLAS_LIMITER._after_fork)


def blas_single_thread() -> _BlasLimiter:
    """Context manager limiting BLAS to one thread (the pool provides the parallelism).

    Safe under concurrent use from any number of threads: see :class:`_BlasLimiter`.
    """
    return _BLAS_LIMITER
