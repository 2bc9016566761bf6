"""Hypothesis strategies and a conformance suite for filters, ours and third-party.

Check one filter instance::

    from guardrails.testing import check_filter
    check_filter(MyFilter(...), Catalog("items", 50))

or run the whole suite over random batches by subclassing :class:`FilterConformance` in
a pytest module::

    class TestMyFilter(FilterConformance):
        def make_filter(self, n_candidates, n_users, seed):
            return MyFilter(np.random.default_rng(seed).random(n_candidates))

The suite checks the protocol (names, reasons, fingerprints), the shapes, dtypes and
signs of everything a filter compiles, determinism, that compiling a batch equals
compiling each of its rows (so batch calls equal single calls), and, through a real
:class:`~guardrails.Guard`, that nothing the filter drops is ever served and that share
caps hold. Hypothesis is needed (``pip install hypothesis``); it is imported lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .core.plan import PlanPart
from .exceptions import missing_extra
from .filters.base import CapSpec, Catalog, CohortTable, FilterProtocol, ViewerBatch

__all__ = [
    "check_filter",
    "check_guard_respects",
    "random_viewers",
    "FilterConformance",
    "risk_vectors",
    "cohort_arrays",
    "viewer_batches",
    "catalogs",
    "builtin_filters",
]


def _st():
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - hypothesis is a test dependency
        raise missing_extra("hypothesis", "test", "guardrails.testing strategies") from exc
    return st


# ============================================================================ strategies
def catalogs(*, kinds=("items",), min_n: int = 1, max_n: int = 60):
    """Strategy of :class:`Catalog` (no snapshot)."""
    st = _st()
    return st.builds(Catalog, st.sampled_from(kinds), st.integers(min_n, max_n))


def risk_vectors(n: int):
    """Strategy of float32 risk arrays of length ``n`` in [0, 1], with ties and extremes."""
    st = _st()
    vals = st.one_of(
        st.sampled_from([0.0, 0.05, 0.2, 0.3, 0.5, 1.0]), st.floats(0.0, 1.0, allow_nan=False)
    )
    return st.lists(vals, min_size=n, max_size=n).map(lambda xs: np.asarray(xs, dtype=np.float32))


def cohort_arrays(n: int, n_cohorts: int, *, allow_none: bool = True):
    """Strategy of int64 cohort arrays of length ``n`` in ``[-1 or 0, n_cohorts)``."""
    st = _st()
    lo = -1 if allow_none else 0
    return st.lists(st.integers(lo, n_cohorts - 1), min_size=n, max_size=n).map(
        lambda xs: np.asarray(xs, dtype=np.int64)
    )


def random_viewers(
    n_candidates: int,
    n_users: int,
    m: int,
    *,
    seed: int = 0,
    density: float = 0.1,
    surface=None,
    new_users: bool = True,
) -> ViewerBatch:
    """A random :class:`ViewerBatch`: ids (some beyond ``n_users``: new accounts) and interactions."""
    rng = np.random.default_rng(seed)
    hi = n_users + (3 if new_users else 0)
    userids = rng.integers(0, max(1, hi), size=m).astype(np.int64)
    ui = sp.random(
        m, n_candidates, density=density, format="csr", random_state=rng, dtype=np.float32
    )
    ui.data[:] = np.ceil(ui.data * 3)
    return ViewerBatch(userids, sp.csr_matrix(ui), surface, m)


def viewer_batches(
    n_candidates: int,
    n_users: int,
    *,
    max_m: int = 8,
    surfaces=(None, "feed", "suggested_accounts"),
):
    """Strategy of :class:`ViewerBatch` with interactions, for a catalogue of ``n_candidates``."""
    st = _st()
    return st.builds(
        lambda m, seed, dens, surf: random_viewers(
            n_candidates, n_users, m, seed=seed, density=dens, surface=surf
        ),
        st.integers(1, max_m),
        st.integers(0, 2**31 - 1),
        st.sampled_from([0.0, 0.05, 0.3]),
        st.sampled_from(list(surfaces)),
    )


def builtin_filters(n_candidates: int, n_users: int):
    """Strategy of random built-in filters (every kind) for the given sizes."""
    st = _st()
    from .filters import (
        BlockItems,
        BlockLabeled,
        CohortRule,
        ContextRisk,
        DemoteRisk,
        ExcludePairs,
        RelationshipRule,
        ShareCap,
        SuppressNeighborhood,
        SuppressRisk,
        ViewerCircuitBreaker,
    )

    n = n_candidates
    seeds = st.integers(0, 2**31 - 1)

    def rng(s):
        return np.random.default_rng(s)

    def risk(s):
        return (rng(s).random(n) ** 2).astype(np.float32)

    surf = st.sampled_from([None, ("suggested_accounts",), ("feed", "search")])
    makers = [
        st.builds(
            lambda s: BlockItems(rng(s).choice(n, size=max(1, n // 8), replace=False)), seeds
        ),
        st.builds(
            lambda s: ExcludePairs(
                sp.random(n_users, n, density=0.1, format="csr", random_state=rng(s))
            ),
            seeds,
        ),
        st.builds(
            lambda s, t: SuppressRisk(risk(s), threshold=t), seeds, st.sampled_from([0.3, 0.6, 1.0])
        ),
        st.builds(
            lambda s, c: DemoteRisk(risk(s), weight=0.5, curve=c),
            seeds,
            st.sampled_from(DemoteRisk.CURVES),
        ),
        st.builds(
            lambda s, a, sf: BlockLabeled(
                ["csam"], labels={"csam": rng(s).random(n) < 0.15}, action=a, surfaces=sf
            ),
            seeds,
            st.sampled_from(["drop", "demote"]),
            surf,
        ),
        st.builds(
            lambda s: SuppressNeighborhood(risk(s), threshold=0.5, demote_threshold=0.2), seeds
        ),
        st.builds(
            lambda s: CohortRule(
                rng(s).integers(-1, 3, n_users),
                rng(s + 1).integers(-1, 2, n),
                [["allow", "drop"], ["drop", "allow"], ["demote", "allow"]],
            ),
            seeds,
        ),
        st.builds(
            lambda s, tr: ViewerCircuitBreaker(risk(s), item_threshold=0.3, trip=tr),
            seeds,
            st.sampled_from([0.1, 0.3, 1.0]),
        ),
        st.builds(
            lambda s, sh: ShareCap(max_share=sh, risk=risk(s), threshold=0.2),
            seeds,
            st.sampled_from([0.0, 0.2, 0.5]),
        ),
        st.builds(lambda s: ShareCap(max_share=0.3, communities=rng(s).integers(-1, 4, n)), seeds),
        st.builds(
            lambda s, k: ContextRisk(
                risk(s), threshold=0.5, pool=risk(s) < 0.2, new_viewer_interactions=k
            ),
            seeds,
            st.sampled_from([0, 2, 10]),
        ),
        st.builds(
            lambda s, a: RelationshipRule(
                rng(s).random(n) < 0.2,
                follows=sp.random(n_users, n, density=0.1, format="csr", random_state=rng(s)),
                action=a,
                weight=0.4,
            ),
            seeds,
            st.sampled_from(["drop", "demote"]),
        ),
    ]
    return st.one_of(makers)


# ============================================================================ checks
class ConformanceError(AssertionError):
    """A filter broke the protocol; the message names the filter and the check."""


def _fail(f, check: str, detail: str) -> ConformanceError:
    return ConformanceError(
        f"Filter {getattr(f, 'name', f)!r} fails conformance check {check!r}: {detail}"
    )


def _parts(f, out, check: str) -> tuple[PlanPart, ...]:
    if out is None:
        return ()
    if isinstance(out, PlanPart):
        return (out,)
    if isinstance(out, (list, tuple)) and all(isinstance(p, PlanPart) for p in out):
        return tuple(out)
    raise _fail(
        f, check, f"returned {type(out).__name__}, not None, a PlanPart or a sequence of PlanParts"
    )


def _check_part(f, p: PlanPart, catalog: Catalog, m: int | None, check: str) -> None:
    n = catalog.n
    if not isinstance(p.name, str) or not p.name or not isinstance(p.reason, str) or not p.reason:
        raise _fail(f, check, "a part without a name or reason code")
    if p.hard_mask is not None and (
        not isinstance(p.hard_mask, np.ndarray)
        or p.hard_mask.dtype != bool
        or p.hard_mask.shape != (n,)
    ):
        raise _fail(f, check, f"hard_mask must be a bool array of shape ({n},)")
    if p.penalty is not None:
        a = p.penalty
        if (
            not isinstance(a, np.ndarray)
            or a.shape != (n,)
            or not np.isfinite(a).all()
            or (a < 0).any()
        ):
            raise _fail(f, check, f"penalty must be a finite, non-negative array of shape ({n},)")
    for attr in ("viewer_mask", "viewer_penalty"):
        a = getattr(p, attr)
        if a is None:
            continue
        if m is None:
            raise _fail(f, check, f"{attr} in a global part")
        if not sp.issparse(a) or a.shape != (m, n):
            raise _fail(f, check, f"{attr} must be sparse of shape ({m}, {n})")
        if attr == "viewer_penalty" and a.nnz and not np.isfinite(a.data).all():
            raise _fail(f, check, "viewer_penalty must be finite")


def _dense(a) -> np.ndarray:
    return np.asarray(a.todense()) if sp.issparse(a) else np.asarray(a)


def _viewer_summary(f, catalog: Catalog, viewers: ViewerBatch) -> dict[str, np.ndarray]:
    """Everything per-viewer a filter compiles for a batch, as dense arrays."""
    m, n = viewers.size, catalog.n
    out = {"drop": np.zeros((m, n), dtype=bool), "pen": np.zeros((m, n), dtype=np.float64)}
    for p in _parts(f, f.compile_viewers(catalog, viewers), "compile_viewers"):
        _check_part(f, p, catalog, m, "compile_viewers")
        if p.viewer_mask is not None:
            out["drop"] |= _dense(p.viewer_mask) != 0
        if p.viewer_penalty is not None:
            out["pen"] += _dense(p.viewer_penalty)
    ac = getattr(f, "assign_cohorts", None)
    if ac is not None and getattr(f, "compile_cohorts", None) is not None:
        out["cohort"] = np.asarray(ac(catalog, viewers))
    cq = getattr(f, "compile_queries", None)
    if cq is not None:
        q = cq(catalog, viewers)
        out["strip"] = (
            np.zeros(
                (m, viewers.user_items.shape[1] if viewers.user_items is not None else 0),
                dtype=bool,
            )
            if q is None
            else _dense(q) != 0
        )
    return out


def check_filter(
    f,
    catalog: Catalog | None = None,
    viewers: ViewerBatch | None = None,
    *,
    n_users: int = 20,
    seed: int = 0,
) -> None:
    """Run the conformance checks on one filter; raise :class:`ConformanceError` on failure.

    Parameters
    ----------
    f : filter
        The filter; or a ``(filter, catalog)`` pair as returned by a plug-in's ``example()``.
    catalog : Catalog, optional
        Defaults to an item catalogue sized from the filter's arrays when it has a
        ``risk``, or 30 candidates.
    viewers : ViewerBatch, optional
        Defaults to a random batch of 6 viewers (some new) with interactions.
    """
    if isinstance(f, tuple) and len(f) == 2:
        f, catalog = f
    if not isinstance(f, FilterProtocol):
        raise _fail(
            f, "protocol", "missing name, reason, compile_global, compile_viewers or fingerprint"
        )
    if not isinstance(f.name, str) or not f.name or not isinstance(f.reason, str) or not f.reason:
        raise _fail(f, "protocol", "name and reason must be non-empty strings")
    if catalog is None:
        risk = getattr(f, "risk", None)
        catalog = Catalog("items", int(risk.shape[0]) if isinstance(risk, np.ndarray) else 30)
    n = catalog.n
    if viewers is None:
        viewers = random_viewers(n, n_users, 6, seed=seed)
    fp = f.fingerprint()
    if not isinstance(fp, bytes) or fp != f.fingerprint():
        raise _fail(f, "fingerprint", "fingerprint() must return the same bytes on every call")
    for mode_attr, choices in (
        ("mode", ("enforce", "shadow", "off")),
        ("failure", ("fail_closed", "fail_open")),
    ):
        v = getattr(f, mode_attr, choices[0])
        if v not in choices:
            raise _fail(f, "settings", f"{mode_attr} must be one of {choices}, got {v!r}")

    # Global parts: shapes, signs, determinism.
    g1 = _parts(f, f.compile_global(catalog), "compile_global")
    g2 = _parts(f, f.compile_global(catalog), "compile_global")
    for p in g1:
        _check_part(f, p, catalog, None, "compile_global")
    if len(g1) != len(g2) or any(
        not _same(a.hard_mask, b.hard_mask) or not _same(a.penalty, b.penalty)
        for a, b in zip(g1, g2, strict=True)
    ):
        raise _fail(f, "determinism", "compile_global must return the same plan on every call")

    # Cohorts and caps.
    cc = getattr(f, "compile_cohorts", None)
    table = cc(catalog) if cc is not None else None
    if table is not None:
        if not isinstance(table, CohortTable):
            raise _fail(f, "compile_cohorts", "must return a CohortTable or None")
        k = table.n_cohorts
        if table.hard_masks is not None and (
            table.hard_masks.dtype != bool or table.hard_masks.shape != (k, n)
        ):
            raise _fail(f, "compile_cohorts", f"hard_masks must be bool of shape ({k}, {n})")
        if table.penalties is not None and (
            table.penalties.shape != (k, n)
            or (table.penalties < 0).any()
            or not np.isfinite(table.penalties).all()
        ):
            raise _fail(
                f, "compile_cohorts", f"penalties must be finite, non-negative, shape ({k}, {n})"
            )
        if getattr(f, "assign_cohorts", None) is None:
            raise _fail(f, "compile_cohorts", "a filter with cohorts must implement assign_cohorts")
    capc = getattr(f, "compile_caps", None)
    caps = capc(catalog) if capc is not None else None
    if caps is not None:
        if (
            not isinstance(caps, CapSpec)
            or caps.groups.shape != (n,)
            or not 0 <= caps.max_share <= 1
        ):
            raise _fail(
                f,
                "compile_caps",
                f"must return a CapSpec with groups of shape ({n},) and a share in [0, 1]",
            )

    # Per-viewer parts: shapes, determinism, and batch == rows.
    whole = _viewer_summary(f, catalog, viewers)
    gpen = np.zeros(n)
    for p in g1:
        if p.penalty is not None:
            gpen += p.penalty
    if (whole["pen"] + gpen[None, :] < -1e-6).any():
        raise _fail(
            f,
            "compile_viewers",
            "net penalties (global plus per-viewer) must be non-negative: a demotion never boosts",
        )
    again = _viewer_summary(f, catalog, viewers)
    for k in whole:
        if not np.array_equal(whole[k], again[k]):
            raise _fail(f, "determinism", f"per-viewer {k} differs between two identical calls")
    if "cohort" in whole:
        c = whole["cohort"]
        k = table.n_cohorts if table is not None else 0
        if c.shape != (viewers.size,) or (c.size and (c.min() < -1 or c.max() >= max(k, 0))):
            raise _fail(
                f, "assign_cohorts", f"must return ints in [-1, {k}) of shape ({viewers.size},)"
            )
    if "strip" in whole and viewers.user_items is not None and whole["strip"].size:
        if (whole["strip"] & ~(_dense(viewers.user_items) != 0)).any():
            raise _fail(f, "compile_queries", "may only remove interactions the viewers have")
    for r in range(viewers.size):
        one = _viewer_summary(f, catalog, viewers.take(np.array([r])))
        for k in whole:
            if not np.allclose(whole[k][r : r + 1], one[k], rtol=0, atol=1e-6):
                raise _fail(
                    f,
                    "batch consistency",
                    f"row {r}'s per-viewer {k} differs from compiling it alone",
                )

    # A policy of just this filter compiles, and its version is stable.
    from .policy import Policy

    pol = Policy([f])
    if pol.version != Policy([f]).version:
        raise _fail(f, "policy", "the policy version is not stable")


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def check_guard_respects(
    f, catalog: Catalog, viewers: ViewerBatch, *, n_factors: int = 4, N: int = 5, seed: int = 0
) -> None:
    """Serve ``viewers`` through a real Guard with ``f`` and check the safety invariants.

    Nothing the filter drops for a viewer is ever in that viewer's slate; share caps hold;
    batch results equal one-viewer results; the slate is full whenever enough candidates
    are allowed (without caps).
    """
    from .guard import Guard
    from .models import FactorModel
    from .policy import Policy, _CallCache

    if catalog.kind != "items":
        return
    n = catalog.n
    rng = np.random.default_rng(seed)
    n_users = int(max(viewers.userids.max(initial=0) + 1, 1)) if viewers.userids is not None else 1
    model = FactorModel(rng.normal(size=(n_users, n_factors)), rng.normal(size=(n, n_factors)))
    pol = Policy([f])
    guard = Guard(model, pol, snapshot=catalog.snapshot, num_threads=1)
    ui = (
        viewers.user_items
        if viewers.user_items is not None
        else sp.csr_matrix((viewers.size, n), dtype=np.float32)
    )
    res = guard.recommend_detailed(
        viewers.userids, ui, N=N, surface=viewers.surface, recalculate_user=False
    )
    ids = res.ids
    cp = pol.compiled(Catalog("items", n, catalog.snapshot))
    vb = ViewerBatch(viewers.userids, ui, viewers.surface, viewers.size)
    cache = _CallCache(vb)
    rr, cc = np.nonzero(ids >= 0)
    served = ids[rr, cc]
    enf = cp.active(viewers.surface)[0]
    if 0 in enf:
        act, _ = cp.pair_actions(cache, 0, rr, served)
        if (act == 2).any():
            j = int(np.flatnonzero(act == 2)[0])
            raise _fail(
                f, "never serves a drop", f"item {int(served[j])} was served to row {int(rr[j])}"
            )
        caps = cp.caps[0]
        if caps is not None:
            allow = caps.allowance(ids.shape[1])
            for r in range(ids.shape[0]):
                g = caps.groups[ids[r][ids[r] >= 0]]
                g = g[g >= 0]
                if g.size and np.bincount(g).max() > allow:
                    raise _fail(
                        f,
                        "share cap",
                        f"row {r} has {np.bincount(g).max()} items of one group, above {allow}",
                    )
    if (ids[rr, cc] < 0).any() or len(np.unique(np.c_[rr, served], axis=0)) != rr.size:
        raise _fail(f, "slate", "duplicate or invalid ids in a slate")
    for r in range(viewers.size):
        one = guard.recommend_detailed(
            viewers.userids[r : r + 1], ui[r], N=N, surface=viewers.surface
        )
        if not np.array_equal(one.ids[0], ids[r]):
            raise _fail(f, "batch equals single", f"row {r} differs from its single-viewer slate")


class FilterConformance:
    """A pytest mixin: subclass it and implement :meth:`make_filter`.

    Class attributes ``n_candidates``, ``n_users`` and ``max_examples`` size the runs.
    """

    n_candidates = 40
    n_users = 25
    max_examples = 25

    def make_filter(
        self, n_candidates: int, n_users: int, seed: int
    ) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError("Implement make_filter(n_candidates, n_users, seed) -> filter.")

    def catalog(self) -> Catalog:
        return Catalog("items", self.n_candidates)

    def test_protocol_and_batches(self):
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        @settings(
            max_examples=self.max_examples, deadline=None, suppress_health_check=list(HealthCheck)
        )
        @given(
            seed=st.integers(0, 2**31 - 1), viewers=viewer_batches(self.n_candidates, self.n_users)
        )
        def run(seed, viewers):
            check_filter(
                self.make_filter(self.n_candidates, self.n_users, seed), self.catalog(), viewers
            )

        run()

    def test_guard_respects_filter(self):
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        @settings(
            max_examples=max(5, self.max_examples // 2),
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            seed=st.integers(0, 2**31 - 1),
            viewers=viewer_batches(self.n_candidates, self.n_users),
            N=st.integers(1, 8),
        )
        def run(seed, viewers, N):
            f = self.make_filter(self.n_candidates, self.n_users, seed)
            vb = ViewerBatch(
                np.minimum(viewers.userids, self.n_users - 1),
                viewers.user_items,
                viewers.surface,
                viewers.size,
            )
            check_guard_respects(f, self.catalog(), vb, N=N, seed=seed)

        run()
