"""A policy compiled against one catalogue and snapshot.

Global parts, cohort tables and caps are compiled eagerly (so a fail-closed filter fails
when the policy or snapshot is swapped in, not on a live call); per-viewer parts are
compiled per call. Candidate spaces (:class:`Variant`) are cached per set of active
filters and cohort rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..core.plan import PlanPart
from ..core.select import TopK
from ..exceptions import FailClosedError, ValidationError
from ..filters._contract import as_parts, check_caps, check_part, check_table
from ..filters.base import CapSpec, Catalog, CohortTable, ViewerBatch
from ..filters.safety import warn_skipped
from . import _run
from ._decisions import Decision, DecisionCounters, Explanation
from ._run import CallCache

if TYPE_CHECKING:
    from ._policy import FilterSettings, Policy

__all__ = ["CompiledPolicy", "Variant"]


@dataclass(eq=False)
class Variant:
    """One candidate space: the global plan of a set of filters plus cohort rows."""

    key: tuple
    hard_mask: np.ndarray | None
    penalty: np.ndarray | None
    spaces: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def space(self, kind: str, build: Callable[[np.ndarray | None, np.ndarray | None], Any]):
        """The candidate space of ``kind``, built once with ``build(hard_mask, penalty)``."""
        s = self.spaces.get(kind)
        if s is None:
            with self.lock:
                s = self.spaces.get(kind)
                if s is None:
                    s = build(self.hard_mask, self.penalty)
                    self.spaces[kind] = s
        return s


class CompiledPolicy:
    """A policy compiled against one catalogue and snapshot; owns the variant cache.

    Global parts, cohort tables and caps are compiled eagerly, so a fail-closed filter
    fails when the policy or snapshot is swapped in, not on a live call.
    """

    _MAX_VARIANTS = 256

    def __init__(self, policy: Policy, catalog: Catalog):
        self.policy = policy
        self.catalog = catalog
        self.skipped: list[str | None] = []
        self.global_parts: list[tuple[PlanPart, ...]] = []
        self.tables: list[CohortTable | None] = []
        self.caps: list[CapSpec | None] = []
        for i, f in enumerate(policy.filters):
            st = policy.settings[i]
            if policy.effective_mode(i) == "off":
                self.global_parts.append(())
                self.tables.append(None)
                self.caps.append(None)
                self.skipped.append(None)
                continue
            try:
                parts = tuple(
                    check_part(p, catalog, None)
                    for p in as_parts(f.compile_global(catalog), st.name)
                )
                for p in parts:
                    if p.viewer_mask is not None or p.viewer_penalty is not None:
                        raise ValidationError(
                            f"Filter {st.name!r} compiled per-viewer arrays in compile_global."
                        )
                ct = getattr(f, "compile_cohorts", None)
                table = check_table(ct(catalog), catalog, st.name) if ct is not None else None
                cc = getattr(f, "compile_caps", None)
                caps = check_caps(cc(catalog), catalog, st.name) if cc is not None else None
                skipped = None
            except Exception as exc:  # noqa: BLE001 - routed by the filter's failure mode
                parts, table, caps = (), None, None
                skipped = self.failure(st, exc)
            self.global_parts.append(parts)
            self.tables.append(table)
            self.caps.append(caps)
            self.skipped.append(skipped)
        self._variants: dict[tuple, Variant] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def failure(st: FilterSettings, exc: Exception) -> str:
        """Route a filter's compile failure by its failure mode.

        Returns the skip note of a fail-open filter (after warning); raises
        :class:`~guardrails.exceptions.FailClosedError` for a fail-closed one.
        """
        if st.failure == "fail_open" and not st.protected:
            warn_skipped(st.name, exc)
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (FailClosedError, ValidationError)):
            raise exc
        raise FailClosedError(
            f"Filter {st.name!r} failed to compile ({type(exc).__name__}: {exc}) and fails closed; "
            "refusing to serve without it."
        ) from exc

    def active(self, surface: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Indices of the enforced and of the shadow filters that apply on ``surface``."""
        enf, sh = [], []
        for i, st in enumerate(self.policy.settings):
            if self.skipped[i] is not None or not st.applies(surface):
                continue
            m = self.policy.effective_mode(i)
            if m == "enforce":
                enf.append(i)
            elif m == "shadow":
                sh.append(i)
        return tuple(enf), tuple(sh)

    def variant(
        self,
        filters: tuple[int, ...],
        cohorts: tuple[tuple[int, int], ...] = (),
        split: tuple[int, bool] | None = None,
    ) -> Variant:
        """The candidate space of the global parts of ``filters`` plus cohort rows.

        ``split=(i, inside)`` further keeps only the candidates inside (or outside) the
        single group of share cap ``i``.
        """
        key = (tuple(i for i in filters if self.global_parts[i]), cohorts, split)
        v = self._variants.get(key)
        if v is not None:
            return v
        with self._lock:
            v = self._variants.get(key)
            if v is None:
                n = self.catalog.n
                hard = None
                pen = None
                for i in key[0]:
                    for p in self.global_parts[i]:
                        if p.hard_mask is not None:
                            hard = p.hard_mask.copy() if hard is None else (hard | p.hard_mask)
                        if p.penalty is not None:
                            pen = p.penalty.astype(np.float64) if pen is None else pen + p.penalty
                for i, g in cohorts:
                    t = self.tables[i]
                    if t.hard_masks is not None:
                        hard = t.hard_masks[g].copy() if hard is None else (hard | t.hard_masks[g])
                    if t.penalties is not None:
                        pen = (
                            t.penalties[g].astype(np.float64)
                            if pen is None
                            else pen + t.penalties[g]
                        )
                if split is not None:
                    ci, inside = split
                    out = (self.caps[ci].groups < 0) if inside else (self.caps[ci].groups >= 0)
                    hard = out.copy() if hard is None else (hard | out)
                if hard is None and n == 0:
                    hard = np.zeros(0, dtype=bool)
                v = Variant(key, hard, None if pen is None else pen.astype(np.float32))
                if len(self._variants) >= self._MAX_VARIANTS:
                    self._variants.clear()
                self._variants[key] = v
        return v

    def viewer_parts(self, i: int, viewers: ViewerBatch) -> tuple[PlanPart, ...]:
        f = self.policy.filters[i]
        st = self.policy.settings[i]
        restore = None
        pens = [p.penalty for p in self.global_parts[i] if p.penalty is not None]
        if pens:
            restore = np.sum(pens, axis=0) if len(pens) > 1 else pens[0]
        try:
            return tuple(
                check_part(p, self.catalog, viewers.size, restore)
                for p in as_parts(f.compile_viewers(self.catalog, viewers), st.name)
            )
        except Exception as exc:  # noqa: BLE001
            self.failure(st, exc)
            return ()

    def cached_parts(self, cache: CallCache, i: int) -> tuple[PlanPart, ...]:
        if i not in cache.parts:
            cache.parts[i] = self.viewer_parts(i, cache.viewers)
        return cache.parts[i]

    def cached_groups(self, cache: CallCache, i: int) -> np.ndarray | None:
        if self.tables[i] is None:
            return None
        if i not in cache.groups:
            f = self.policy.filters[i]
            try:
                g = np.asarray(f.assign_cohorts(self.catalog, cache.viewers), dtype=np.int64)
                if g.shape != (cache.viewers.size,) or (
                    g.size and (g.min() < -1 or g.max() >= self.tables[i].n_cohorts)
                ):
                    raise ValidationError(
                        f"Filter {self.policy.settings[i].name!r} assigned cohorts of shape {g.shape} or out of "
                        f"range; expected ints in [-1, {self.tables[i].n_cohorts}) of shape ({cache.viewers.size},)."
                    )
            except Exception as exc:  # noqa: BLE001
                self.failure(self.policy.settings[i], exc)
                g = np.full(cache.viewers.size, -1, dtype=np.int64)
            cache.groups[i] = g
        return cache.groups[i]

    def cached_strip(self, cache: CallCache, i: int):
        if i not in cache.strips:
            f = self.policy.filters[i]
            cq = getattr(f, "compile_queries", None)
            s = None
            if cq is not None and cache.viewers.user_items is not None:
                try:
                    s = cq(self.catalog, cache.viewers)
                except Exception as exc:  # noqa: BLE001
                    self.failure(self.policy.settings[i], exc)
                    s = None
                if s is not None:
                    if not sp.issparse(s) or s.shape != cache.viewers.user_items.shape:
                        raise ValidationError(
                            f"Filter {self.policy.settings[i].name!r} compiled query cells of the wrong shape."
                        )
                    s = sp.csr_matrix(s)
                    if not s.nnz:
                        s = None
            cache.strips[i] = s
        return cache.strips[i]

    # ------------------------------------------------------------------ execution
    def run(
        self,
        viewers: ViewerBatch,
        topk: TopK,
        N: int,
        limit: int,
        *,
        record: bool = False,
        counters: DecisionCounters | None = None,
        snapshot_version: str | None = None,
        query_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[Decision, ...], dict]:
        """Serve one batch; see :func:`guardrails.policy._run.run`."""
        return _run.run(
            self,
            viewers,
            topk,
            N,
            limit,
            record=record,
            counters=counters,
            snapshot_version=snapshot_version,
            query_ids=query_ids,
        )

    def explain(
        self, viewers: ViewerBatch, item: int, *, snapshot_version: str | None = None
    ) -> Explanation:
        """Why ``item`` is or would be suppressed for the single viewer of ``viewers``."""
        return _run.explain(self, viewers, item, snapshot_version=snapshot_version)

    # ------------------------------------------------------------------ attribution
    def pair_actions(
        self, cache: CallCache, i: int, rows: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Action codes (0 allow, 1 demote, 2 drop) and penalties of filter ``i`` on pairs."""
        k = rows.size
        act = np.zeros(k, dtype=np.int8)
        pen = np.zeros(k, dtype=np.float64)
        if k == 0:
            return act, pen
        for p in self.global_parts[i]:
            if p.hard_mask is not None:
                act[p.hard_mask[items]] = 2
            if p.penalty is not None:
                pen += p.penalty[items]
        g = self.cached_groups(cache, i)
        if g is not None:
            t = self.tables[i]
            gr = g[rows]
            has = gr >= 0
            if t.hard_masks is not None and has.any():
                hit = np.zeros(k, dtype=bool)
                hit[has] = t.hard_masks[gr[has], items[has]]
                act[hit] = 2
            if t.penalties is not None and has.any():
                pen[has] += t.penalties[gr[has], items[has]]
        for p in self.cached_parts(cache, i):
            if p.viewer_mask is not None:
                hit = np.asarray(p.viewer_mask[rows, items]).ravel() != 0
                act[hit] = 2
            if p.viewer_penalty is not None:
                pen += np.asarray(p.viewer_penalty[rows, items]).ravel()
        act[(act < 1) & (pen > 0)] = 1
        return act, pen
