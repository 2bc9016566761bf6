"""The propagation engine: products and solvers agree across backends, threads and chunks.

Small graphs normally run on one thread in one chunk; these tests force two threads and
chunks of a few rows so that the chunk boundaries, the per-thread sums and the compiled
loops' bounds checks all run on data a dense solve can check.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

import guardrails.expand as ex
from guardrails.exceptions import MissingDependencyError
from guardrails.expand import _engine, _operators

BACKENDS = ["scipy", "compiled"] if _engine.compiled_available() else ["scipy"]


def random_csr(n, m, density, seed, index_dtype=np.int32):
    A = sp.random(n, m, density=density, random_state=seed, format="csr", dtype=np.float32)
    A.indptr = A.indptr.astype(index_dtype)
    A.indices = A.indices.astype(index_dtype)
    return A


def small_operator(A, backend, threads=2, chunk_values=16):
    return _engine.Operator(
        A, num_threads=threads, chunk_values=chunk_values, min_parallel_nnz=0, backend=backend
    )


@pytest.mark.skipif(
    not os.environ.get("GUARDRAILS_REQUIRE_COMPILED"),
    reason="set GUARDRAILS_REQUIRE_COMPILED=1 where a C compiler is known to be present",
)
def test_the_compiled_loops_were_built():
    # .ci/run sets the variable: the build is optional, so a compiler or source error
    # would otherwise pass unnoticed, with every test on the scipy fallback.
    assert _engine.compiled_available()


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 40),
    c=st.sampled_from([1, 2, 3, 8, 9]),
    density=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
    index64=st.booleans(),
    threads=st.integers(1, 3),
    chunk_values=st.integers(1, 64),
    one_d=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_matmul_matches_dense(
    backend, n, m, c, density, seed, index64, threads, chunk_values, one_d
):
    A = random_csr(n, m, density, seed, np.int64 if index64 else np.int32)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, c)).astype(np.float32)
    if one_d and c == 1:
        X = X[:, 0]
    op = small_operator(A, backend, threads, chunk_values)
    got = op.matmul(X)
    want = A.toarray().astype(np.float64) @ X.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The epilogue sees every row exactly once, in row order.
    seen = op.matmul(X, out=np.empty_like(got), epilogue=lambda lo, hi: (lo, hi))
    covered = [i for lo, hi in seen for i in range(lo, hi)]
    assert covered == list(range(n))


@pytest.mark.parametrize("backend", BACKENDS)
def test_matmul_on_non_contiguous_input_falls_back_and_agrees(backend):
    A = random_csr(30, 30, 0.3, 1)
    X = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)[:, ::2]
    got = small_operator(A, backend).matmul(X)
    np.testing.assert_allclose(got, A @ X, rtol=1e-5, atol=1e-6)


def dense_solution(A, W, damping, scale):
    """Y = W + a S^-1 N S Y, solved densely in float64."""
    N = A.toarray().astype(np.float64)
    T = np.diag(1.0 / scale) @ N @ np.diag(scale)
    return np.linalg.solve(np.eye(N.shape[0]) - damping * T, W.astype(np.float64))


def normalised_graph(n, p, seed):
    rng = np.random.default_rng(seed)
    U = sp.random(n, n, density=p, random_state=seed, format="csr")
    U.data[:] = 1.0
    G = ((U + U.T) > 0).astype(np.float64)
    deg = np.asarray(G.sum(axis=1)).ravel()
    d = np.where(deg > 0, deg, 1.0)
    N = sp.diags(1 / np.sqrt(d)) @ G @ sp.diags(1 / np.sqrt(d))
    return sp.csr_matrix(N, dtype=np.float32), np.sqrt(d).astype(np.float32), rng


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    n=st.integers(2, 60),
    p=st.floats(0.02, 0.3),
    c=st.sampled_from([1, 2, 8]),
    seed=st.integers(0, 2**16),
    n_seeds=st.integers(1, 6),
    threads=st.integers(1, 2),
    chunk_values=st.sampled_from([8, 64, 1 << 16]),
)
@settings(max_examples=40, deadline=None)
def test_solvers_match_a_dense_solve(backend, n, p, c, seed, n_seeds, threads, chunk_values):
    N, sqrt_deg, rng = normalised_graph(n, p, seed)
    W = np.zeros((n, c), dtype=np.float32)
    for k in range(c):
        W[rng.choice(n, min(n, n_seeds), replace=False), k] = rng.uniform(0.1, 1.0)
    op = small_operator(N, backend, threads, chunk_values)
    want = dense_solution(N, W, 0.85, sqrt_deg)
    Y, _ = _engine.solve_symmetric(op, W, sqrt_deg, _engine.Solve(0.85, 1e-7, 500))
    np.testing.assert_allclose(Y, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())
    # Power iteration on T = S^-1 N S, as a CSR operator of its own.
    T = sp.csr_matrix(sp.diags(1 / sqrt_deg) @ N @ sp.diags(sqrt_deg), dtype=np.float32)
    Yp, _ = _engine.solve_power(
        small_operator(T, backend, threads, chunk_values), W, _engine.Solve(0.85, 1e-8, 2000)
    )
    np.testing.assert_allclose(Yp, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())


def test_backends_agree_on_a_graph_large_enough_to_thread():
    rng = np.random.default_rng(5)
    n = 20_000
    src = rng.integers(0, n, 150_000)
    dst = rng.integers(0, n, 150_000)
    A = sp.csr_matrix((np.ones(src.size, np.float32), (src, dst)), shape=(n, n))
    seeds = [rng.choice(n, 50, replace=False) for _ in range(8)]
    results = {
        # method="ppr": this checks the products, not the choice of 'auto' (which sees
        # the 1e-9 rows below as extra seeds).
        b: ex.RiskGraph(A, backend=b, num_threads=2).propagate(seeds, tol=1e-6, method="ppr")
        for b in BACKENDS
    }
    for b in BACKENDS:
        # Dense seed rows (more than n/16) take the full first product instead of the
        # seeds' edges only: the same result.
        W = np.zeros((n, 8), np.float32)
        for k, s in enumerate(seeds):
            W[s, k] = 1.0
        dense_rows = rng.choice(n, n // 8, replace=False)
        W[dense_rows, 0] = np.maximum(W[dense_rows, 0], 1e-9)
        dense = ex.RiskGraph(A, backend=b, num_threads=2).propagate(W, tol=1e-6, method="ppr")
        np.testing.assert_allclose(dense, results[BACKENDS[0]], atol=2e-5)
        np.testing.assert_allclose(results[b], results[BACKENDS[0]], atol=2e-5)


def test_unknown_and_missing_backends_are_refused(monkeypatch):
    A = random_csr(5, 5, 0.5, 0)
    with pytest.raises(ValueError, match="backend"):
        ex.RiskGraph(A, backend="gpu")
    monkeypatch.setattr(_engine, "_spmm", None)
    monkeypatch.setattr(_operators, "_spmm", None)
    with pytest.raises(MissingDependencyError, match="compiled"):
        ex.RiskGraph(A, backend="compiled")
    with pytest.raises(ImportError, match="compiled"):
        _engine.Operator(A, backend="compiled")
    # 'auto' falls back to scipy and still propagates.
    g = ex.RiskGraph(A + A.T, backend="auto")
    assert g.propagate([0]).shape == (5,)
    assert g._operator("sym").backend == "scipy"


@pytest.mark.skipif("compiled" not in BACKENDS, reason="compiled loops not built")
def test_compiled_loops_refuse_bad_buffers():
    from guardrails.expand import _spmm

    A = random_csr(6, 6, 0.5, 3)
    X = np.ones((6, 2), np.float32)
    Y = np.zeros((6, 2), np.float32)
    args = (A.indptr, A.indices, A.data)
    _spmm.csr_matmul(*args, X, Y, 0, 6, 2)
    np.testing.assert_allclose(Y, A @ X, rtol=1e-6)
    with pytest.raises(TypeError, match="float32"):
        _spmm.csr_matmul(*args, X.astype(np.float64), Y, 0, 6, 2)
    with pytest.raises(TypeError, match="share a dtype"):
        _spmm.csr_matmul(A.indptr.astype(np.int64), A.indices, A.data, X, Y, 0, 6, 2)
    with pytest.raises(ValueError, match="row range"):
        _spmm.csr_matmul(*args, X, Y, 0, 7, 2)
    with pytest.raises(ValueError, match="fewer than"):
        _spmm.csr_matmul(*args, X, np.zeros((3, 2), np.float32), 0, 6, 2)
    with pytest.raises(ValueError, match="indptr points outside"):
        _spmm.csr_matmul(A.indptr, A.indices[:1], A.data, X, Y, 0, 6, 2)
    bad = A.indices.copy()
    bad[0] = 99
    with pytest.raises(IndexError, match="outside x"):
        _spmm.csr_matmul(A.indptr, bad, A.data, X, Y, 0, 6, 2)
    bad[0] = -1
    with pytest.raises(IndexError, match="outside x"):
        _spmm.csr_matmul(A.indptr, bad, A.data, X, Y, 0, 6, 2)
    with pytest.raises((ValueError, BufferError), match="contiguous"):
        _spmm.csr_matmul(*args, np.ones((6, 4), np.float32)[:, ::2], Y, 0, 6, 2)
    frozen = Y.copy()
    frozen.flags.writeable = False
    with pytest.raises((ValueError, BufferError), match="writ|read-only"):
        _spmm.csr_matmul(*args, X, frozen, 0, 6, 2)
    sums = np.zeros(6)
    Q = np.zeros_like(X)
    _spmm.cg_product(*args, X, X, Q, 0, 6, 2, 0.5, sums)
    np.testing.assert_allclose(Q, X - 0.5 * (A @ X), rtol=1e-6)
    np.testing.assert_allclose(sums[:2], (X * Q).sum(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="3 c"):
        _spmm.cg_product(*args, X, X, Q, 0, 6, 2, 0.5, np.zeros(5))
    with pytest.raises(TypeError, match="float64"):
        _spmm.cg_product(*args, X, X, Q, 0, 6, 2, 0.5, np.zeros(6, np.float32))
    one = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="rows"):
        _spmm.cg_update(X, Q, X.copy(), X.copy(), np.ones(3, np.float32), one, one, 0, 6, 2, sums)


@pytest.mark.skipif("compiled" not in BACKENDS, reason="compiled loops not built")
def test_compiled_loops_refuse_overflowing_ranges_and_foreign_byte_order():
    import sys

    from guardrails.expand import _spmm

    A = random_csr(6, 6, 0.5, 4)
    X = np.ones((6, 2), np.float32)
    Y = np.zeros((6, 2), np.float32)
    for lo, hi in ((0, sys.maxsize), (sys.maxsize - 1, sys.maxsize), (-1, 3), (4, 3)):
        with pytest.raises(ValueError, match="row range"):
            _spmm.csr_matmul(A.indptr, A.indices, A.data, X, Y, lo, hi, 2)
    with pytest.raises(ValueError, match="row range"):
        _spmm.csr_matmul(A.indptr, A.indices, A.data, X, Y, 0, 6, 0)
    for lo, hi in ((0, 6), (0, 0)):  # an empty row range reaches the sums' length check
        with pytest.raises(ValueError, match="3 c|rows of"):
            _spmm.cg_product(
                A.indptr, A.indices, A.data, X, X, Y, lo, hi, sys.maxsize, 0.5, np.zeros(6)
            )
        with pytest.raises(ValueError, match="rows|sums"):
            one = np.ones(2, np.float32)
            p_, q_, r_, z_ = (X.copy() for _ in range(4))
            _spmm.cg_update(
                p_, q_, r_, z_, np.ones(6, np.float32), one, one, lo, hi, sys.maxsize, np.zeros(8)
            )
    # Outputs that overlap inputs (even by one row) are refused: the loops would read
    # rows they have already overwritten.
    big = np.ones((7, 2), np.float32)
    with pytest.raises(ValueError, match="y overlaps x"):
        _spmm.csr_matmul(A.indptr, A.indices, A.data, big[:6], big[1:], 0, 6, 2)
    with pytest.raises(ValueError, match="q overlaps"):
        _spmm.cg_product(A.indptr, A.indices, A.data, X, Y, Y, 0, 6, 2, 0.5, np.zeros(6))
    one = np.ones(2, np.float32)
    p_, q_, z_ = X.copy(), X.copy(), X.copy()
    with pytest.raises(ValueError, match="overlaps"):
        _spmm.cg_update(p_, q_, p_, z_, np.ones(6, np.float32), one, one, 0, 6, 2, np.zeros(8))
    with pytest.raises(ValueError, match="overlaps"):
        _spmm.cg_update(
            p_,
            q_,
            X.copy(),
            z_,
            np.ones(6, np.float32),
            one,
            one,
            0,
            6,
            2,
            p_.reshape(-1).view(np.float64),
        )
    swapped = X.astype(X.dtype.newbyteorder())
    with pytest.raises(TypeError, match="native byte order"):
        _spmm.csr_matmul(A.indptr, A.indices, A.data, swapped, Y, 0, 6, 2)
    with pytest.raises(TypeError, match="native byte order"):
        _spmm.csr_matmul(A.indptr.astype(">i4"), A.indices, A.data, X, Y, 0, 6, 2)


@pytest.mark.skipif("compiled" not in BACKENDS, reason="compiled loops not built")
def test_cg_product_with_int64_indices_equals_int32():
    from guardrails.expand import _spmm

    A = random_csr(40, 40, 0.2, 6)
    rng = np.random.default_rng(6)
    P = rng.standard_normal((40, 8)).astype(np.float32)
    R = rng.standard_normal((40, 8)).astype(np.float32)
    out = {}
    for dtype in (np.int32, np.int64):
        Q = np.empty_like(P)
        sums = np.zeros(24)
        _spmm.cg_product(
            A.indptr.astype(dtype), A.indices.astype(dtype), A.data, P, R, Q, 0, 40, 8, 0.85, sums
        )
        out[dtype] = (Q, sums)
    np.testing.assert_array_equal(out[np.int32][0], out[np.int64][0])
    np.testing.assert_array_equal(out[np.int32][1], out[np.int64][1])
    Qd = P.astype(np.float64) - 0.85 * (A.toarray() @ P.astype(np.float64))
    np.testing.assert_allclose(out[np.int32][0], Qd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[np.int32][1][16:], (Qd * Qd).sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matmul_checks_out_and_handles_empty_shapes(backend):
    A = random_csr(5, 4, 0.5, 7)
    op = small_operator(A, backend)
    X = np.ones((4, 2), np.float32)
    for bad in (np.empty((6, 4), np.float32), np.empty(10, np.float32), np.empty((5, 2))):
        with pytest.raises(ValueError, match="out must be float32 of shape"):
            op.matmul(X, out=bad)
    with pytest.raises(ValueError, match="X has shape"):
        op.matmul(np.ones((5, 2), np.float32))
    assert op.matmul(np.ones((4, 0), np.float32)).shape == (5, 0)
    empty = small_operator(sp.csr_matrix((0, 0), dtype=np.float32), backend)
    assert empty.matmul(np.ones((0, 3), np.float32)).shape == (0, 3)
    assert empty.map_rows(lambda lo, hi: (lo, hi), 3) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["cg", "power", "sybilrank"])
def test_empty_graph_propagates_to_empty_risk(backend, method):
    g = ex.RiskGraph(sp.csr_matrix((0, 0), dtype=np.float32), backend=backend)
    assert g.propagate(np.zeros((0, 2), np.float32), method=method).shape == (0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["cg", "power"])
def test_tiny_seed_weights_scale_the_risk_linearly(backend, method):
    # The risk is linear in the weights: a 1e-25 seed must not stop the solver early.
    import warnings

    A = sp.csr_matrix(nx_free_ring(200) + nx_free_ring(200, step=7), dtype=np.float32)
    g = ex.RiskGraph(A, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ones = g.propagate([[3, 50], [120]], raw=True, method=method, tol=1e-6)
        tiny = g.propagate(
            [[3, 50], [120]], weights=[[1e-25, 1e-25], [1e-30]], raw=True, method=method, tol=1e-6
        )
    np.testing.assert_allclose(tiny[:, 0] / 1e-25, ones[:, 0], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(tiny[:, 1] / 1e-30, ones[:, 1], rtol=1e-4, atol=1e-9)


def nx_free_ring(n, step=1):
    """An undirected ring (chords of length ``step``) as a sparse adjacency matrix."""
    i = np.arange(n)
    j = (i + step) % n
    A = sp.coo_matrix((np.ones(n), (i, j)), shape=(n, n))
    return (A + A.T).tocsr()


@pytest.mark.skipif("compiled" not in BACKENDS, reason="compiled loops not built")
def test_power_product_matches_numpy_and_refuses_aliasing():
    from guardrails.expand import _spmm

    A = random_csr(30, 30, 0.2, 8)
    rng = np.random.default_rng(8)
    X = rng.random((30, 3), dtype=np.float32)
    Wt = rng.random((30, 3), dtype=np.float32)
    Y = np.empty_like(X)
    sums = np.zeros(6)
    _spmm.power_product(A.indptr, A.indices, A.data, X, Wt, Y, 0, 30, 3, 0.85, sums)
    want = 0.85 * (A.toarray().astype(np.float64) @ X) + Wt
    np.testing.assert_allclose(Y, want, rtol=1e-5)
    np.testing.assert_allclose(sums[:3], np.abs(want - X).sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(sums[3:], np.abs(want).sum(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="overlaps"):
        _spmm.power_product(A.indptr, A.indices, A.data, X, Wt, X, 0, 30, 3, 0.85, sums)
    with pytest.raises(ValueError, match="2 c"):
        _spmm.power_product(A.indptr, A.indices, A.data, X, Wt, Y, 0, 30, 3, 0.85, np.zeros(5))


def directed_walk(n, p, seed):
    """A random directed graph's walk matrix D^-1 A (rows of dead ends stay zero)."""
    A = sp.random(n, n, density=p, random_state=seed, format="csr", dtype=np.float64)
    A.data[:] = np.random.default_rng(seed).uniform(0.5, 2.0, A.nnz)
    deg = np.asarray(A.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1 / np.where(deg > 0, deg, 1.0)) @ A, dtype=np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    n=st.integers(1, 60),
    p=st.floats(0.0, 0.4),
    c=st.sampled_from([1, 3, 8]),
    seed=st.integers(0, 2**16),
    threads=st.integers(1, 2),
    chunk_values=st.sampled_from([8, 64, 1 << 16]),
)
@settings(max_examples=40, deadline=None)
# Found by Hypothesis: the recursive residual drifted from the true one in float32 and a
# column stopped at an error of 1e-3; the solver now checks the true residual.
@example(n=46, p=0.04826735307748812, c=8, seed=2047, threads=1, chunk_values=8)
def test_bicgstab_matches_a_dense_solve_on_directed_walks(
    backend, n, p, c, seed, threads, chunk_values
):
    T = directed_walk(n, p, seed)
    rng = np.random.default_rng(seed)
    W = (rng.random((n, c)) < 0.2).astype(np.float32) * rng.uniform(0.1, 1.0, (n, c)).astype(
        np.float32
    )
    want = np.linalg.solve(np.eye(n) - 0.85 * T.toarray().astype(np.float64), W.astype(np.float64))
    op = small_operator(T, backend, threads, chunk_values)
    Y, products = _engine.solve_bicgstab(op, W, _engine.Solve(0.85, 1e-7, 400))
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(Y, want, rtol=1e-4, atol=2e-5 * scale)
    assert products <= 400 + 1


def test_bicgstab_breakdown_falls_back_to_power_iteration(monkeypatch):
    T = directed_walk(40, 0.15, 3)
    W = np.zeros((40, 2), np.float32)
    W[[1, 7], 0] = 1.0
    W[[20], 1] = 0.5
    want = np.linalg.solve(np.eye(40) - 0.85 * T.toarray().astype(np.float64), W)
    op = small_operator(T, "scipy", 1, 1 << 16)
    calls = {"n": 0, "power": 0}
    real_matmul = op.matmul

    def failing(X, out=None, epilogue=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the first V = A P: a breakdown (non-finite Rh.V)
            out[...] = np.nan
            return [(np.full(X.shape[1], np.nan),)]
        return real_matmul(X, out=out, epilogue=epilogue)

    real_power = _engine.solve_power

    def power(*args, **kwargs):
        calls["power"] += 1
        return real_power(*args, **kwargs)

    monkeypatch.setattr(op, "matmul", failing)
    monkeypatch.setattr(_engine, "solve_power", power)
    Y, _ = _engine.solve_bicgstab(op, W, _engine.Solve(0.85, 1e-7, 500))
    assert calls["power"] == 1
    np.testing.assert_allclose(Y, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_directed_ppr_uses_bicgstab_and_agrees_with_power(backend):
    rng = np.random.default_rng(11)
    n = 3000
    A = sp.csr_matrix(
        (np.ones(24_000, np.float32), (rng.integers(0, n, 24_000), rng.integers(0, n, 24_000))),
        shape=(n, n),
    )
    g = ex.RiskGraph(A, direction="out", backend=backend)
    seeds = [rng.choice(n, 20, replace=False) for _ in range(3)]
    auto = g.propagate(seeds, raw=True, tol=1e-6, method="ppr")  # the solver is chosen
    auto_products = g.n_iter_
    power = g.propagate(seeds, raw=True, tol=1e-7, method="power")
    np.testing.assert_allclose(auto, power, rtol=1e-3, atol=1e-5)
    assert auto_products < g.n_iter_  # fewer sparse products than power iteration


def tree_like_digraph(n, k, seed):
    """Every node follows k random nodes: few short cycles around any seed."""
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n), k)
    dst = rng.integers(0, n, n * k)
    return sp.csr_matrix((np.ones(src.size, np.float32), (src, dst)), shape=(n, n))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bicgstab_converges_on_its_own_in_few_products(backend, monkeypatch):
    # A regression bound: 19 products here (power iteration: 74) and no fallback. A wrong
    # beta, omega or shadow residual costs dozens of products or a fallback.
    n = 20_000
    g = ex.RiskGraph(tree_like_digraph(n, 8, 1), direction="out", backend=backend)
    rng = np.random.default_rng(2)
    seeds = [rng.choice(n, 30, replace=False) for _ in range(4)]
    fallbacks = []
    real_power = _engine.solve_power
    monkeypatch.setattr(
        _engine, "solve_power", lambda *a, **k: fallbacks.append(1) or real_power(*a, **k)
    )
    y = g.propagate(seeds, raw=True, tol=1e-6, method="ppr")
    assert not fallbacks
    assert g.n_iter_ <= 23
    monkeypatch.setattr(_engine, "solve_power", real_power)
    ref = g.propagate(seeds, raw=True, tol=1e-9, method="power", max_iter=1000)
    assert g.n_iter_ > 3 * 23
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-6)


def test_bicgstab_column_solved_by_its_half_step_does_not_stop_the_others():
    # Column 0 sits on a 2-node chain (T^2 w = 0: the half step solves it exactly); the
    # other columns must go on as if alone, without a fallback to power iteration.
    n = 20_000
    A = tree_like_digraph(n, 8, 3).tolil()
    A[0, :] = 0
    A[1, :] = 0
    A[0, 1] = 1.0
    A = A.tocsr()
    A.eliminate_zeros()
    g = ex.RiskGraph(A, direction="out")
    rng = np.random.default_rng(4)
    others = [rng.choice(np.arange(2, n), 30, replace=False) for _ in range(2)]
    g.propagate(others, tol=1e-6)
    alone = g.n_iter_
    both = g.propagate([np.array([0]), *others], raw=True, tol=1e-6)
    assert g.n_iter_ == alone
    np.testing.assert_allclose(both[[0, 1], 0], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(both[0, 0], 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cap", [1, 2, 3, 4, 5])
def test_bicgstab_honours_the_cap_and_names_it(backend, cap):
    n = 2000
    g = ex.RiskGraph(tree_like_digraph(n, 4, 5), direction="out", backend=backend)
    seeds = np.random.default_rng(5).choice(n, 10, replace=False)
    ref = g.propagate(seeds, raw=True, tol=1e-9, max_iter=400, method="ppr")
    seeds_only = np.zeros(n)
    seeds_only[seeds] = 1.0
    with pytest.warns(ex.ConvergenceWarning, match=rf"cap \({cap}\)") as rec:
        y = g.propagate(seeds, raw=True, tol=1e-9, max_iter=cap, method="ppr")
    assert g.n_iter_ <= cap
    assert rec[0].filename == __file__  # the warning points at the caller's line
    # Never worse than the seeds alone (BiCGSTAB's residual is not monotone).
    assert np.abs(y - ref).sum() <= np.abs(seeds_only - ref).sum() * (1 + 1e-6)


def test_power_iteration_from_a_start_converges_to_the_same_solution():
    T = directed_walk(50, 0.1, 9)
    W = np.zeros((50, 2), np.float32)
    W[[3, 9], 0] = 1.0
    W[[20], 1] = 1.0
    op = small_operator(T, BACKENDS[-1], 1, 1 << 16)
    Y0, n0 = _engine.solve_power(op, W, _engine.Solve(0.85, 1e-7, 500))
    start = Y0 + np.float32(1e-3)
    Y1, n1 = _engine.solve_power(op, W, _engine.Solve(0.85, 1e-7, 500), start=start)
    np.testing.assert_allclose(Y1, Y0, rtol=1e-5, atol=1e-6)
    assert n1 < n0


@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_transpose_scaled_matches_scipy(itype):
    rng = np.random.default_rng(3)
    A = sp.random(300, 200, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    A.indptr, A.indices = A.indptr.astype(itype), A.indices.astype(itype)
    scale = rng.random(300).astype(np.float32)
    T = _engine.transpose_scaled(A, scale)
    want = (sp.diags(scale) @ A).T.tocsr()
    assert T.shape == (200, 300) and T.has_sorted_indices
    np.testing.assert_allclose(T.toarray(), want.toarray(), rtol=1e-6)
    assert np.all(np.diff(T.indices[T.indptr[0] : T.indptr[1]]) > 0)


def test_transpose_scatter_refuses_inconsistent_input():
    if _engine._spmm is None:
        pytest.skip("compiled loops not built")
    indptr = np.array([0, 1, 2], np.int32)
    indices = np.array([0, 5], np.int32)  # column 5 of a 2-column matrix
    data = np.ones(2, np.float32)
    nxt = np.array([0, 1], np.int64)
    with pytest.raises(ValueError):
        _engine._spmm.csr_transpose(
            indptr,
            indices,
            data,
            np.ones(2, np.float32),
            nxt,
            np.empty(2, np.int32),
            np.empty(2, np.float32),
        )


def test_walk_from_the_seeds_on_a_directed_graph_matches_float64():
    # method='ppr' with normalization='none' on a directed graph: power iteration from a
    # start that holds the solution's far mass (see RiskGraph._solve_block).
    n = 3000
    A = tree_like_digraph(n, 5, 4)
    A = A + sp.csr_matrix((np.ones(50, np.float32), (np.arange(50), np.arange(1, 51))), (n, n))
    A = A.tolil()
    A[7, :] = 0  # a dead end: mass leaks there, the start is only a guess
    A = A.tocsr()
    seeds = np.random.default_rng(0).choice(n, 20, replace=False)
    g = ex.RiskGraph(A, direction="out", normalization="none")
    y = g.propagate(seeds, raw=True, method="ppr", tol=1e-7)
    d = np.asarray(A.sum(axis=1)).ravel()
    T = (A.T @ sp.diags(1.0 / np.where(d > 0, d, 1.0))).tocsr().astype(np.float64)
    w = np.zeros(n)
    w[seeds] = 1.0
    ref = w.copy()
    for _ in range(400):
        ref = w + 0.85 * (T @ ref)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        g.propagate(seeds, raw=True, method="bicgstab", tol=1e-7), ref, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("n,k,threads", [(500, 4, 1), (60_000, 5, 2)])
def test_one_call_reads_the_walk_from_the_seeds_without_a_transpose(n, k, threads):
    A = tree_like_digraph(n, k, 8)
    rng = np.random.default_rng(1)
    seeds = [rng.choice(n, 30, replace=False) for _ in range(2)]
    kw = dict(direction="out", normalization="none", num_threads=threads)
    one = ex.propagate(A, seeds, method="ppr", raw=True, tol=1e-7, **kw)
    g = ex.RiskGraph(A, **kw)
    kept = g.propagate(seeds, method="ppr", raw=True, tol=1e-7)
    assert "col" in g._ops  # a kept graph builds the transpose once, for every call
    np.testing.assert_allclose(one, kept, rtol=1e-4, atol=1e-6)
    # the scatter operator itself against scipy
    d = np.asarray(A.sum(axis=1)).ravel()
    op = _engine.TransposeOperator(
        A, (1 / d).astype(np.float32), num_threads=threads, min_parallel_nnz=1
    )
    X = rng.random((n, 3)).astype(np.float32)
    want = (sp.diags(1 / d) @ A).T @ X
    np.testing.assert_allclose(op.matmul(X), want, rtol=1e-4, atol=1e-5)
