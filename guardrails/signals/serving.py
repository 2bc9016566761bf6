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
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_csr, check_float, check_ids, check_int, fail
from ..exceptions import FailClosedError, FailClosedWarning, StoreError
from ..filters.base import Catalog, ViewerBatch
from ..guard import Guard, GuardResult
from ..models import FactorModel
from .snapshot import Snapshot

__all__ = ["ServingGuard"]

logger = logging.getLogger("guardrails.signals")

_REASONS = ("missing", "unreadable", "stale", "unstable")


class ServingGuard:
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
        self._mask_cache: tuple[Any, np.ndarray] | None = None

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
        ``stats["load_failures"]``, logged and re-raised; the held snapshot stays in
        service until it is too old, after which calls fail closed.
        """
        try:
            snap = Snapshot.load(path)
            self.swap_snapshot(snap)
        except (StoreError, ValueError) as exc:
            with self._lock:
                self.stats["load_failures"] += 1
            logger.error("guardrails: could not load snapshot %r: %s", str(path), exc)
            raise
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

    # ------------------------------------------------------------------ core
    def _serve(
        self,
        call: Callable[[], GuardResult],
        fallback: Callable[[Any, str, str], GuardResult] | None,
    ):
        for _ in range(self.max_retries):
            ok, reason, msg = self.check()
            if not ok:
                return self._fail(reason, msg, fallback)
            result = call()
            if result.snapshot_version == msg:
                with self._lock:
                    self.stats["served"] += 1
                return result
        return self._fail("unstable", "the snapshot kept changing during the call", fallback)

    def _fail(self, reason: str, msg: str, fallback) -> GuardResult:
        text = f"Guard refused to serve unguarded results: {msg}."
        with self._lock:
            self.stats[reason] += 1
            self.last_failure = text
        if self.on_failure == "raise" or fallback is None:
            with self._lock:
                self.stats["refused"] += 1
            logger.error("guardrails: %s", text)
            raise FailClosedError(text)
        try:
            result = fallback(self.guard.snapshot, reason, text)
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

    def _hard_mask(self, snap) -> np.ndarray:
        """Item-level hard mask of the guard's policy against ``snap`` (cached)."""
        policy = self.guard.policy
        key = (policy.version, id(snap), getattr(snap, "version", None))
        cached = self._mask_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        n = self.guard.model_.n_items
        mask = policy.compile_global(Catalog("items", n, snap)).hard_mask
        mask = np.zeros(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
        if self.exclude_flagged and snap is not None:
            sev = getattr(snap, "max_severity", None)
            if sev is not None:
                sev = np.asarray(sev)
                if sev.shape != (n,):
                    raise FailClosedError(
                        f"the snapshot's max_severity has shape {sev.shape}, not ({n},)"
                    )
                mask |= sev > 0
        self._mask_cache = (key, mask)
        return mask

    def _fallback_slate(
        self,
        snap,
        reason: str,
        text: str,
        *,
        m: int,
        scalar: bool,
        N: int,
        call_mask,
        restrict,
        liked: sp.csr_matrix | None,
        viewers: ViewerBatch,
        query_items: np.ndarray | None = None,
    ) -> GuardResult:
        n = self.guard.model_.n_items
        allowed = ~self._hard_mask(snap)
        if call_mask is not None:
            allowed[call_mask] = False
        if restrict is not None:
            keep = np.zeros(n, dtype=bool)
            keep[restrict] = True
            allowed &= keep
        order = self.fallback_items
        cand = order[allowed[order]]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(order.size)
        vplan = self.guard.policy.compile_viewers(Catalog("items", n, snap), viewers)
        masks = [sp.csr_matrix(x) for x in vplan.viewer_masks]
        if liked is not None:
            masks.append(liked)
        n_cols = max(0, min(N, n if restrict is None else int(np.asarray(restrict).size)))
        dtype = np.float32 if isinstance(self.guard.model_, FactorModel) else np.float64
        ids = np.full((m, n_cols), -1, dtype=self.guard.ids_dtype)
        scores = np.full((m, n_cols), -np.inf, dtype=dtype)
        for i in range(m):
            row = cand
            drop = [
                mk.indices[mk.indptr[i] : mk.indptr[i + 1]]
                for mk in masks
                if mk.nnz and i < mk.shape[0]
            ]
            if query_items is not None:
                drop.append(query_items[i : i + 1])
            if drop:
                row = row[~np.isin(row, np.concatenate(drop))]
            row = row[:n_cols]
            ids[i, : row.size] = row
            scores[i, : row.size] = 1.0 / (1.0 + rank[row])
        info = {
            "fail_closed": reason,
            "fallback": True,
            "message": text,
        }
        policy_version = self.guard.policy_version
        snap_version = None if snap is None else getattr(snap, "version", None)
        if scalar:
            keep = ids[0] >= 0
            return GuardResult(ids[0][keep], scores[0][keep], policy_version, snap_version, info)
        return GuardResult(ids, scores, policy_version, snap_version, info)

    # ------------------------------------------------------------------ API
    def recommend(
        self,
        userid,
        user_items=None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items=None,
        recalculate_user: bool = False,
        items=None,
        *,
        surface: str | None = None,
    ):
        """As :meth:`Guard.recommend`, failing closed; returns ``(ids, scores)``."""
        r = self.recommend_detailed(
            userid,
            user_items,
            N,
            filter_already_liked_items,
            filter_items,
            recalculate_user,
            items,
            surface=surface,
        )
        return r.ids, r.scores

    def recommend_detailed(
        self,
        userid,
        user_items=None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items=None,
        recalculate_user: bool = False,
        items=None,
        *,
        surface: str | None = None,
    ) -> GuardResult:
        """As :meth:`Guard.recommend_detailed`, failing closed.

        A fallback result has ``info["fail_closed"]`` set to the reason and
        ``info["fallback"] = True``; its scores are ``1 / (1 + position in the
        fallback list)``.
        """
        g = self.guard

        def call() -> GuardResult:
            return g.recommend_detailed(
                userid,
                user_items,
                N,
                filter_already_liked_items,
                filter_items,
                recalculate_user,
                items,
                surface=surface,
            )

        def fallback(snap, reason, text) -> GuardResult:
            where = "Guard.recommend"
            n = g.model_.n_items
            userids, scalar = check_ids(userid, "userid", where, 2**62)
            n_ = check_int(N, "N", where)
            rows = (
                None
                if user_items is None
                else check_csr(user_items, "user_items", where, shape=(userids.size, n))
            )
            call_mask, restrict = _item_limits(filter_items, items, n, where)
            liked = rows if (filter_already_liked_items and rows is not None) else None
            return self._fallback_slate(
                snap,
                reason,
                text,
                m=userids.size,
                scalar=scalar,
                N=n_,
                call_mask=call_mask,
                restrict=restrict,
                liked=liked,
                viewers=ViewerBatch(userids, rows, surface),
            )

        return self._serve(call, fallback if self.on_failure == "fallback" else None)

    def similar_items(
        self,
        itemid,
        N: int = 10,
        recalculate_item: bool = False,
        item_users=None,
        filter_items=None,
        items=None,
        *,
        viewer=None,
        surface: str | None = None,
    ):
        """As :meth:`Guard.similar_items`, failing closed; returns ``(ids, scores)``."""
        r = self.similar_items_detailed(
            itemid,
            N,
            recalculate_item,
            item_users,
            filter_items,
            items,
            viewer=viewer,
            surface=surface,
        )
        return r.ids, r.scores

    def similar_items_detailed(
        self,
        itemid,
        N: int = 10,
        recalculate_item: bool = False,
        item_users=None,
        filter_items=None,
        items=None,
        *,
        viewer=None,
        surface: str | None = None,
    ) -> GuardResult:
        """As :meth:`Guard.similar_items_detailed`, failing closed (the fallback never
        returns the query item itself)."""
        g = self.guard

        def call() -> GuardResult:
            return g.similar_items_detailed(
                itemid,
                N,
                recalculate_item,
                item_users,
                filter_items,
                items,
                viewer=viewer,
                surface=surface,
            )

        def fallback(snap, reason, text) -> GuardResult:
            where = "Guard.similar_items"
            n = g.model_.n_items
            itemids, scalar = check_ids(itemid, "itemid", where, 2**62)
            n_ = check_int(N, "N", where)
            call_mask, restrict = _item_limits(filter_items, items, n, where)
            viewers = g._viewers(viewer, itemids.size, where)
            return self._fallback_slate(
                snap,
                reason,
                text,
                m=itemids.size,
                scalar=scalar,
                N=n_,
                call_mask=call_mask,
                restrict=restrict,
                liked=None,
                viewers=ViewerBatch(viewers, None, surface),
                query_items=itemids,
            )

        return self._serve(call, fallback if self.on_failure == "fallback" else None)

    def similar_users(
        self, userid, N: int = 10, filter_users=None, users=None, *, surface: str | None = None
    ):
        """As :meth:`Guard.similar_users`, failing closed (always by raising: the fallback
        list holds items, not users)."""
        r = self.similar_users_detailed(userid, N, filter_users, users, surface=surface)
        return r.ids, r.scores

    def similar_users_detailed(
        self, userid, N: int = 10, filter_users=None, users=None, *, surface: str | None = None
    ) -> GuardResult:
        """As :meth:`Guard.similar_users_detailed`, failing closed by raising."""
        g = self.guard
        return self._serve(
            lambda: g.similar_users_detailed(userid, N, filter_users, users, surface=surface), None
        )

    def __repr__(self) -> str:
        return (
            f"ServingGuard({self.guard!r}, max_snapshot_age={self.max_snapshot_age}, "
            f"on_failure={self.on_failure!r})"
        )


def _item_limits(filter_items, items, n: int, where: str):
    """The fallback's ``filter_items`` (ids to drop) and ``items`` (sorted ids to keep)."""
    call_mask = (
        None if filter_items is None else check_ids(filter_items, "filter_items", where, n)[0]
    )
    restrict = None if items is None else np.unique(check_ids(items, "items", where, n)[0])
    return call_mask, restrict
