"""ServingGuard: a Guard that fails closed when its safety signals are missing or stale.

A :class:`~guardrails.Guard` computes every slate against the one snapshot it holds (read
once per call; :meth:`Guard.swap_snapshot` swaps a new one in atomically). The
:class:`ServingGuard` wraps it and refuses to serve unguarded results:

- before every call it checks the held snapshot: present, readable (a ``version`` and a
  finite ``at``, sized to the model's catalogue) and, when ``max_snapshot_age`` is set,
  no older than that (``now - snapshot.at``);
- after the call it checks that the slate was computed against that very snapshot version
  (a swap in between is retried, so a stale snapshot swapped in concurrently is never
  used unchecked);
- on failure, by ``on_failure``, it raises :class:`~guardrails.exceptions.FailClosedError`
  or serves the configured safe fallback (a vetted list of items), which still honours the
  policy's item-level hard mask, per-viewer masks, the call's exclusions and, by default,
  every item flagged in the last snapshot held. Either way it records what it did: a
  counter in :attr:`ServingGuard.stats`, a :class:`~guardrails.exceptions.FailClosedWarning`
  (for a fallback), a log record on the ``guardrails.signals`` logger, and
  ``GuardResult.info["fail_closed"]``.

The ServingGuard has the Guard's call surface (:class:`~guardrails.guard.GuardCalls`):
every call's arguments are checked once, by the guard, into a
:class:`~guardrails.guard.GuardRequest`; the guarded slate, a retry after a concurrent swap
and the fallback all read that one request.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ._validation import check_choice, check_float, check_ids, check_int, fail
from .exceptions import FailClosedError, FailClosedWarning, StoreError
from .guard import Guard, GuardCalls, GuardRequest, GuardResult
from .signals.snapshot import Snapshot

__all__ = ["ServingGuard"]

logger = logging.getLogger("guardrails.signals")

_REASONS = ("missing", "unreadable", "stale", "unstable")


class ServingGuard(GuardCalls):
    """Serve from a Guard only while its snapshot is present, readable and fresh.

    Parameters
    ----------
    guard : Guard
        The guard to serve from; it keeps its policy and snapshot.
    max_snapshot_age : float, optional, keyword-only
        Maximum age in seconds of the held snapshot (``now - snapshot.at``); ``None``
        disables the age check (missing and unreadable snapshots still fail closed).
    on_failure : {"raise", "fallback"}, keyword-only
        Raise :class:`~guardrails.exceptions.FailClosedError`, or serve
        ``fallback_items``.
    fallback_items : array-like of int, optional, keyword-only
        Model item indices of a vetted list (for example popular, reviewed accounts), in
        serving order; required for ``on_failure="fallback"``.
    exclude_flagged : bool, keyword-only
        In the fallback, also drop every item with any label in the last snapshot held
        (stale labels are still labels).
    clock : callable, keyword-only
        Current time in seconds since the epoch (for tests).
    max_retries : int, keyword-only
        Calls repeated when a snapshot swap lands between the check and the slate.

    Attributes
    ----------
    stats : dict
        ``served``, ``fallback``, ``refused``, ``load_failures`` and one count per
        failure reason (``missing``, ``unreadable``, ``stale``, ``unstable``).
    last_failure : str or None
        The message of the last fail-closed event.
    last_load_error : str or None
        Why the last :meth:`load_snapshot` failed, until one succeeds; fail-closed
        messages repeat it (a corrupt snapshot file is the usual cause of a stale one).
    """

    def __init__(
        self,
        guard: Guard,
        *,
        max_snapshot_age: float | None = None,
        on_failure: str = "raise",
        fallback_items=None,
        exclude_flagged: bool = True,
        clock: Callable[[], float] = time.time,
        max_retries: int = 3,
    ):
        where = "ServingGuard"
        if not isinstance(guard, Guard):
            raise fail("guard", where, "a Guard", guard)
        self.guard = guard
        self.max_snapshot_age = (
            None
            if max_snapshot_age is None
            else check_float(max_snapshot_age, "max_snapshot_age", where, low=0.0, low_open=True)
        )
        self.on_failure = check_choice(on_failure, "on_failure", where, ("raise", "fallback"))
        n = guard.model_.n_items
        if fallback_items is None:
            if self.on_failure == "fallback":
                raise fail(
                    "fallback_items",
                    where,
                    "a list of item indices when on_failure='fallback'",
                    None,
                )
            self.fallback_items = None
        else:
            ids, _ = check_ids(fallback_items, "fallback_items", where, n)
            _, first = np.unique(ids, return_index=True)
            self.fallback_items = ids[np.sort(first)]
            self.fallback_items.flags.writeable = False
        self.exclude_flagged = bool(exclude_flagged)
        self.clock = clock
        self.max_retries = check_int(max_retries, "max_retries", where)
        self._lock = threading.Lock()
        self.stats: dict[str, int] = dict.fromkeys(
            ("served", "fallback", "refused", "load_failures", *_REASONS), 0
        )
        self.last_failure: str | None = None
        self.last_load_error: str | None = None
        self._mask_cache: tuple[Any, np.ndarray] | None = None  # flagged items per snapshot

    # ------------------------------------------------------------------ snapshots
    @property
    def snapshot(self):
        return self.guard.snapshot

    def swap_snapshot(self, snapshot) -> None:
        """Swap a snapshot into the guard (atomically; see :meth:`Guard.swap_snapshot`).

        A snapshot sized to another catalogue is refused with ``ValidationError`` and the
        held one is kept.
        """
        n = self.guard.model_.n_items
        size = getattr(snapshot, "n_items", None)
        if size is not None and size != n:
            raise fail(
                "snapshot",
                "ServingGuard.swap_snapshot",
                f"a snapshot of {n} items",
                f"a snapshot of {size} items",
                describe=False,
            )
        self.guard.swap_snapshot(snapshot)

    def load_snapshot(self, path) -> Snapshot:
        """Load a snapshot file and swap it in.

        On failure (missing, unreadable or corrupt file) the error is counted in
        ``stats["load_failures"]``, kept in :attr:`last_load_error`, logged and re-raised;
        the held snapshot stays in service until it is too old, after which calls fail
        closed and their message says why the refresh failed. A successful load clears
        :attr:`last_load_error`.
        """
        try:
            snap = Snapshot.load(path)
            self.swap_snapshot(snap)
        except (StoreError, ValueError) as exc:
            with self._lock:
                self.stats["load_failures"] += 1
                self.last_load_error = f"{type(exc).__name__}: {exc}"
            logger.error("guardrails: could not load snapshot %r: %s", str(path), exc)
            raise
        with self._lock:
            self.last_load_error = None
        return snap

    def check(self) -> tuple[bool, str | None, str]:
        """Whether the held snapshot may be served: ``(ok, reason, message)``."""
        snap = self.guard.snapshot
        if snap is None:
            return False, "missing", "the guard holds no safety-signal snapshot"
        version = getattr(snap, "version", None)
        at = getattr(snap, "at", None)
        try:
            at = float(at)
        except (TypeError, ValueError):
            at = math.nan
        if not isinstance(version, str) or not math.isfinite(at):
            return False, "unreadable", f"the snapshot {type(snap).__name__} has no version or time"
        n = self.guard.model_.n_items
        size = getattr(snap, "n_items", n)
        if size != n:
            return False, "unreadable", f"the snapshot {version} covers {size} items, the model {n}"
        if self.max_snapshot_age is not None:
            age = self.clock() - at
            if age > self.max_snapshot_age:
                return (
                    False,
                    "stale",
                    f"the snapshot {version} is {age:.0f} s old (maximum "
                    f"{self.max_snapshot_age:.0f} s)",
                )
        return True, None, version

    # ------------------------------------------------------------------ calls
    def prepare(self, method: str, /, **arguments) -> GuardRequest:
        """Check one call's arguments with the guard (see :meth:`Guard.prepare`)."""
        return self.guard.prepare(method, **arguments)

    def execute(self, request: GuardRequest) -> GuardResult:
        """Serve ``request`` while the held snapshot may be served; otherwise fail closed.

        The request was checked once (:meth:`prepare`); a retry after a concurrent swap
        and the fallback both reuse it.
        """
        fallback = self.on_failure == "fallback" and request.candidates == "items"
        for _ in range(self.max_retries):
            ok, reason, msg = self.check()
            if not ok:
                return self._fail(reason, msg, request if fallback else None)
            result = self.guard.execute(request)
            if result.snapshot_version == msg:
                with self._lock:
                    self.stats["served"] += 1
                return result
        return self._fail(
            "unstable", "the snapshot kept changing during the call", request if fallback else None
        )

    def _fail(self, reason: str, msg: str, request: GuardRequest | None) -> GuardResult:
        text = f"Guard refused to serve unguarded results: {msg}."
        with self._lock:
            if self.last_load_error is not None:
                text += f" The last snapshot refresh failed: {self.last_load_error}"
            self.stats[reason] += 1
            self.last_failure = text
        if request is None:
            with self._lock:
                self.stats["refused"] += 1
            logger.error("guardrails: %s", text)
            raise FailClosedError(text)
        try:
            result = self._fallback_slate(self.guard.snapshot, reason, text, request)
        except Exception as exc:
            with self._lock:
                self.stats["refused"] += 1
            logger.error("guardrails: %s The fallback failed too: %s", text, exc)
            raise FailClosedError(
                f"{text} The safe fallback could not be served either: {exc}"
            ) from exc
        with self._lock:
            self.stats["fallback"] += 1
        logger.warning("guardrails: %s Served the safe fallback.", text)
        warnings.warn(FailClosedWarning(f"{text} Served the safe fallback list."), stacklevel=4)
        return result

    def _flagged(self, snap) -> np.ndarray | None:
        """Items with any label in ``snap`` (cached per snapshot), or ``None``."""
        if not self.exclude_flagged or snap is None:
            return None
        key = (id(snap), getattr(snap, "version", None))
        cached = self._mask_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        sev = getattr(snap, "max_severity", None)
        if sev is None:
            return None
        sev = np.asarray(sev)
        n = self.guard.model_.n_items
        if sev.shape != (n,):
            raise FailClosedError(f"the snapshot's max_severity has shape {sev.shape}, not ({n},)")
        flagged = np.flatnonzero(sev > 0).astype(np.int64)
        self._mask_cache = (key, flagged)
        return flagged

    def _fallback_slate(self, snap, reason: str, text: str, request: GuardRequest) -> GuardResult:
        """The vetted list, in order, served through the guard's policy.

        The request is rescored by the list (``1 / (1 + position)``) instead of the
        model and run by the guard (:meth:`GuardRequest.with_ranking`), so the slate
        honours the policy as compiled against the held snapshot (hard masks, per-viewer
        masks, penalties, caps) and the call's exclusions; also dropped: with
        ``exclude_flagged``, every item labelled in the held snapshot, and, for
        ``similar_items``, the query item itself.
        """
        n = self.guard.model_.n_items
        order = self.fallback_items
        assert order is not None  # a fallback is served only with on_failure="fallback"
        ranking = np.full(n, np.nan, dtype=np.float32)
        ranking[order] = 1.0 / (1.0 + np.arange(order.size))
        exclude = request.viewers.context_items if request.method == "similar_items" else None
        vetted = request.with_ranking(ranking, drop=self._flagged(snap), exclude=exclude)
        result = self.guard.execute(vetted)
        info = {**result.info, "fail_closed": reason, "fallback": True, "message": text}
        return dataclasses.replace(result, info=info, decisions=())

    def __repr__(self) -> str:
        return (
            f"ServingGuard({self.guard!r}, max_snapshot_age={self.max_snapshot_age}, "
            f"on_failure={self.on_failure!r})"
        )
