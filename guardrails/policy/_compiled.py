"""A policy compiled against one catalogue and snapshot.

Global parts, cohort tables and caps are compiled eagerly (so a fail-closed filter fails
when the policy or snapshot is swapped in, not on a live call); per-viewer parts are
compiled per call. Candidate spaces (:class:`Variant`) are cached per set of active
filters and cohort rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..core.plan import Action, Plan, PlanPart
from ..core.threads import PicklableLock
from ..exceptions import FailClosedError, ValidationError
from ..filters._contract import (
    assign_cohorts,
    compile_queries,
    compile_static,
    compile_viewer_parts,
)
from ..filters.base import CapSpec, Catalog, CohortTable, ViewerBatch
from ..filters.safety import warn_skipped
from . import _run
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
    lock: PicklableLock = field(default_factory=PicklableLock)

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


@dataclass(frozen=True, eq=False)
class CompiledFilter:
    """Everything compiled once per policy and snapshot for one filter of the policy.

    Attributes
    ----------
    index : int
        Position of the filter in the policy.
    filter : FilterProtocol
    settings : FilterSettings
    global_parts : tuple of PlanPart
        Viewer-independent parts (empty for a filter that is off or skipped).
    table : CohortTable or None
        Per-cohort actions (:class:`~guardrails.filters.CohortFilter`).
    caps : CapSpec or None
        A share cap (:class:`~guardrails.filters.CapFilter`).
    skipped : str or None
        Why a fail-open filter was skipped at compile time; ``None`` when it compiled.
    """

    index: int
    filter: Any
    settings: FilterSettings
    global_parts: tuple[PlanPart, ...] = ()
    table: CohortTable | None = None
    caps: CapSpec | None = None
    skipped: str | None = None


class CompiledPolicy:
    """A policy compiled against one catalogue and snapshot; owns the variant cache.

    Global parts, cohort tables and caps are compiled eagerly, so a fail-closed filter
    fails when the policy or snapshot is swapped in, not on a live call.
    """

    _MAX_VARIANTS = 256

    def __init__(self, policy: Policy, catalog: Catalog):
        self.policy = policy
        self.catalog = catalog
        self.filters: tuple[CompiledFilter, ...] = tuple(
            self._compile_one(i, f, policy.settings[i]) for i, f in enumerate(policy.filters)
        )
        self._variants: dict[tuple, Variant] = {}
        self._lock = PicklableLock()
        #: Share of the last call's rows whose slate filled a one-group share cap, per
        #: (filter, viewer group's variant key): picks how the next call computes
        #: capped slates (both ways exact; see ``_run.capped_slate``).
        self.cap_saturation: dict[tuple, float] = {}

    def _compile_one(self, i: int, f, st: FilterSettings) -> CompiledFilter:
        if self.policy.effective_mode(i) == "off":
            return CompiledFilter(i, f, st)
        try:
            parts, table, caps = compile_static(f, self.catalog, st.name)
        except Exception as exc:  # noqa: BLE001 - routed by the filter's failure mode
            return CompiledFilter(i, f, st, skipped=self.failure(st, exc))
        return CompiledFilter(i, f, st, parts, table, caps)

    def global_plan(self, surface: str | None = None) -> Plan:
        """The global parts of the filters enforced on ``surface`` (no holdback)."""
        idx = self.active(surface)[0]
        return Plan(self.catalog.n, tuple(p for i in idx for p in self.filters[i].global_parts))

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
            if self.filters[i].skipped is not None or not st.applies(surface):
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
        key = (tuple(i for i in filters if self.filters[i].global_parts), cohorts, split)

        def build() -> Variant:
            n = self.catalog.n
            hard = None
            pen = None
            for i in key[0]:
                for p in self.filters[i].global_parts:
                    if p.hard_mask is not None:
                        hard = p.hard_mask.copy() if hard is None else (hard | p.hard_mask)
                    if p.penalty is not None:
                        pen = p.penalty.astype(np.float64) if pen is None else pen + p.penalty
            for i, g in cohorts:
                t = self.filters[i].table
                if t.hard_masks is not None:
                    hard = t.hard_masks[g].copy() if hard is None else (hard | t.hard_masks[g])
                if t.penalties is not None:
                    pen = t.penalties[g].astype(np.float64) if pen is None else pen + t.penalties[g]
            if split is not None:
                ci, inside = split
                out = (
                    (self.filters[ci].caps.groups < 0)
                    if inside
                    else (self.filters[ci].caps.groups >= 0)
                )
                hard = out.copy() if hard is None else (hard | out)
            if hard is None and n == 0:
                hard = np.zeros(0, dtype=bool)
            return Variant(key, hard, None if pen is None else pen.astype(np.float32))

        return self._cached_variant(key, build)

    def shared_variant(self, members: tuple[Variant, ...], folded: Variant) -> Variant:
        """The space shared by several viewer groups' variants in one kernel call.

        Its candidates are every item some member may return (the members' hard masks
        intersected) and it folds ``folded``'s penalty; each member's own mask and
        penalty are applied per row by the kernel (:mod:`guardrails.core._groups`).
        """
        key = ("shared", tuple(v.key for v in members), folded.key)

        def build() -> Variant:
            hard = None
            if all(m.hard_mask is not None for m in members):
                hard = np.logical_and.reduce([m.hard_mask for m in members])
            return Variant(key, hard, folded.penalty)

        return self._cached_variant(key, build)

    def _cached_variant(self, key: tuple, build: Callable[[], Variant]) -> Variant:
        """The variant of ``key``, built once (under the lock) and cached."""
        v = self._variants.get(key)
        if v is not None:
            return v
        with self._lock:
            v = self._variants.get(key)
            if v is None:
                v = build()
                if len(self._variants) >= self._MAX_VARIANTS:
                    self._variants.clear()
                self._variants[key] = v
        return v

    def viewer_parts(self, i: int, viewers: ViewerBatch) -> tuple[PlanPart, ...]:
        """Filter ``i``'s per-viewer parts for one batch, checked; ``()`` if it failed open."""
        cf = self.filters[i]
        pens = [p.penalty for p in cf.global_parts if p.penalty is not None]
        # Per-viewer parts may give back the filter's own global penalty, never more.
        restore = (np.sum(pens, axis=0) if len(pens) > 1 else pens[0]) if pens else None
        try:
            return compile_viewer_parts(cf.filter, self.catalog, viewers, cf.settings.name, restore)
        except Exception as exc:  # noqa: BLE001 - routed by the filter's failure mode
            self.failure(cf.settings, exc)
            return ()

    def cached_parts(self, cache: CallCache, i: int) -> tuple[PlanPart, ...]:
        """:meth:`viewer_parts` of filter ``i``, compiled once per call."""
        if i not in cache.parts:
            cache.parts[i] = self.viewer_parts(i, cache.viewers)
        return cache.parts[i]

    def cached_groups(self, cache: CallCache, i: int) -> np.ndarray | None:
        """Cohort of every viewer of the call for filter ``i`` (``None``: no cohorts)."""
        cf = self.filters[i]
        if cf.table is None:
            return None
        if i not in cache.groups:
            try:
                g = assign_cohorts(
                    cf.filter, self.catalog, cache.viewers, cf.table, cf.settings.name
                )
            except Exception as exc:  # noqa: BLE001 - routed by the filter's failure mode
                self.failure(cf.settings, exc)
                g = np.full(cache.viewers.size, -1, dtype=np.int64)
            cache.groups[i] = g
        return cache.groups[i]

    def cached_strip(self, cache: CallCache, i: int) -> sp.csr_matrix | None:
        """Query cells filter ``i`` leaves out for the call's viewers (``None``: none)."""
        if i not in cache.strips:
            cf = self.filters[i]
            try:
                s = compile_queries(cf.filter, self.catalog, cache.viewers, cf.settings.name)
            except Exception as exc:  # noqa: BLE001 - routed by the filter's failure mode
                self.failure(cf.settings, exc)
                s = None
            cache.strips[i] = s
        return cache.strips[i]

    # ------------------------------------------------------------------ execution
    #: Serve one batch (:func:`guardrails.policy._run.run`, with this policy as ``cp``).
    run = _run.run
    #: Why an item is or would be suppressed for one viewer (:func:`._run.explain`).
    explain = _run.explain

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
        for p in self.filters[i].global_parts:
            if p.hard_mask is not None:
                act[p.hard_mask[items]] = Action.DROP
            if p.penalty is not None:
                pen += p.penalty[items]
        g = self.cached_groups(cache, i)
        if g is not None:
            t = self.filters[i].table
            gr = g[rows]
            has = gr >= 0
            if t.hard_masks is not None and has.any():
                hit = np.zeros(k, dtype=bool)
                hit[has] = t.hard_masks[gr[has], items[has]]
                act[hit] = Action.DROP
            if t.penalties is not None and has.any():
                pen[has] += t.penalties[gr[has], items[has]]
        for p in self.cached_parts(cache, i):
            if p.viewer_mask is not None:
                hit = np.asarray(p.viewer_mask[rows, items]).ravel() != 0
                act[hit] = Action.DROP
            if p.viewer_penalty is not None:
                pen += np.asarray(p.viewer_penalty[rows, items]).ravel()
        act[(act < Action.DEMOTE) & (pen > 0)] = Action.DEMOTE
        return act, pen
