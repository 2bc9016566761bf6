"""The kernel's pruned selection, against a brute force, with narrow blocks.

Narrow blocks (width 1 to 8) make the pruning path (block maxima, threshold, gather)
run on small catalogues, where the Guard's default width would score everything.
Narrow tiles (``tile_items``) do the same for the fused path, which must return the
unfused path's ids and scores bit for bit. Items with widely spread norms (as trained
factors have) let the fused path skip tiles by its norm bound; those problems check that
it does skip, and that what it returns is still exact, whatever the batch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worlds import KERNEL_BACKENDS, draw_factors

from guardrails.core.kernel import HAS_COMPILED_TILE, FactorSpace, SimilaritySpace, guarded_topk
from guardrails.exceptions import ValidationError

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = draw(st.integers(1, 12))
    n = draw(st.integers(1, 200))
    d = draw(st.integers(1, 5))
    Q, V, ties = draw_factors(draw, rng, m, n, d)
    hard = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.95]))
    pen = None
    if draw(st.booleans()):
        pen = (rng.random(n) * draw(st.sampled_from([0.5, 10.0]))).astype(np.float32)
    vm = sp.random(
        m, n, density=draw(st.sampled_from([0.0, 0.2, 0.9])), format="csr", random_state=rng
    )
    vp = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.3])), format="csr", random_state=rng)
    if draw(st.booleans()):
        # Negative viewer penalties are boosts: they lift scores above the norm bound.
        vp.data = (vp.data - 0.5) * 4.0
    call = (
        rng.choice(n, size=rng.integers(0, n + 1), replace=False) if draw(st.booleans()) else None
    )
    return dict(Q=Q, V=V, hard=hard, pen=pen, vm=vm, vp=vp, call=call, m=m, n=n, ties=ties)


def _expected(p, N):
    Q, V = p["Q"].astype(np.float64), p["V"].astype(np.float64)
    raw = Q @ V.T
    if p["pen"] is not None:
        raw -= p["pen"].astype(np.float64)[None, :]
    raw -= p["vp"].toarray()
    ok = ~p["hard"][None, :] & (p["vm"].toarray() == 0)
    if p["call"] is not None:
        ok[:, p["call"]] = False
    return raw, ok


@SETTINGS
@given(
    p=problems(),
    width=st.integers(1, 8),
    N=st.integers(1, 30),
    block_rows=st.integers(1, 5),
    threads=st.sampled_from([1, 2]),
    tile=st.sampled_from([0, None, 1, 3, 8, 24, 64]),
    backend=st.sampled_from(KERNEL_BACKENDS),
)
def test_factor_kernel_matches_brute_force(p, width, N, block_rows, threads, tile, backend):
    space = FactorSpace.build(p["V"], hard_mask=p["hard"], penalty=p["pen"], block_width=width)
    ids, scores = guarded_topk(
        space,
        p["Q"],
        N,
        call_mask=p["call"],
        viewer_masks=[p["vm"]],
        viewer_penalties=[p["vp"]],
        block_rows=block_rows,
        num_threads=threads,
        tile_items=tile,
        backend=backend,
    )
    raw, ok = _expected(p, N)
    for r in range(p["m"]):
        cand = np.flatnonzero(ok[r])
        k = min(N, cand.size)
        assert (ids[r, :k] >= 0).all() and (ids[r, k:] == -1).all()
        assert np.isneginf(scores[r, k:]).all()
        got = ids[r, :k]
        assert ok[r, got].all()
        want = cand[np.lexsort((cand, -raw[r, cand]))][:k]
        tol = 1e-5 * (1 + np.abs(raw[r]).max())
        np.testing.assert_allclose(raw[r, got], raw[r, want], rtol=0, atol=tol)
        np.testing.assert_allclose(scores[r, :k], raw[r, want], rtol=1e-6, atol=tol)
        if p["ties"] and p["pen"] is None and p["vp"].nnz == 0:
            np.testing.assert_array_equal(got, want)
    # every chunking, thread count and tiling (fused or not) gives the same bits
    for other in (0, 5):
        ids1, scores1 = guarded_topk(
            space,
            p["Q"],
            N,
            call_mask=p["call"],
            viewer_masks=[p["vm"]],
            viewer_penalties=[p["vp"]],
            block_rows=1000,
            num_threads=1,
            tile_items=other,
        )
        np.testing.assert_array_equal(ids, ids1)
        np.testing.assert_array_equal(scores, scores1)


@SETTINGS
@given(p=problems(), width=st.integers(1, 8), N=st.integers(1, 30))
def test_similarity_kernel_matches_brute_force(p, width, N):
    rng = np.random.default_rng(p["n"])
    sim = sp.random(p["n"], p["n"], density=0.1, format="csr", random_state=rng)
    queries = sp.random(p["m"], p["n"], density=0.2, format="csr", random_state=rng)
    space = SimilaritySpace.build(sim, hard_mask=p["hard"], penalty=p["pen"], block_width=width)
    ids, scores = guarded_topk(
        space,
        queries,
        N,
        viewer_masks=[p["vm"]],
        viewer_penalties=[p["vp"]],
        score_dtype=np.float64,
        block_rows=2,
    )
    raw = (queries @ sim).toarray()
    # Only reachable items (a non-zero product, before penalties) are candidates.
    reachable = raw != 0
    if p["pen"] is not None:
        raw -= p["pen"].astype(np.float64)[None, :]
    raw -= p["vp"].toarray()
    ok = ~p["hard"][None, :] & (p["vm"].toarray() == 0) & reachable
    for r in range(p["m"]):
        cand = np.flatnonzero(ok[r])
        k = min(N, cand.size)
        want = cand[np.lexsort((cand, -raw[r, cand]))][:k]
        np.testing.assert_array_equal(ids[r, :k], want)
        np.testing.assert_allclose(scores[r, :k], raw[r, want], rtol=1e-12, atol=1e-12)
        assert (ids[r, k:] == -1).all()


def test_non_finite_scores_never_reach_a_slate():
    # Factors large enough for some float32 products to overflow to inf.
    Q = np.array([[3e38, 3e38]], dtype=np.float32)
    V = np.array([[1.0, 1.0], [0.0, 0.0], [-1.0, 0.5], [1e-3, 0.0]], dtype=np.float32)
    space = FactorSpace.build(V, block_width=1)
    ids, scores = guarded_topk(space, Q, 3)
    assert np.isfinite(scores[ids >= 0]).all()
    assert 0 not in ids[0]
    assert (ids[0] >= 0).sum() == 3


def test_empty_catalogue_pads():
    space = FactorSpace.build(np.ones((3, 2), np.float32), hard_mask=np.ones(3, bool))
    ids, scores = guarded_topk(space, np.ones((2, 2), np.float32), 2)
    assert (ids == -1).all() and np.isneginf(scores).all()


@st.composite
def skewed(draw):
    """Few rows, many items of widely spread norms, short slates: tiles get skipped."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m, n, d = draw(st.integers(1, 6)), draw(st.integers(64, 400)), draw(st.integers(1, 6))
    V = (
        rng.standard_normal((n, d))
        * (rng.pareto(draw(st.sampled_from([0.7, 1.5])), n) + 0.01)[:, None]
    )
    Q = rng.standard_normal((m, d))
    if draw(st.booleans()):
        Q, V = np.round(Q), np.round(V)  # ties across tiles
    hard = rng.random(n) < draw(st.sampled_from([0.0, 0.3]))
    pen = (rng.random(n) * 2.0).astype(np.float32) if draw(st.booleans()) else None
    vm = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.1])), format="csr", random_state=rng)
    vp = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.05])), format="csr", random_state=rng)
    vp.data = (vp.data - draw(st.sampled_from([0.0, 0.5]))) * 3.0
    call = rng.choice(n, size=n // 10, replace=False) if draw(st.booleans()) else None
    return dict(
        Q=Q.astype(np.float32),
        V=V.astype(np.float32),
        hard=hard,
        pen=pen,
        vm=vm,
        vp=vp,
        call=call,
        m=m,
        n=n,
        ties=False,
    )


@SETTINGS
@given(
    p=skewed(),
    N=st.integers(1, 8),
    tile=st.sampled_from([4, 8, 16]),
    width=st.integers(1, 4),
    backend=st.sampled_from(KERNEL_BACKENDS),
)
def test_pruned_fused_path_is_exact_and_batch_independent(p, N, tile, width, backend):
    space = FactorSpace.build(p["V"], hard_mask=p["hard"], penalty=p["pen"], block_width=width)

    def run(rows, tile_items, stats=None):
        return guarded_topk(
            space,
            p["Q"][rows],
            N,
            call_mask=p["call"],
            viewer_masks=[p["vm"][rows]],
            viewer_penalties=[p["vp"][rows]],
            block_rows=3,
            num_threads=1,
            tile_items=tile_items,
            stats=stats,
            backend=backend,
        )

    every = np.arange(p["m"])
    stats: dict = {}
    ids, scores = run(every, tile, stats)
    assert 0 < stats["scored"] <= stats["cells"]
    ids0, scores0 = run(every, 0)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(scores, scores0)
    raw, ok = _expected(p, N)
    for r in range(p["m"]):
        one_ids, one_scores = run(np.array([r]), tile)
        np.testing.assert_array_equal(one_ids[0], ids[r])
        np.testing.assert_array_equal(one_scores[0], scores[r])
        got = ids[r][ids[r] >= 0]
        assert ok[r, got].all()  # nothing suppressed, masked or call-filtered
        assert got.size == min(N, int(ok[r].sum()))  # full slates when enough are eligible
        want = np.sort(raw[r, ok[r]])[::-1][: got.size]
        np.testing.assert_allclose(
            raw[r, got], want, rtol=0, atol=1e-4 * (1 + np.abs(want).max(initial=0))
        )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_pruned_fused_path_skips_most_of_a_skewed_catalogue(backend):
    rng = np.random.default_rng(7)
    V = (rng.standard_normal((4000, 8)) * (rng.pareto(1.0, 4000) + 0.01)[:, None]).astype(
        np.float32
    )
    Q = rng.standard_normal((50, 8)).astype(np.float32)
    space = FactorSpace.build(V, penalty=(rng.random(4000) * 0.1).astype(np.float32), block_width=8)
    stats: dict = {}
    ids, scores = guarded_topk(
        space, Q, 10, tile_items=64, num_threads=1, stats=stats, backend=backend
    )
    ids0, scores0 = guarded_topk(space, Q, 10, tile_items=0, num_threads=1)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(scores, scores0)
    assert stats["scored"] < 0.5 * stats["cells"]


def test_compiled_and_numpy_selection_agree_with_nan_and_inf_factors():
    rng = np.random.default_rng(3)
    V = (rng.standard_normal((600, 4)) * (rng.pareto(1.0, 600) + 0.01)[:, None]).astype(np.float32)
    V[5] = np.nan
    V[17, 0] = np.inf
    V[40] = 3e38
    Q = rng.standard_normal((9, 4)).astype(np.float32)
    space = FactorSpace.build(V, block_width=4)
    ref = guarded_topk(space, Q, 7, tile_items=0, num_threads=1)
    for backend in KERNEL_BACKENDS:
        ids, scores = guarded_topk(space, Q, 7, tile_items=32, num_threads=1, backend=backend)
        np.testing.assert_array_equal(ids, ref[0])
        np.testing.assert_array_equal(scores, ref[1])
        assert np.isfinite(scores[ids >= 0]).all()
        assert not np.isin(ids, [5, 17]).any()


def test_unknown_backend_is_a_clear_error():
    space = FactorSpace.build(np.ones((3, 2), np.float32))
    with pytest.raises(ValidationError, match="'backend' parameter"):
        guarded_topk(space, np.ones((1, 2), np.float32), 1, backend="fortran")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("skew", [True, False])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_default_tiling_gives_the_unfused_results(skew, backend, threads):
    # Large enough for the default fused path (block_rows 128, 2048-item tiles), with
    # several chunks: a probe of rows spread over the batch decides whether the rest stay
    # fused, while the other workers already run the first chunks fused.
    rng = np.random.default_rng(11)
    V = rng.standard_normal((9000, 4))
    if skew:
        V *= (rng.pareto(1.0, 9000) + 0.01)[:, None]
    V = V.astype(np.float32)
    Q = rng.standard_normal((300, 4)).astype(np.float32)
    vm = sp.random(300, 9000, density=0.001, format="csr", random_state=rng)
    space = FactorSpace.build(V, hard_mask=rng.random(9000) < 0.05, block_width=32)
    stats: dict = {}
    ids, scores = guarded_topk(
        space,
        Q,
        10,
        viewer_masks=[vm],
        block_rows=128,
        stats=stats,
        backend=backend,
        num_threads=threads,
    )
    ids0, scores0 = guarded_topk(space, Q, 10, viewer_masks=[vm], block_rows=128, tile_items=0)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(scores, scores0)
    if skew:
        assert stats["scored"] < 0.5 * stats["cells"]


@pytest.mark.skipif(
    not os.environ.get("GUARDRAILS_REQUIRE_COMPILED"),
    reason="set GUARDRAILS_REQUIRE_COMPILED=1 where a C compiler is known to be present",
)
def test_the_compiled_selection_step_was_built():
    # .ci/run sets the variable: the build is optional, so a compiler or source error
    # would otherwise pass unnoticed, with every test on the numpy fallback.
    assert HAS_COMPILED_TILE


def test_a_probe_that_finds_nothing_to_skip_is_remembered_for_a_few_calls():
    from guardrails.core._fused import _REPROBE_EVERY, note_probe, probe_due

    rng = np.random.default_rng(12)
    V = rng.standard_normal((9000, 4)).astype(np.float32)  # flat: nothing to skip
    Q = rng.standard_normal((300, 4)).astype(np.float32)
    vm = sp.random(300, 9000, density=0.001, format="csr", random_state=rng)
    space = FactorSpace.build(V, block_width=32)
    ref = guarded_topk(space, Q, 10, viewer_masks=[vm], block_rows=128, tile_items=0)
    for _ in range(2 * _REPROBE_EVERY + 1):  # probing, remembered, probing again
        ids, scores = guarded_topk(space, Q, 10, viewer_masks=[vm], block_rows=128)
        np.testing.assert_array_equal(ids, ref[0])
        np.testing.assert_array_equal(scores, ref[1])
    other = FactorSpace.build(V, block_width=32)
    key = (2048, 10, True)
    assert probe_due(other, key)
    note_probe(other, key, False)
    skipped = [not probe_due(other, key) for _ in range(_REPROBE_EVERY)]
    assert skipped == [True] * (_REPROBE_EVERY - 1) + [False]
    note_probe(other, key, True)
    assert probe_due(other, key) and probe_due(other, key)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_many_tiles_on_worker_threads_take_the_fused_path_without_a_probe(backend, threads):
    # Over many tiles the compiled fused path on worker threads pays even with nothing to
    # skip, so no probe runs there (none is recorded on the space); with numpy or one
    # thread the probe decides. Every path returns the unfused slates bit for bit.
    from guardrails.core.kernel import _FUSED_FROM_TILES

    rng = np.random.default_rng(5)
    n = _FUSED_FROM_TILES * 2048 + 500  # flat factors: nothing to skip
    V = rng.standard_normal((n, 4)).astype(np.float32)
    Q = rng.standard_normal((300, 4)).astype(np.float32)
    vm = sp.random(300, n, density=0.0005, format="csr", random_state=rng)
    space = FactorSpace.build(V, block_width=32)
    ids, scores = guarded_topk(
        space, Q, 10, viewer_masks=[vm], block_rows=128, backend=backend, num_threads=threads
    )
    ref = guarded_topk(space, Q, 10, viewer_masks=[vm], block_rows=128, tile_items=0)
    np.testing.assert_array_equal(ids, ref[0])
    np.testing.assert_array_equal(scores, ref[1])
    probed = space.__dict__.get("_path") is not None
    assert probed == (backend == "numpy" or threads == 1)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.sampled_from([1, 3, 7, 8, 9, 15, 16, 17, 64, 65]),
    N=st.integers(1, 12),
    specials=st.booleans(),
    penalised=st.booleans(),
)
def test_compiled_rescoring_gives_numpy_bits(seed, d, N, specials, penalised):
    """The compiled exact rescoring (``rescore_top``) sums in ``lane_sum``'s order: the
    same scores bit for bit, the same finite test, the same tie-break, for any width."""
    if not HAS_COMPILED_TILE:
        pytest.skip("the compiled step was not built")
    rng = np.random.default_rng(seed)
    m, n = 7, 300
    V = (rng.standard_normal((n, d)) * (rng.pareto(1.0, n) + 0.05)[:, None]).astype(np.float32)
    Q = rng.standard_normal((m, d)).astype(np.float32)
    if specials:
        V[rng.integers(0, n, 3)] = np.nan
        V[rng.integers(0, n), 0] = np.inf
        V[rng.integers(0, n)] = 3e38
        V[rng.integers(0, n, 40)] = V[0]  # exact ties: the item id decides
    pen = (rng.random(n) * 2).astype(np.float32) if penalised else None
    vm = sp.random(m, n, density=0.1, format="csr", random_state=rng)
    vp = sp.random(m, n, density=0.2 if penalised else 0.0, format="csr", random_state=rng)
    space = FactorSpace.build(V, hard_mask=rng.random(n) < 0.1, penalty=pen, block_width=4)
    kw = dict(viewer_masks=[vm], viewer_penalties=[vp], num_threads=1, score_dtype=np.float64)
    want = guarded_topk(space, Q, N, backend="numpy", tile_items=0, **kw)
    for tile in (0, 16):
        got = guarded_topk(space, Q, N, backend="compiled", tile_items=tile, **kw)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # lane_sum is a sum: within float64 rounding of the exact one
    from guardrails.core._exact import lane_sum

    p = rng.standard_normal((50, d))
    np.testing.assert_allclose(
        lane_sum(p), [sum(map(float, row)) for row in p], rtol=1e-12, atol=1e-12
    )


@pytest.mark.skipif(not HAS_COMPILED_TILE, reason="the compiled step was not built")
def test_compiled_pool_and_rescoring_steps_refuse_bad_buffers():
    from guardrails.core import _tile

    f32, f64, i64 = np.float32, np.float64, np.int64
    Q, V, ids = np.ones((2, 3), f32), np.ones((4, 3), f32), np.arange(4, dtype=i64)
    no_neg, no_pen = np.zeros(0, f32), np.zeros(0, f64)

    def rescore(rows, cols, q=Q, out=(2, 1), neg=no_neg, item_ids=ids):
        o_ids, o_sc = np.empty(out, i64), np.empty(out, f64)
        _tile.rescore_top(
            q, V, item_ids, neg, rows, cols, no_pen, o_ids, o_sc, np.empty(out[0], i64)
        )
        return o_ids, o_sc

    rescore(np.array([0, 1], i64), np.array([3, 0], i64))  # a good call
    for bad in (
        dict(rows=np.array([2], i64), cols=np.array([0], i64)),  # row outside queries
        dict(rows=np.array([0], i64), cols=np.array([4], i64)),  # column outside ids
        dict(rows=np.array([0], i64), cols=np.array([0], i64), item_ids=np.array([9], i64)),
        dict(rows=np.array([0], i64), cols=np.array([0, 1], i64)),  # lengths differ
        dict(rows=np.array([0], i64), cols=np.array([0], i64), q=np.ones((2, 2), f32)),
        dict(rows=np.array([0], i64), cols=np.array([0], i64), out=(3, 1)),
        dict(rows=np.array([0], i64), cols=np.array([0], i64), neg=np.zeros(2, f32)),
    ):
        with pytest.raises(ValueError):
            rescore(**bad)
    with pytest.raises(TypeError, match="rows must be int64"):
        rescore(np.array([0], np.int32), np.array([0], i64))

    # Keyed penalties (row * n_cols + col, strictly increasing): the same bits as the
    # per-cell pen they stand for; refused unsorted, mismatched, or beside pen.
    rows, cols = np.array([0, 1, 1], i64), np.array([3, 0, 2], i64)
    per_cell = np.array([0.25, 0.0, -0.5], f64)
    outs = [(np.zeros((2, 2), i64), np.zeros((2, 2), f64), np.zeros(2, i64)) for _ in "ab"]
    _tile.rescore_top(Q, V, ids, no_neg, rows, cols, per_cell, *outs[0])
    keys, vals = np.array([3, 4 + 2], i64), np.array([0.25, -0.5], f64)
    _tile.rescore_top(Q, V, ids, no_neg, rows, cols, no_pen, *outs[1], False, keys, vals, 4)
    for a, b in zip(outs[0], outs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    for bad_keys, bad_vals, bad_pen, n_cols in (
        (keys[::-1].copy(), vals, no_pen, 4),  # not increasing
        (keys, vals[:1].copy(), no_pen, 4),  # one value per key
        (keys, vals, per_cell, 4),  # both forms
        (keys, vals, no_pen, 0),  # no width
        (keys, vals, no_pen, 2**62),  # keys would overflow int64
    ):
        with pytest.raises(ValueError):
            _tile.rescore_top(
                Q, V, ids, no_neg, rows, cols, bad_pen, *outs[1], False, bad_keys, bad_vals, n_cols
            )

    pool = np.array([[0, 3, -1]], i64)
    hit = np.zeros((1, 3), bool)
    _tile.pool_masked(pool, np.array([0, 1], np.int32), np.array([3], np.int32), hit)
    assert hit.tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match="indptr"):
        _tile.pool_masked(pool, np.array([0, 5], np.int32), np.array([3], np.int32), hit)
    with pytest.raises(ValueError, match="hit"):
        _tile.pool_masked(
            pool, np.array([0, 1], np.int32), np.array([3], np.int32), np.zeros(2, bool)
        )
    with pytest.raises(TypeError, match="hit must be bool"):
        _tile.pool_masked(
            pool, np.array([0, 1], np.int32), np.array([3], np.int32), np.zeros((1, 3), f32)
        )

    ip, ind = np.array([0, 2, 3], np.int32), np.array([5, 3, 7], np.int32)
    found = np.zeros(3, bool)
    _tile.stored_cells(ip, ind, np.array([0, 0, 1], i64), np.array([3, 7, 7], i64), found)
    assert found.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="row is outside"):
        _tile.stored_cells(ip, ind, np.array([2], i64), np.array([3], i64), np.zeros(1, bool))
    with pytest.raises(ValueError, match="indptr"):
        _tile.stored_cells(
            np.array([0, 9], np.int32), ind, np.array([0], i64), np.array([3], i64), found[:1]
        )
    with pytest.raises(ValueError, match="one entry per cell"):
        _tile.stored_cells(ip, ind, np.array([0], i64), np.array([3], i64), found)
    with pytest.raises(TypeError, match="rows must be int64"):
        _tile.stored_cells(ip, ind, np.array([0], np.int32), np.array([3], i64), found[:1])

    pos = np.array([0, -1, 1, 2], i64)
    out = np.empty(3, i64), np.empty(3, i64)
    approx = np.ones((1, 3), f32)
    no_b = np.zeros(0, bool)
    args = (pool, approx, pos, no_neg, no_b, no_b, no_pen, np.zeros(1), 0.0, 1)
    assert _tile.pool_prune(*args, *out) == 2  # ids 0 and 3 are in the space
    with pytest.raises(ValueError, match="outside neg_penalty"):
        _tile.pool_prune(pool, approx, pos, np.zeros(1, f32), *args[4:], *out)
    with pytest.raises(ValueError, match="outputs"):
        _tile.pool_prune(*args, np.empty(2, i64), np.empty(2, i64))
    with pytest.raises(ValueError, match="delta"):
        _tile.pool_prune(*args[:7], np.zeros(2), 0.0, 1, *out)
    with pytest.raises(ValueError, match="N must"):
        _tile.pool_prune(*args[:9], 0, *out)


@pytest.mark.skipif(not HAS_COMPILED_TILE, reason="the compiled step was not built")
@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    P=st.integers(1, 40),
    N=st.integers(1, 45),
    ties=st.booleans(),
)
def test_compiled_pool_prune_keeps_exactly_the_cells_at_or_above_the_nth(seed, P, N, ties):
    """With no rounding bound, pool_prune keeps each row's eligible cells at or above its
    N-th largest finite score (all of them when it has fewer than N), and the others
    that are not finite: its selection of the N-th is exact, whatever the ties."""
    from guardrails.core import _tile

    rng = np.random.default_rng(seed)
    m, n = 5, 60
    ids = np.stack([rng.permutation(n)[:P] for _ in range(m)]).astype(np.int64)
    ids[rng.random((m, P)) < 0.1] = -1
    approx = (rng.integers(-3, 3, (m, P)) if ties else rng.standard_normal((m, P))).astype(
        np.float32
    )
    approx[rng.random((m, P)) < 0.1] = np.nan
    pos = np.where(rng.random(n) < 0.2, -1, np.arange(n)).astype(np.int64)
    no_b, no_f = np.zeros(0, bool), np.zeros(0)
    out = np.empty(m * P, np.int64), np.empty(m * P, np.int64)
    count = _tile.pool_prune(
        ids, approx, pos, np.zeros(0, np.float32), no_b, no_b, no_f, np.zeros(m), 0.0, N, *out
    )
    got = sorted(zip(out[0][:count].tolist(), out[1][:count].tolist(), strict=True))
    want = []
    for i in range(m):
        ok = (ids[i] >= 0) & (pos[np.clip(ids[i], 0, None)] >= 0)
        a = approx[i].astype(np.float64)
        fin = ok & np.isfinite(a)
        t = np.sort(a[fin])[::-1][N - 1] if fin.sum() >= N else -np.inf
        keep = ok & (~np.isfinite(a) | (a >= t))
        want += [(i, int(pos[g])) for g in ids[i][keep]]
    assert got == sorted(want)


@SETTINGS
@given(
    keys=st.lists(st.integers(0, 60), max_size=20),
    table=st.lists(st.integers(0, 60), max_size=40),
)
def test_forced_cells_mask_lookup_is_isin(keys, table):
    """The restored cells' mask test (a binary search in the chunk's mask keys, sorted
    when they are not) answers what np.isin answers, repeats and disorder included."""
    from guardrails.core._exact import _among

    k, t = np.array(keys, dtype=np.int64), np.array(table, dtype=np.int64)
    np.testing.assert_array_equal(_among(k, t), np.isin(k, t))


@pytest.mark.skipif(not HAS_COMPILED_TILE, reason="the compiled step was not built")
def test_compiled_steps_never_index_by_what_an_aliased_output_overwrote():
    """An output buffer sharing memory with an index input cannot lead the compiled steps
    out of bounds: they index by validated copies (a segfault here before)."""
    from guardrails.core import _tile

    N, big = 4, 10**12
    V = np.empty((big + 1, 0), np.float32)  # no memory: zero factors
    Q = np.zeros((2, 0), np.float32)
    buf = np.zeros(2 * N, np.int64)  # the cells' columns, and the ids written out
    rows = np.array([1] * N + [0] * N)
    ids = np.array([big])
    _tile.rescore_top(
        Q, V, ids, np.zeros(0, np.float32), rows, buf, np.zeros(0),
        buf.reshape(2, N), np.empty((2, N)), np.empty(2, np.int64),
    )  # fmt: skip
    ip = np.array([0, 1], np.int64)
    hit = ip.view(np.uint8)[:8].reshape(1, 8)  # hit aliases indptr
    _tile.pool_masked(np.arange(8, dtype=np.int64).reshape(1, 8), ip, np.array([3]), hit)
    assert ip.view(np.uint8)[3] == 1  # item 3 was found through the validated offsets
