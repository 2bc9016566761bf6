"""Large demotions: the kernel's pruning keeps working, and stays exact.

A demotion of a million score units (a folded global penalty, or a per-viewer penalty)
puts the demoted cells far below every slate. Their float32 values round by about
``eps * 1e6``, so a rounding bound taken as ``eps`` times the largest penalty would let
every cell of the row survive pruning, and a skip bound that adds the largest absolute
penalty would never skip a tile. The kernel bounds a demoted cell's rounding relative to
its own value and lets a demotion only lower the skip bound; a per-viewer penalty that
restores a folded demotion (a negative cell, as FollowGraph's followers get) keeps the
loose bound for its row only. These tests pin both: exact slates against a float64 brute
force, batch == single and fused == unfused bit for bit, and the counts of computed and
rescored cells (``stats``) on a skewed catalogue.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails.core.kernel import HAS_COMPILED_TILE, FactorSpace, guarded_topk

BACKENDS = ["numpy", "compiled"] if HAS_COMPILED_TILE else ["numpy"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _demoted(rng, m, n, d, fold_share, view_share, restore_share, weight):
    V = rng.standard_normal((n, d)) * (rng.pareto(1.0, n) + 0.01)[:, None]
    Q = rng.standard_normal((m, d))
    pen = None
    if fold_share:
        pen = np.where(rng.random(n) < fold_share, weight, 0.0).astype(np.float32)
    vp = sp.random(m, n, density=view_share, format="csr", random_state=rng, dtype=np.float64)
    vp.data[:] = weight
    if pen is not None and restore_share:
        # Followers get a folded demotion back: a negative cell cancelling it.
        rows, cols = np.nonzero((rng.random((m, n)) < restore_share) & (pen[None, :] > 0))
        back = sp.csr_matrix((-pen[cols].astype(np.float64), (rows, cols)), shape=(m, n))
        vp = sp.csr_matrix(vp + back)
    return Q.astype(np.float32), V.astype(np.float32), pen, vp


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 6),
    n=st.integers(64, 400),
    d=st.integers(1, 6),
    fold_share=st.sampled_from([0.0, 0.3]),
    view_share=st.sampled_from([0.0, 0.1, 0.5]),
    restore_share=st.sampled_from([0.0, 0.2]),
    weight=st.sampled_from([2.0, 1e6, 1e12]),
    N=st.integers(1, 8),
    tile=st.sampled_from([0, 8, 32]),
    width=st.integers(1, 4),
    backend=st.sampled_from(BACKENDS),
)
def test_large_demotions_stay_exact_and_batch_independent(
    seed, m, n, d, fold_share, view_share, restore_share, weight, N, tile, width, backend
):
    rng = np.random.default_rng(seed)
    Q, V, pen, vp = _demoted(rng, m, n, d, fold_share, view_share, restore_share, weight)
    hard = rng.random(n) < 0.1
    space = FactorSpace.build(V, hard_mask=hard, penalty=pen, block_width=width)

    def run(rows, tile_items):
        return guarded_topk(
            space,
            Q[rows],
            N,
            viewer_penalties=[vp[rows]],
            block_rows=2,
            num_threads=1,
            tile_items=tile_items,
            backend=backend,
        )

    every = np.arange(m)
    ids, scores = run(every, tile)
    ids0, scores0 = run(every, 0)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(scores, scores0)
    raw = Q.astype(np.float64) @ V.astype(np.float64).T - vp.toarray()
    if pen is not None:
        raw -= pen.astype(np.float64)[None, :]
    for r in range(m):
        one_ids, one_scores = run(np.array([r]), tile)
        np.testing.assert_array_equal(one_ids[0], ids[r])
        np.testing.assert_array_equal(one_scores[0], scores[r])
        got = ids[r][ids[r] >= 0]
        assert not hard[got].any()
        assert got.size == min(N, int((~hard).sum()))
        want = np.sort(raw[r, ~hard])[::-1][: got.size]
        # float64 sums in another order: far below any gap a lost item would leave
        np.testing.assert_allclose(raw[r, got], want, rtol=1e-9, atol=1e-9)


def _skewed_case(seed=7, m=60, n=6000, d=8):
    rng = np.random.default_rng(seed)
    V = (rng.standard_normal((n, d)) * (rng.pareto(1.0, n) + 0.01)[:, None]).astype(np.float32)
    Q = rng.standard_normal((m, d)).astype(np.float32)
    return rng, Q, V


def _stats(space, Q, vp, backend, tile=64):
    stats: dict = {}
    out = guarded_topk(
        space,
        Q,
        10,
        viewer_penalties=[] if vp is None else [vp],
        tile_items=tile,
        num_threads=1,
        stats=stats,
        backend=backend,
    )
    return out, stats


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["viewer", "folded"])
def test_a_million_unit_demotion_prunes_as_a_small_one(backend, where):
    rng, Q, V = _skewed_case()
    m, n = Q.shape[0], V.shape[0]
    cells = sp.random(m, n, density=0.05, format="csr", random_state=rng, dtype=np.float64)
    demoted = rng.random(n) < 0.05
    counts = {}
    for weight in (2.0, 1e6):
        if where == "viewer":
            vp = cells.copy()
            vp.data[:] = weight
            space = FactorSpace.build(V, block_width=8)
        else:
            vp = None
            space = FactorSpace.build(
                V, penalty=np.where(demoted, weight, 0.0).astype(np.float32), block_width=8
            )
        (ids, scores), stats = _stats(space, Q, vp, backend)
        (ids0, scores0), _ = _stats(space, Q, vp, backend, tile=0)
        np.testing.assert_array_equal(ids, ids0)
        np.testing.assert_array_equal(scores, scores0)
        counts[weight] = stats
    small, large = counts[2.0], counts[1e6]
    # Most of the skewed catalogue is skipped, a large demotion or a small one ...
    assert large["scored"] < 0.5 * large["cells"]
    assert large["scored"] <= small["scored"] * 1.1
    # ... and the survivors rescored exactly stay a handful per row (not the row).
    assert large["rescored"] <= 2 * small["rescored"] + 10 * m
    assert large["rescored"] < 0.05 * large["cells"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_restored_demotions_keep_the_loose_bound_on_their_rows_only(backend):
    # A follower's cell restores a folded million-unit demotion: its float32 value
    # carries that demotion's rounding, so its row prunes less; the other rows do not.
    rng, Q, V = _skewed_case(seed=3)
    m, n = Q.shape[0], V.shape[0]
    pen = np.where(rng.random(n) < 0.05, 1e6, 0.0).astype(np.float32)
    space = FactorSpace.build(V, penalty=pen, block_width=8)
    target = int(np.flatnonzero(pen > 0)[0])
    vp = sp.csr_matrix(([-1e6], ([0], [target])), shape=(m, n))
    (ids, scores), stats = _stats(space, Q, vp, backend)
    (ids0, scores0), _ = _stats(space, Q, vp, backend, tile=0)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(scores, scores0)
    (_, _), base = _stats(space, Q[1:], None, backend)
    (_, _), one = _stats(space, Q[:1], vp[:1], backend)
    assert stats["rescored"] <= base["rescored"] + one["rescored"]
    assert stats["scored"] < 0.5 * stats["cells"]
    # the restored item scores what it would without either demotion
    raw = Q[0].astype(np.float64) @ V[target].astype(np.float64)
    if target in ids[0]:
        k = int(np.flatnonzero(ids[0] == target)[0])
        assert scores[0, k] == pytest.approx(raw, rel=1e-6, abs=1e-6)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 40),
    n=st.integers(8, 120),
    n_pens=st.integers(1, 3),
    density=st.sampled_from([0.02, 0.2, 0.6]),
    neg_share=st.sampled_from([0.0, 0.3, 1.0]),
    mask_density=st.sampled_from([0.0, 0.1, 0.5]),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    unmask_rows=st.sampled_from([1, 3, 512]),
    scan=st.booleans(),
)
def test_call_penalties_slice_equals_the_per_chunk_terms(
    seed, m, n, n_pens, density, neg_share, mask_density, cuts, unmask_rows, scan
):
    # The kernel sums a call's per-viewer penalties once (CallPenalties) and slices
    # them per chunk; each slice must be what the chunk computed on its own: the same
    # cells and float64 totals, lookups, rows with penalties, and restored cells past
    # the same masks. With ``scan``, the call's mask test runs in the compiled step
    # (where it was built); the per-chunk reference stays in numpy.
    from guardrails.core._exact import CallPenalties, TopkCall, compiled_step

    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, 3)).astype(np.float32)
    hard = rng.random(n) < 0.2
    space = FactorSpace.build(V, hard_mask=hard, block_width=4)
    n_cols = space.width * space.n_blocks
    pens = []
    for _ in range(n_pens):
        p = sp.random(m, n, density=density, format="csr", random_state=rng, dtype=np.float64)
        p.data[:] = np.where(rng.random(p.nnz) < neg_share, -1.0, 1.0) * rng.random(p.nnz)
        pens.append(p)
    masks = [sp.random(m, n, density=mask_density, format="csr", random_state=rng)]
    masks = [x for x in masks if x.nnz]
    call_cols = space.pos[rng.choice(n, size=3)]
    call_cols = call_cols[call_cols >= 0]
    import guardrails.core._exact as exact

    before, exact._UNMASK_ROWS = exact._UNMASK_ROWS, unmask_rows  # blocks of the mask test
    try:
        terms = CallPenalties.build(
            space, pens, m, n_cols, True, call_cols, masks, None, compiled_step() if scan else None
        )
    finally:
        exact._UNMASK_ROWS = before
    out = np.zeros((m, 1))
    args = (space, None, 1, call_cols, masks, pens, out, out)
    whole, alone = TopkCall(*args, terms=terms), TopkCall(*args)
    bounds = sorted({0, m, *(c for c in cuts if c <= m)})
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        got = whole.chunk_penalties(lo, hi, n_cols, True)
        want = alone.chunk_penalties(lo, hi, n_cols, True)
        np.testing.assert_array_equal(got[2], want[2])
        for g, w in ((got[0], want[0]), (got[3], want[3])):
            assert (g is None) == (w is None)
            if g is not None:
                for a, b in zip(g, w, strict=True):
                    np.testing.assert_array_equal(a, b)
        assert (got[1] is None) == (want[1] is None)
        if got[1] is not None:
            np.testing.assert_array_equal(got[1].keys, want[1].keys)
            np.testing.assert_array_equal(got[1].vals, want[1].vals)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 30),
    n=st.integers(4, 80),
    density=st.sampled_from([0.05, 0.3, 0.9]),
)
def test_penalty_cells_of_one_canonical_matrix_skip_the_sort_with_the_same_totals(
    seed, m, n, density
):
    # One canonical matrix's cells are sorted and distinct: penalty_cells takes them as
    # they are. Split into two matrices of disjoint cells, the same cells go through the
    # sort and the per-cell sum; both must give the same cells and float64 bits
    # (signed zeros and NaN included).
    from guardrails.core._exact import penalty_cells

    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, 2)).astype(np.float32)
    space = FactorSpace.build(V, hard_mask=rng.random(n) < 0.2, block_width=2)
    p = sp.random(m, n, density=density, format="coo", random_state=rng, dtype=np.float64)
    special = rng.choice([0.0, -0.0, np.nan, 1e30], size=p.nnz)
    data = np.where(rng.random(p.nnz) < 0.2, special, p.data - 0.5)
    half = rng.random(p.nnz) < 0.5

    def csr(sel):
        return sp.csr_matrix((data[sel], (p.row[sel], p.col[sel])), shape=(m, n))

    n_cols = space.width * space.n_blocks
    one = penalty_cells(space, 0, m, [csr(np.ones(p.nnz, bool))], n_cols)
    two = penalty_cells(space, 0, m, [csr(half), csr(~half)], n_cols)
    assert (one is None) == (two is None)
    if one is not None:
        for x, y in zip(one, two, strict=True):
            np.testing.assert_array_equal(x, y)
        assert (np.signbit(one[2]) == np.signbit(two[2])).all()


def test_per_call_penalty_terms_keep_memory_bounded_by_chunks():
    # Restored cells are tested against the masks' cells of their rows: a block of rows at
    # a time, so a batch with a give-back on every row and a long mask per row does not
    # hold every row's mask cells at once (it grew by about 10 KB per row when it did).
    import tracemalloc

    rng = np.random.default_rng(0)
    n, per = 20_000, 300
    space = FactorSpace.build(rng.standard_normal((n, 8)).astype(np.float32))

    def peak(m):
        Q = rng.standard_normal((m, 8)).astype(np.float32)
        idx = np.sort(rng.integers(0, n, (m, per)), axis=1).ravel()
        mask = sp.csr_matrix((np.ones(m * per, np.float32), idx, np.arange(m + 1) * per), (m, n))
        back = sp.csr_matrix(
            (-np.ones(m, np.float32), rng.integers(0, n, m), np.arange(m + 1)), shape=(m, n)
        )
        kw = dict(viewer_masks=[mask], viewer_penalties=[back], num_threads=2, tile_items=0)
        guarded_topk(
            space,
            Q[:256],
            10,
            **{**kw, "viewer_masks": [mask[:256]], "viewer_penalties": [back[:256]]},
        )
        tracemalloc.start()
        guarded_topk(space, Q, 10, **kw)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    small, large = peak(2_000), peak(12_000)
    assert large - small < 8 * 2**20


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 30),
    n=st.integers(2, 60),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    n_cells=st.integers(0, 80),
    wide=st.booleans(),
    shuffle=st.booleans(),
    lo=st.integers(0, 5),
)
def test_compiled_mask_test_of_restored_cells_equals_numpy(
    seed, m, n, density, n_cells, wide, shuffle, lo
):
    # The restored cells' mask test (_unmasked) reads each cell's mask row in the compiled
    # step (stored_cells) or in numpy (_stored): the same answer for any CSR mask, with
    # int32 or int64 offsets, unsorted and duplicate columns, explicit zeros (stored
    # cells mask whatever their value) and hard-masked items.
    import guardrails.core._exact as exact

    compiled = exact.compiled_step()
    if compiled is None:
        pytest.skip("the compiled step was not built")
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, 2)).astype(np.float32)
    space = FactorSpace.build(V, hard_mask=rng.random(n) < 0.3, block_width=2)
    n_cols = space.width * space.n_blocks
    coo = sp.random(m + lo, n, density=density, format="coo", random_state=rng)
    extra = rng.integers(0, coo.nnz + 1)  # duplicates and explicit zeros
    rows = np.r_[coo.row, coo.row[:extra]]
    cols = np.r_[coo.col, coo.col[:extra]]
    data = np.r_[coo.data, np.zeros(extra)]
    if shuffle:
        order = rng.permutation(rows.size)
        rows, cols, data = rows[order], cols[order], data[order]
    mask = sp.csr_matrix((m + lo, n))
    counts = np.bincount(rows, minlength=m + lo)
    order = np.argsort(rows, kind="stable")
    it = np.int64 if wide else np.int32
    mask.indptr = np.r_[0, np.cumsum(counts)].astype(it)
    mask.indices = cols[order].astype(it)
    mask.data = data[order]
    eligible = np.flatnonzero(space.pos >= 0)
    if eligible.size == 0:
        return
    c_rows = np.sort(rng.integers(0, m, n_cells)).astype(np.int64)
    c_cols = space.pos[rng.choice(eligible, n_cells)].astype(np.int64)
    want = exact._unmasked(c_rows, c_cols, None, [mask], lo, space.pos, n_cols, None)
    before, exact._SCAN_REREADS = exact._SCAN_REREADS, 1 << 40  # the compiled scan runs
    try:
        assert c_rows.size == 0 or exact._scan_pays(mask.indptr, lo + c_rows)
        got = exact._unmasked(
            c_rows, c_cols, None, [mask], lo, space.pos, n_cols, None, space.ids, compiled
        )
    finally:
        exact._SCAN_REREADS = before
    np.testing.assert_array_equal(got, want)
    dense = np.zeros((m + lo, n), dtype=bool)
    dense[rows, cols] = True
    np.testing.assert_array_equal(want, ~dense[lo + c_rows, space.ids[c_cols]])


def test_compiled_mask_test_leaves_long_shared_rows_to_numpy():
    # Each restored cell scans its whole mask row: many cells on one long row would read
    # it again and again, so numpy (which reads each row once) takes that case.
    from guardrails.core._exact import _scan_pays

    indptr = np.array([0, 100_000, 100_010], dtype=np.int64)
    assert not _scan_pays(indptr, np.zeros(50, dtype=np.int64))
    assert _scan_pays(indptr, np.zeros(1, dtype=np.int64))
    assert _scan_pays(indptr, np.ones(50, dtype=np.int64))


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 30),
    n=st.integers(2, 60),
    density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    hard=st.sampled_from([0.0, 0.5, 0.95]),
    lo=st.integers(0, 30),
    size=st.integers(0, 30),
)
def test_mask_cells_of_a_chunk_equal_the_general_cells(seed, m, n, density, hard, lo, size):
    # chunk_mask_cells finds the kept cells' rows one of two ways (expanding a row per
    # stored cell, or from the row offsets where most cells fall outside the space):
    # either way the rows and columns chunk_cells gives, in the same order.
    from guardrails.core._exact import chunk_cells, chunk_mask_cells

    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, 2)).astype(np.float32)
    space = FactorSpace.build(V, hard_mask=rng.random(n) < hard, block_width=2)
    mask = sp.random(m, n, density=density, format="csr", random_state=rng)
    lo = min(lo, m)
    hi = min(m, lo + size)
    want = chunk_cells(mask, lo, hi, space.pos)
    got = chunk_mask_cells(mask, lo, hi, space.pos)
    for g, w in zip(got, want[:2], strict=True):
        assert g.dtype == np.int64 or g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
