"""The policy run's fast paths equal the straightforward computations they replace.

- viewer groups keyed by one packed int (``_run.group_rows``) equal ``np.unique(axis=0)``;
- the relationship rule's give-back cells equal ``followed(...) > 0`` on the targets;
- the circuit breaker's stripped cells equal the diagonal-product formula;
- with every built-in filter on (cohorts, breaker, share cap, relationships), a batch
  serves each viewer bit for bit what a single-viewer call serves, never a suppressed id,
  and full slates.
"""

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worlds import BREAKER, COHORTS, every_filter_case

import guardrails as gr
from guardrails.filters import (
    CohortRule,
    DemoteRisk,
    ExcludePairs,
    RelationshipRule,
    ShareCap,
    ViewerCircuitBreaker,
)
from guardrails.filters.base import Catalog, ViewerBatch
from guardrails.policy._run import GroupRows, group_rows

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
NU, NI, F = 24, 60, 5


def _reference_groups(cols):
    keys = np.stack(cols, axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    groups = [(np.flatnonzero(inv == k), uniq[k]) for k in range(uniq.shape[0])]
    return [(None, uniq[0])] if len(groups) == 1 else groups


@SETTINGS
@given(data=st.data(), m=st.integers(2, 40), k=st.integers(1, 4), wide=st.booleans())
def test_group_rows_equals_unique_rows(data, m, k, wide):
    hi = 2**40 if wide else 4  # wide: the packed key would overflow, the fallback runs
    cols = [
        np.array(data.draw(st.lists(st.integers(-1, hi), min_size=m, max_size=m)), np.int64)
        for _ in range(k)
    ]
    got, want = group_rows(cols), _reference_groups(cols)
    assert len(got) == len(want)
    for (gr_, gk), (wr, wk) in zip(got, want, strict=True):
        assert (gr_ is None) == (wr is None)
        if wr is not None:
            assert np.array_equal(gr_, wr)
        assert np.array_equal(gk, wk) and gk.dtype == np.int64


@SETTINGS
@given(
    data=st.data(),
    m=st.integers(2, 30),
    k=st.integers(1, 3),
    dup=st.booleans(),
    array=st.booleans(),
)
def test_group_row_slices_equal_fancy_row_indexing(data, m, k, dup, array):
    """Each viewer group's rows of a per-viewer matrix, sliced once per batch, equal
    ``matrix[rows]`` cell for cell and in stored order (sparse matrices and arrays,
    duplicate and explicit-zero cells included; dense arrays fall back to indexing)."""
    cols = [
        np.array(data.draw(st.lists(st.integers(-1, 2), min_size=m, max_size=m)), np.int64)
        for _ in range(k)
    ]
    groups = group_rows(cols)
    take = GroupRows(groups)
    mats = [_cells(data, m, 7, dup), _cells(data, m, 5, False)]
    if array:
        mats = [sp.csr_array(x) for x in mats]
    dense = np.arange(m * 3, dtype=np.float32).reshape(m, 3)
    for _ in range(2):  # a second pass reuses the permuted matrices
        for j, (rows, _key) in enumerate(groups):
            for x in mats:
                got, want = take(x, j), (x if rows is None else x[rows])
                assert type(got) is type(want) and got.shape == want.shape
                assert got.dtype == want.dtype and got.indices.dtype == want.indices.dtype
                assert np.array_equal(got.indptr, want.indptr)
                assert np.array_equal(got.indices, want.indices)
                assert np.array_equal(got.data, want.data)
            d = take(dense, j)
            assert np.array_equal(d, dense if rows is None else dense[rows])


def _cells(data, m, n, dup):
    nnz = data.draw(st.integers(0, m * n // 3))
    r = np.array(data.draw(st.lists(st.integers(0, m - 1), min_size=nnz, max_size=nnz)), np.int64)
    c = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=nnz, max_size=nnz)), np.int64)
    vals = st.sampled_from([0.0, 1.0, 2.5, -1.0])
    v = np.array(data.draw(st.lists(vals, min_size=nnz, max_size=nnz)), np.float32)
    csr = sp.csr_matrix((v, (r, c)), shape=(m, n))
    if dup:
        # Not canonical: every cell stored twice, as (value + 1) and -1 (zeros included).
        k = np.diff(csr.indptr)
        csr = sp.csr_matrix(
            (
                np.stack([csr.data + 1, -np.ones_like(csr.data)], axis=1).ravel(),
                np.repeat(csr.indices, 2),
                np.r_[0, np.cumsum(2 * k)],
            ),
            shape=(m, n),
        )
    return csr


@SETTINGS
@given(data=st.data(), dup=st.booleans(), use_ui=st.booleans(), with_follows=st.booleans())
def test_relationship_give_back_cells_equal_followed_targets(data, dup, use_ui, with_follows):
    m = data.draw(st.integers(1, 8))
    targets = np.array(data.draw(st.lists(st.integers(0, NI - 1), min_size=1, max_size=10)))
    follows = _cells(data, 6, NI, False) if with_follows else None
    f = RelationshipRule(
        targets, follows=follows, use_call_interactions=use_ui, action="demote", weight=0.7
    )
    ui = _cells(data, m, NI, dup)
    userids = np.array(data.draw(st.lists(st.integers(0, 9), min_size=m, max_size=m)), np.int64)
    viewers = ViewerBatch(userids, ui)
    cat = Catalog("items", NI)
    is_target = np.zeros(NI, np.float32)
    is_target[f.targets_] = 1
    want = sp.csr_matrix((f.followed(cat, viewers) > 0).astype(np.float32) @ sp.diags(is_target))
    want.eliminate_zeros()
    got = f.followed_targets(cat, viewers)
    assert got.shape == want.shape and got.nnz == want.nnz
    assert (got != want).nnz == 0
    part = f.compile_viewers(cat, viewers)
    if want.nnz:
        assert np.all(part.viewer_penalty.data == -np.float32(0.7))
        assert ((part.viewer_penalty != 0) != (want != 0)).nnz == 0
    else:
        assert part is None


@SETTINGS
@given(data=st.data(), dup=st.booleans(), trip=st.sampled_from([0.05, 0.3, 0.6]))
def test_breaker_stripped_cells_equal_diagonal_products(data, dup, trip):
    m = data.draw(st.integers(1, 8))
    risk = np.array(data.draw(st.lists(st.floats(0, 1), min_size=NI, max_size=NI)), np.float32)
    f = ViewerCircuitBreaker(risk, item_threshold=0.4, trip=trip)
    ui = _cells(data, m, NI, dup)
    viewers = ViewerBatch(np.arange(m), ui)
    got = f.compile_queries(Catalog("items", NI), viewers)
    tripped = f.tripped(viewers)
    if not tripped.any():
        assert got is None
        return
    outside = (~f.low_risk_pool()).astype(np.float32)
    want = sp.diags(tripped.astype(np.float32)) @ (ui != 0).astype(np.float32) @ sp.diags(outside)
    want = sp.csr_matrix(want)
    want.eliminate_zeros()
    assert got.shape == want.shape and got.nnz == want.nnz
    assert (got != want).nnz == 0


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), N=st.integers(1, 8))
def test_every_filter_batch_equals_single_calls(seed, N):
    model, pol, ui, suppressed, pairs = every_filter_case(seed, n_users=NU, n_items=NI, n_factors=F)
    g = gr.Guard(model, pol)
    users = np.arange(NU)
    ids, scores = g.recommend(users, ui, N=N)
    for r, u in enumerate(users):
        one, s1 = g.recommend(int(u), ui[r], N=N)
        row = ids[r][ids[r] >= 0]
        assert np.array_equal(one, row) and np.array_equal(s1, scores[r][ids[r] >= 0])
        assert not suppressed[row].any()
        assert not np.isin(row, pairs[u].indices).any()
    # Viewers not tripped, in cohort 0 (which drops nothing), have far more than N eligible
    # items here.
    plain = ~pol.filters[BREAKER].tripped(ViewerBatch(users, ui)) & (
        pol.filters[COHORTS].viewer_cohorts_ == 0
    )
    assert ((ids[plain] >= 0).sum(axis=1) == N).all()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 10_000),
    N=st.integers(1, 9),
    share=st.sampled_from([0.0, 0.15, 0.3, 0.5, 1.0]),
    lean=st.booleans(),
)
def test_single_group_share_cap_equals_greedy_over_the_full_ranking(seed, N, share, lean):
    """The one-group cap's two ways (whole space first with a re-fetch of the rows where
    the cap binds; split in and out of the group) serve exactly greedy capped selection
    over the uncapped ranking, with per-viewer masks, penalties, cohorts and stripped
    queries in play."""
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(NU, F)), rng.normal(size=(NI, F))
    risk = (rng.random(NI) ** 2).astype(np.float32)
    if lean:  # viewers leaning into the risky items, so the cap binds on many rows
        U[: NU // 2] = V[np.argmax(risk)] * 2.0
    model = gr.FactorModel(U, V)
    pairs = sp.random(NU, NI, density=0.05, format="csr", random_state=seed)
    follows = sp.random(NU, NI, density=0.1, format="csr", random_state=seed + 1)
    base = [
        ExcludePairs(pairs),
        DemoteRisk(risk, weight=0.7),
        CohortRule(
            rng.integers(0, 2, NU), rng.integers(0, 2, NI), [["allow", "allow"], ["drop", "allow"]]
        ),
        ViewerCircuitBreaker(risk, item_threshold=0.5, trip=0.3),
        RelationshipRule(rng.random(NI) < 0.1, follows=follows, action="demote", weight=0.5),
    ]
    cap = ShareCap(max_share=share, risk=risk, threshold=0.4)
    users = np.arange(NU)
    ui = sp.random(NU, NI, density=0.15, format="csr", random_state=seed + 2, dtype=np.float32)
    from guardrails.core.select import greedy

    full_ids, full_sc = gr.Guard(model, base).recommend(users, ui, N=NI)
    spec = cap.compile_caps(Catalog("items", NI))
    want_ids, want_sc, _ = greedy(full_ids.astype(np.int64), full_sc, [(0, spec)], N)
    g = gr.Guard(model, base + [cap])
    # The first call computes the whole space first; the next ones pick by how many
    # rows filled the cap (split where many did, as when half the viewers lean in).
    for _ in range(2):
        ids, scores = g.recommend(users, ui, N=N)
        assert np.array_equal(ids, want_ids)
        assert np.array_equal(scores, want_sc)


def test_filters_read_a_matrix_whose_duplicates_scipy_summed_in_place():
    # scipy sums a shared matrix's duplicate cells in place (here through another
    # wrapper's `!= 0`): the caller's matrix then has arrays longer than its cells.
    # canonical_csr trims them, so the filters reading `indices` and `data` whole see
    # each cell once.
    from guardrails._validation import canonical_csr

    ui = sp.csr_matrix(
        (np.array([1.0, -1.0, 2.0], np.float32), np.array([0, 0, 3]), np.array([0, 2, 3])),
        shape=(2, NI),
    )
    _ = sp.csr_matrix(ui) != 0  # sums (0, 0)'s duplicates into ui's own arrays
    assert ui.indices.shape[0] > ui.indptr[-1]
    c = canonical_csr(ui)
    assert c.indices.shape[0] == c.data.shape[0] == c.indptr[-1] == 2
    np.testing.assert_array_equal(c.toarray(), ui.toarray())
    f = RelationshipRule(np.array([0, 3]), use_call_interactions=True, action="demote", weight=0.5)
    got = f.followed_targets(Catalog("items", NI), ViewerBatch(np.array([0, 1]), ui))
    np.testing.assert_array_equal(got.toarray()[:, [0, 3]], [[0, 0], [0, 1]])
