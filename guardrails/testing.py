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

from .exceptions import ConformanceError, missing_extra
from .filters import (
    BlockItems,
    BlockLabeled,
    Catalog,
    CohortRule,
    ContextRisk,
    DemoteRisk,
    ExcludePairs,
    RelationshipRule,
    ShareCap,
    SuppressNeighborhood,
    SuppressRisk,
    ViewerBatch,
    ViewerCircuitBreaker,
)
from .filters._contract import check_conformance, example_parts, random_viewers
from .guard import Guard
from .models import FactorModel
from .policy import CallCache, Policy

__all__ = [
    "check_filter",
    "ConformanceError",
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
            lambda s, k, e, c: ContextRisk(
                risk(s),
                threshold=0.5,
                pool=risk(s) < 0.2,
                new_viewer_interactions=k,
                exclude_viewed=e,
                strip_context=c,
            ),
            seeds,
            st.sampled_from([0, 2, 10]),
            st.booleans(),
            st.booleans(),
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
def check_filter(
    f,
    catalog: Catalog | None = None,
    viewers: ViewerBatch | None = None,
    *,
    n_users: int = 20,
    seed: int = 0,
) -> None:
    """Run the conformance checks on one filter; raise :class:`ConformanceError` on failure.

    The checks are the filter contract a policy applies (the same code), plus
    determinism, batch consistency and a stable policy version.

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
    f, default = example_parts(f)
    catalog = default if catalog is None else catalog
    if viewers is None:
        viewers = random_viewers(catalog.n, n_users, 6, seed=seed)
    check_conformance(f, catalog, viewers)
    # A policy of just this filter compiles, and its version is stable.
    pol = Policy([f])
    if pol.version != Policy([f]).version:
        raise ConformanceError(
            f"Filter {f.name!r} fails conformance check 'policy': the policy version is not stable"
        )


def _fail(f, check: str, detail: str) -> ConformanceError:
    return ConformanceError(
        f"Filter {getattr(f, 'name', f)!r} fails conformance check {check!r}: {detail}"
    )


def check_guard_respects(
    f, catalog: Catalog, viewers: ViewerBatch, *, n_factors: int = 4, N: int = 5, seed: int = 0
) -> None:
    """Serve ``viewers`` through a real Guard with ``f`` and check the safety invariants.

    Nothing the filter drops for a viewer is ever in that viewer's slate; share caps hold;
    batch results equal one-viewer results; the slate is full whenever enough candidates
    are allowed (without caps).
    """
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
    cache = CallCache(vb)
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
        caps = cp.filters[0].caps
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
