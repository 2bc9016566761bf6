"""Tests for guardrails.expand: propagation, bipartite paths, proximity, combining, provenance."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import guardrails.expand as ex
from guardrails.exceptions import ValidationError
from guardrails.filters.primitive import DemoteRisk, SuppressRisk

A_DAMP = 0.85


def random_graph(n, p, seed, *, directed=False, weighted=False):
    rng = np.random.default_rng(seed)
    M = (rng.random((n, n)) < p).astype(np.float64)
    np.fill_diagonal(M, 0)
    if weighted:
        M *= rng.uniform(0.5, 2.0, size=M.shape)
    if not directed:
        M = np.triu(M, 1)
        M = M + M.T
    return sp.csr_matrix(M)


def exact_series(A, W, *, direction="both", normalization="degree", damping=A_DAMP):
    """sum_k a^k T^k W in float64 by a dense solve."""
    M = A.toarray().astype(np.float64)
    if direction == "in":
        M = M.T
    elif direction == "both":
        M = M + M.T
    d = M.sum(axis=1)
    Q = np.divide(M, d[:, None], out=np.zeros_like(M), where=d[:, None] > 0)
    T = Q if normalization == "degree" else Q.T
    return np.linalg.solve(np.eye(len(M)) - damping * T, W)


# -- propagation --------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["both", "out", "in"])
@pytest.mark.parametrize("normalization", ["degree", "none"])
@pytest.mark.parametrize("directed", [False, True])
def test_propagate_matches_dense_solve(direction, normalization, directed):
    A = random_graph(40, 0.1, 1, directed=directed, weighted=True)
    seeds = np.array([0, 5, 17])
    w = np.array([1.0, 0.5, 0.25], dtype=np.float32)
    W = np.zeros((40, 1))
    W[seeds, 0] = w
    want = exact_series(A, W, direction=direction, normalization=normalization)[:, 0]
    g = ex.RiskGraph(A, direction=direction, normalization=normalization)
    got = g.propagate(seeds, weights=w, method="ppr", tol=1e-7, raw=True)
    assert got.dtype == np.float32 and got.shape == (40,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert g.symmetric == (direction == "both" or not directed)


def test_cg_and_power_agree_and_cg_refuses_directed():
    A = random_graph(60, 0.08, 2)
    g = ex.RiskGraph(A)
    cg = g.propagate([1, 2, 3], method="cg", tol=1e-7, raw=True)
    pw = g.propagate([1, 2, 3], method="power", tol=1e-7, raw=True)
    np.testing.assert_allclose(cg, pw, rtol=1e-4, atol=1e-5)
    D = ex.RiskGraph(random_graph(30, 0.1, 3, directed=True), direction="out")
    assert not D.symmetric
    with pytest.raises(
        ValidationError, match=r"The 'method' parameter of RiskGraph.propagate must be"
    ):
        D.propagate([0], method="cg")


def test_categories_are_columns_and_match_single_runs():
    A = random_graph(50, 0.1, 4)
    g = ex.RiskGraph(A)
    both = g.propagate(
        {"sellers": [0, 1], "spam": [10]}, weights={"sellers": [1.0, 0.5], "spam": [0.7]}, tol=1e-7
    )
    assert both.shape == (50, 2) and both.dtype == np.float32
    np.testing.assert_allclose(
        both[:, 0], g.propagate([0, 1], weights=[1.0, 0.5], tol=1e-7), atol=1e-5
    )
    np.testing.assert_allclose(both[:, 1], g.propagate([10], weights=[0.7], tol=1e-7), atol=1e-5)
    as_list = g.propagate([[0, 1], [10]], weights=[[1.0, 0.5], [0.7]], tol=1e-7)
    np.testing.assert_allclose(as_list, both, atol=1e-6)
    # a weight matrix gives the same, and categories can be solved in chunks
    W = np.zeros((50, 2), dtype=np.float32)
    W[[0, 1], 0] = [1.0, 0.5]
    W[10, 1] = 0.7
    np.testing.assert_allclose(g.propagate(W, tol=1e-7, max_columns=1), both, atol=1e-5)


def test_scale_seed_weight_and_decay_on_a_path():
    n = 30
    path = sp.diags([np.ones(n - 1)], [1], shape=(n, n), format="csr")
    r = ex.propagate(path, [0], weights=[0.6], tol=1e-7)
    assert r[0] >= 0.6 - 1e-6
    assert np.all(np.diff(r[1:]) <= 1e-7)  # decays with distance
    assert r[-1] < 0.6 * A_DAMP**10
    # a hub with one flagged neighbour stays low
    star = sp.csr_matrix((np.ones(50), (np.zeros(50, int), np.arange(1, 51))), shape=(51, 51))
    hub = ex.propagate(star, [1])[0]
    assert hub < 0.1


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 25),
    p=st.floats(0.05, 0.5),
    seed=st.integers(0, 10_000),
    normalization=st.sampled_from(["degree", "none"]),
    direction=st.sampled_from(["both", "out", "in"]),
    method=st.sampled_from(["auto", "ppr", "plain@0.5", "degree@0.95", "onehop", "heat"]),
    data=st.data(),
)
def test_risk_invariants(n, p, seed, normalization, direction, method, data):
    """Risk is float32 in [0, 1]; seeds get at least their weight; for a fixed method
    more seeds never lower risk. ('auto' may switch scorers when a seed is added, so
    monotonicity is checked for the scorer it chose, not across its two choices.)"""
    A = random_graph(n, p, seed, directed=True)
    seeds = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    w = np.array(
        data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(seeds), max_size=len(seeds))),
        dtype=np.float32,
    )
    g = ex.RiskGraph(A, direction=direction, normalization=normalization)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ex.ConvergenceWarning)
        r = g.propagate(seeds, weights=w, tol=1e-6, method=method)
        assert r.dtype == np.float32 and r.shape == (n,)
        assert np.all((r >= 0) & (r <= 1))
        assert np.all(r[seeds] >= w - 1e-5)
        used = g.selection_[0].method
        if method == "auto":  # auto's values are on the graph's own PageRank scale
            r = g.propagate(seeds, weights=w, tol=1e-6, method=used)
        extra = data.draw(st.integers(0, n - 1))
        more = g.propagate(seeds + [extra], weights=np.append(w, 1.0), tol=1e-6, method=used)
        # monotone: one more seed (or a higher weight) never lowers anybody's risk
        assert np.all(more >= r - 2e-5)
    # SuppressRisk and DemoteRisk take it as is
    SuppressRisk(r, threshold=ex.DEFAULT_THRESHOLD)
    DemoteRisk(r, weight=1.0)


def test_sybilrank_variant_is_relative_and_early_stopped():
    A = random_graph(40, 0.1, 5)
    g = ex.RiskGraph(A)
    r = g.propagate([0, 1], method="sybilrank", n_steps=3)
    assert r.dtype == np.float32 and np.isclose(r.max(), 1.0)
    Q = A.toarray()
    Q = Q / np.maximum(Q.sum(1, keepdims=True), 1)
    W = np.zeros(40)
    W[[0, 1]] = 1
    want = np.linalg.matrix_power(Q, 3) @ W
    np.testing.assert_allclose(r, want / want.max(), atol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"direction": "out"}, {"direction": "out", "method": "power"}])
def test_convergence_warning_at_iteration_cap(kw):
    A = random_graph(40, 0.1, 6)
    with pytest.warns(ex.ConvergenceWarning, match=r"cap \(1\)") as rec:
        ex.propagate(A, [0], max_iter=1, tol=1e-9, **kw)
    assert rec[0].filename == __file__  # points at the caller's line, whatever the solver


def test_isolated_and_dead_end_nodes():
    A = sp.csr_matrix((4, 4))
    r = ex.propagate(A, [2], weights=[0.3])
    np.testing.assert_allclose(r, [0, 0, 0.3, 0], atol=1e-7)
    chain = sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 2])), shape=(4, 4))
    r = ex.propagate(chain, [2], direction="out", tol=1e-8, method="power")
    np.testing.assert_allclose(r, [A_DAMP**2, A_DAMP, 1, 0], atol=1e-6)


def test_contributions_sum_to_risk():
    A = random_graph(40, 0.1, 7)
    seeds, w = [0, 3, 9], [1.0, 0.4, 0.8]
    for normalization in ("degree", "none"):
        g = ex.RiskGraph(A, normalization=normalization)
        # personalised PageRank is linear in the seeds: an exact decomposition
        raw = g.propagate(seeds, weights=w, method="ppr", tol=1e-8, raw=True)
        ids, C = g.contributions([5, 12, 3], seeds, weights=w, method="ppr")
        assert ids.tolist() == seeds and C.shape == (3, 3, 1)
        np.testing.assert_allclose(C.sum(axis=1)[:, 0], raw[[5, 12, 3]], rtol=1e-4, atol=1e-6)
        # auto: the chosen candidate's shares, scaled to the risk auto returns
        raw = g.propagate(seeds, weights=w, tol=1e-8, raw=True)
        chosen = g.selection_[0].method
        ids, C = g.contributions([5, 12, 3], seeds, weights=w)
        np.testing.assert_allclose(C.sum(axis=1)[:, 0], raw[[5, 12, 3]], rtol=1e-4, atol=1e-6)
        _, Cc = g.contributions([5, 12, 3], seeds, weights=w, method=chosen)
        shares = Cc[:, :, 0] / Cc[:, :, 0].sum(axis=1, keepdims=True)
        np.testing.assert_allclose(
            C[:, :, 0] / C[:, :, 0].sum(axis=1, keepdims=True), shares, atol=1e-5
        )


def test_validation_messages():
    A = random_graph(10, 0.3, 8)
    shape = r"^The '\w+' parameter of [\w.]+ must be .+\. Got .+ instead\.$"
    for call in (
        lambda: ex.propagate(A, [10]),
        lambda: ex.propagate(A, [0], weights=[1.5]),
        lambda: ex.propagate(A, [0], damping=1.0),
        lambda: ex.propagate(A, [0], direction="up"),
        lambda: ex.propagate(sp.csr_matrix(np.ones((3, 4))), [0]),
        lambda: ex.propagate(-A, [0]),
        lambda: ex.neighbourhood(np.zeros(3), threshold=0.5, top_k=2),
        lambda: ex.combine_risk({"a": np.zeros(3), "b": np.zeros(4)}),
        lambda: ex.embedding_risk(np.ones((3, 2)), [0], radius=1.0),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        assert re.match(shape, str(info.value), flags=re.S), str(info.value)


def test_neighbourhood_helpers():
    r = np.array([0.0, 0.9, 0.2, 0.5, 0.5, 0.05], dtype=np.float32)
    assert ex.neighbourhood(r, threshold=0.5).tolist() == [1, 3, 4]
    assert ex.neighbourhood(r, top_k=2).tolist() == [1, 3]
    assert ex.neighbourhood(r, top_k=10).tolist() == [1, 3, 4, 2, 5]  # zero risk never included
    assert ex.neighbourhood(r, top_k=2, exclude=[1]).tolist() == [3, 4]
    assert ex.neighbourhood(r, quantile=0.5).tolist() == [1, 3, 4]


# -- bipartite: co-engagement and term co-use ---------------------------------------------
def test_coengagement_matches_bipartite_graph_and_reaches_coengaged_items():
    # users 0-2 like items 0 and 1; user 3 likes items 2 and 3
    R = sp.csr_matrix(
        ([1, 1, 1, 1, 1, 1, 1, 1], ([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 0, 1, 2, 3])),
        shape=(4, 4),
    )
    item, user = ex.coengagement_risk(R, [0], tol=1e-7)
    assert item.shape == (4,) and user.shape == (4,)
    assert item[0] == 1.0 and item[1] > 0.3 and item[2] == 0 and item[3] == 0
    assert user[:3].min() > 0 and user[3] == 0
    full = sp.bmat([[None, R], [R.T, None]], format="csr")
    want = ex.propagate(full, np.arange(4, 8)[[0]], tol=1e-7)
    np.testing.assert_allclose(np.concatenate([user, item]), want, atol=1e-5)


def test_term_risk_both_sides():
    # accounts 0,1 use tag 0; account 2 uses tags 0 and 1; account 3 uses tag 2
    M = sp.csr_matrix(([1, 1, 1, 1, 1], ([0, 1, 2, 2, 3], [0, 0, 0, 1, 2])), shape=(4, 3))
    acc, tag = ex.term_risk(M, seed_terms=[0])
    assert acc[:3].min() > 0.3 and acc[3] == 0 and tag[0] == 1 and tag[2] == 0
    acc2, tag2 = ex.term_risk(M, seed_accounts=[3])
    assert tag2[2] > 0.5 and acc2[0] == 0
    with pytest.raises(ValidationError):
        ex.term_risk(M)


# -- embedding proximity ------------------------------------------------------------------
def brute_embedding(V, seeds, w, radius, top_m=None):
    V = V.astype(np.float64)
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    U = np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)
    cos = U @ U[seeds].T  # (n, S)
    contrib = w[None, :] * np.maximum(cos - radius, 0) / (1 - radius)
    if top_m is not None:
        allowed = np.zeros_like(cos, dtype=bool)
        for j, s in enumerate(seeds):
            c = U @ U[s]
            allowed[np.argsort(-c, kind="stable")[: top_m + 1], j] = True
        contrib = np.where(allowed, contrib, 0)
    r = contrib.max(axis=1)
    r[seeds] = np.maximum(r[seeds], w)
    return np.clip(r, 0, 1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.floats(-0.5, 0.9), k=st.integers(1, 6))
def test_embedding_risk_is_exact(seed, radius, k):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(60, 5)).astype(np.float32)
    seeds = rng.choice(60, k, replace=False)
    w = rng.uniform(0.1, 1.0, k).astype(np.float32)
    got = ex.embedding_risk(V, seeds, weights=w, radius=radius)
    assert got.dtype == np.float32 and np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, brute_embedding(V, seeds, w, radius), atol=1e-5)
    ids, vals = ex.nearest_seeds(V, [0, 1], seeds, weights=w, radius=radius, top=2)
    assert np.all(np.isin(ids[ids >= 0], seeds))
    if not np.isin([0, 1], seeds).any():
        # the best seed's contribution is the item's embedding risk
        np.testing.assert_allclose(vals[:, 0], got[[0, 1]], atol=1e-5)


def test_embedding_top_m_and_zero_factors():
    rng = np.random.default_rng(3)
    V = rng.normal(size=(80, 6)).astype(np.float32)
    V[5] = 0  # an item with no factors
    seeds = np.array([1, 2, 3])
    w = np.ones(3, dtype=np.float32)
    got = ex.embedding_risk(V, seeds, radius=0.0, top_m=4)
    np.testing.assert_allclose(got, brute_embedding(V, seeds, w, 0.0, top_m=4), atol=1e-5)
    assert got[5] == 0
    assert (got > 0).sum() <= 3 * 5


# -- combining and provenance -------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=3, max_size=3),
    st.lists(st.floats(0, 1), min_size=3, max_size=3),
    st.floats(0, 2),
    st.floats(0, 2),
)
def test_combine_methods(a, b, la, lb):
    a, b = np.array(a, dtype=np.float32), np.array(b, dtype=np.float32)
    w = {"graph": la, "embedding": lb}
    src = {"graph": a, "embedding": b}
    mx = ex.combine_risk(src, weights=w)
    no = ex.combine_risk(src, weights=w, method="noisy_or")
    np.testing.assert_allclose(
        mx, np.maximum(np.minimum(la * a, 1), np.minimum(lb * b, 1)), atol=1e-6
    )
    assert np.all(no >= mx - 1e-6) and np.all((no >= 0) & (no <= 1))
    if la + lb > 1e-6:
        ws = ex.combine_risk(src, weights=w, method="weighted_sum")
        np.testing.assert_allclose(ws, (la * a + lb * b) / (la + lb), atol=1e-5)


def test_risk_expansion_explains_by_source_and_seed():
    rng = np.random.default_rng(0)
    n = 40
    A = random_graph(n, 0.08, 9)
    R = sp.random(30, n, density=0.15, format="csr", random_state=1)
    V = rng.normal(size=(n, 4))
    T = sp.random(n, 12, density=0.2, format="csr", random_state=2)
    exp = (
        ex.RiskExpansion(n, [0, 7], weights=[1.0, 0.6])
        .add_graph(A)
        .add_coengagement(R, weight=0.8)
        .add_embedding(V, weight=0.5, radius=0.3)
        .add_terms(T, seed_terms=[3], weight=0.7)
    )
    risk = exp.risk()
    assert risk.shape == (n,) and risk.dtype == np.float32
    srcs = exp.source_risks()
    assert set(srcs) == {"graph", "coengagement", "embedding", "terms"}
    want = ex.combine_risk(
        srcs, weights={"graph": 1.0, "coengagement": 0.8, "embedding": 0.5, "terms": 0.7}
    )
    np.testing.assert_array_equal(risk, want)
    expl = exp.explain([0, 11, 25], top=4)
    assert [e.account for e in expl] == [0, 11, 25]
    for e in expl:
        assert np.isclose(e.risk, risk[e.account])
        vals = list(e.by_source.values())
        assert vals == sorted(vals, reverse=True) and np.isclose(max(vals), e.risk, atol=1e-6)
        assert len(e.seeds) <= 4 and all(c.value > 0 for c in e.seeds)
        assert [c.value for c in e.seeds] == sorted((c.value for c in e.seeds), reverse=True)
        if e.risk > 0:
            assert e.top_source in srcs
    # graph contributions of one account add up to its (unclipped) graph risk
    g = ex.RiskGraph(A)
    raw = g.propagate([0, 7], weights=[1.0, 0.6], tol=1e-8, raw=True)
    _, C = g.contributions([11], [0, 7], weights=[1.0, 0.6])
    assert np.isclose(C.sum(), raw[11], rtol=1e-3, atol=1e-6)
    with pytest.raises(ValidationError):
        exp.add_graph(A)  # duplicate name


def test_karate_club_recovery_beats_random():
    nx = pytest.importorskip("networkx")
    G = nx.karate_club_graph()
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, weight=None))
    club = np.array([G.nodes[i]["club"] == "Officer" for i in G])
    members = np.flatnonzero(club)
    seeds = members[[3, 9]]
    r = ex.RiskGraph(A).propagate(seeds, raw=True)
    top = ex.neighbourhood(r / r.max(), top_k=int(club.sum()) - 2, exclude=seeds)
    precision = club[top].mean()
    assert precision > 0.75 > club.mean()


@pytest.mark.parametrize("method", ["power", "sybilrank"])
def test_contributions_directed_and_early_stopped(method):
    A = random_graph(30, 0.12, 11, directed=True)
    g = ex.RiskGraph(A, direction="out")
    seeds, w = [2, 4], [1.0, 0.5]
    W = np.zeros(30)
    W[seeds] = w
    M = A.toarray()
    Q = M / np.maximum(M.sum(axis=1, keepdims=True), 1e-300)
    if method == "sybilrank":  # unscaled T^n_steps w
        raw = np.linalg.matrix_power(Q, 4) @ W
    else:
        raw = g.propagate(seeds, weights=w, method=method, tol=1e-8, raw=True)
        np.testing.assert_allclose(
            raw, np.linalg.solve(np.eye(30) - A_DAMP * Q, W), rtol=1e-4, atol=1e-6
        )
    _, C = g.contributions([0, 7, 2], seeds, weights=w, method=method, n_steps=4, tol=1e-8)
    np.testing.assert_allclose(C.sum(axis=1)[:, 0], raw[[0, 7, 2]], rtol=1e-4, atol=1e-6)


def test_progress_bar_runs(capsys):
    A = random_graph(30, 0.1, 12)
    r1 = ex.propagate(A, [0], progress=True)
    r2 = ex.propagate(A, [0])
    np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("module", ["propagate", "provenance"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"guardrails.expand.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_background_level_is_the_seeds_share_of_the_graph():
    """Degree-weighted mean of the raw risk = sum_s d_s w_s / ((1 - a) sum d) (documented)."""
    A = random_graph(60, 0.1, 13, weighted=True)
    g = ex.RiskGraph(A)
    seeds, w = np.array([1, 4, 9]), np.array([1.0, 0.5, 0.2], dtype=np.float32)
    raw = g.propagate(seeds, weights=w, method="ppr", tol=1e-8, raw=True)
    d = g.degree.astype(np.float64)
    want = (d[seeds] * w).sum() / ((1 - A_DAMP) * d.sum())
    assert np.isclose((d * raw).sum() / d.sum(), want, rtol=1e-4)
