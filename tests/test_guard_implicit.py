"""An unguarded Guard returns what implicit returns, for every model kind."""

from __future__ import annotations

import implicit
import numpy as np
import pytest
import scipy.sparse as sp

import guardrails as gr


@pytest.fixture(scope="module")
def user_items():
    rng = np.random.default_rng(7)
    m = sp.random(120, 80, density=0.08, format="csr", random_state=rng, dtype=np.float32)
    m.data[:] = rng.integers(1, 5, size=m.nnz)
    return m


def _fit(model, user_items):
    model.fit(user_items, show_progress=False)
    return model


MF = {
    "als": lambda: implicit.cpu.als.AlternatingLeastSquares(
        factors=8, iterations=3, random_state=1, num_threads=1
    ),
    "bpr": lambda: implicit.cpu.bpr.BayesianPersonalizedRanking(
        factors=8, iterations=5, random_state=1, num_threads=1
    ),
    "lmf": lambda: implicit.cpu.lmf.LogisticMatrixFactorization(
        factors=8, iterations=3, random_state=1, num_threads=1
    ),
}
II = {
    "cosine": lambda: implicit.nearest_neighbours.CosineRecommender(K=10),
    "tfidf": lambda: implicit.nearest_neighbours.TFIDFRecommender(K=10),
    "bm25": lambda: implicit.nearest_neighbours.BM25Recommender(K=10),
}


def _same_up_to_ties(ids_a, sc_a, ids_b, sc_b, tol=1e-5):
    """Same slates, allowing items with equal scores to swap places."""
    np.testing.assert_allclose(
        np.asarray(sc_a, np.float64), np.asarray(sc_b, np.float64), rtol=1e-5, atol=tol
    )
    for ra, rb, sa in zip(
        np.atleast_2d(ids_a), np.atleast_2d(ids_b), np.atleast_2d(sc_a), strict=True
    ):
        if set(ra.tolist()) != set(rb.tolist()):
            # only the last, tied score may differ in membership
            diff = set(ra.tolist()) ^ set(rb.tolist())
            last = sa[-1]
            assert np.isclose(sa, last, rtol=1e-5, atol=tol)[np.isin(ra, list(diff))].all()


@pytest.mark.parametrize("name", sorted(MF))
def test_factor_models_match_implicit(name, user_items):
    model = _fit(MF[name](), user_items)
    guard = gr.Guard(model)
    users = np.arange(user_items.shape[0])
    ids_i, sc_i = model.recommend(users, user_items[users], N=10)
    ids_g, sc_g = guard.recommend(users, user_items[users], N=10)
    _same_up_to_ties(ids_g, sc_g, ids_i, sc_i)
    one_i, one_s = model.recommend(3, user_items[3], N=10)
    one_g, one_gs = guard.recommend(3, user_items[3], N=10)
    _same_up_to_ties(one_g, one_gs, one_i, one_s)
    assert one_g.ndim == 1
    items = np.arange(0, 80, 3)
    _same_up_to_ties(
        *guard.recommend(users, user_items[users], N=5, items=items),
        *model.recommend(users, user_items[users], N=5, items=items),
    )
    filt = np.arange(0, 80, 2)
    _same_up_to_ties(
        *guard.recommend(users, user_items[users], N=5, filter_items=filt),
        *model.recommend(users, user_items[users], N=5, filter_items=filt),
    )
    _same_up_to_ties(
        *guard.similar_items(np.arange(80), N=6), *model.similar_items(np.arange(80), N=6), tol=1e-4
    )
    _same_up_to_ties(*guard.similar_items(5, N=6), *model.similar_items(5, N=6), tol=1e-4)
    _same_up_to_ties(
        *guard.similar_users(np.arange(50), N=6), *model.similar_users(np.arange(50), N=6), tol=1e-4
    )


def test_als_recalculate_user_matches_implicit(user_items):
    model = _fit(MF["als"](), user_items)
    guard = gr.Guard(model)
    # a brand-new test account that followed three items: no trained factors
    new = sp.csr_matrix((np.ones(3, np.float32), [4, 9, 30], [0, 3]), shape=(1, 80))
    ids_i, sc_i = model.recommend(0, new, N=10, recalculate_user=True)
    ids_g, sc_g = guard.recommend(10_000, new, N=10, recalculate_user=True)
    _same_up_to_ties(ids_g, sc_g, ids_i, sc_i, tol=1e-4)
    assert not np.isin(ids_g, [4, 9, 30]).any()


def test_factor_model_fold_in_for_new_users(user_items):
    rng = np.random.default_rng(0)
    fm = gr.FactorModel(rng.standard_normal((5, 4)), rng.standard_normal((80, 4)))
    new = sp.csr_matrix((np.ones(2, np.float32), [1, 2], [0, 2]), shape=(1, 80))
    ids, scores = gr.Guard(fm).recommend(123, new, N=5, recalculate_user=True)
    assert ids.shape == (5,) and not np.isin(ids, [1, 2]).any()
    # the folded-in user is close to the items it interacted with
    V = fm.item_factors
    u = np.linalg.solve(V[[1, 2]].T @ V[[1, 2]] + 0.01 * np.eye(4), V[[1, 2]].T @ np.ones(2))
    np.testing.assert_allclose(scores, (V @ u)[ids], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(II))
def test_item_item_models_match_implicit(name, user_items):
    model = _fit(II[name](), user_items)
    guard = gr.Guard(model)
    users = np.arange(user_items.shape[0])
    ids_i, sc_i = model.recommend(users, user_items[users], N=10)
    ids_g, sc_g = guard.recommend(users, user_items[users], N=10)
    assert ids_g.dtype == ids_i.dtype == np.int32
    short = 0
    for r in users:
        # implicit returns the reachable items only, and so does the Guard (no filler);
        # implicit may also return an already-liked item with score 0 (its sentinel)
        liked = user_items[r].indices
        k = int(((ids_i[r] >= 0) & ~np.isin(ids_i[r], liked)).sum())
        short += k < 10
        assert int((ids_g[r] >= 0).sum()) == k
        assert (ids_g[r, k:] == -1).all()
        _same_up_to_ties(ids_g[r, :k], sc_g[r, :k], ids_i[r, :k], sc_i[r, :k])
        one, _ = guard.recommend(int(r), user_items[r], N=10)
        assert one.dtype == np.int32 and one.size == k
    assert short, "the fixture should have viewers with fewer than N reachable items"
    for i in range(0, 80, 7):
        a_ids, a_sc = model.similar_items(i, N=5)
        g_ids, g_sc = guard.similar_items(i, N=5)
        k = int((a_ids >= 0).sum())
        assert g_ids.size == k
        _same_up_to_ties(g_ids[:k], g_sc[:k], a_ids[:k], a_sc[:k])
    with pytest.raises(gr.UnsupportedModelError):
        guard.similar_users(0)


def test_guarded_implicit_model_never_returns_blocked(user_items):
    model = _fit(MF["als"](), user_items)
    users = np.arange(user_items.shape[0])
    top, _ = model.recommend(users, user_items[users], N=10)
    flagged = np.unique(top[:, :3])
    guard = gr.Guard(model, [gr.filters.BlockItems(flagged, reason="csam_seller")])
    ids, _ = guard.recommend(users, user_items[users], N=10)
    assert not np.isin(ids, flagged).any()
    assert (ids >= 0).all()


def test_unfitted_and_foreign_models_are_rejected():
    with pytest.raises(gr.UnsupportedModelError, match="fit it"):
        gr.Guard(implicit.cpu.als.AlternatingLeastSquares(factors=4))
    with pytest.raises(gr.UnsupportedModelError, match="cannot adapt"):
        gr.Guard(object())


def test_gpu_models_are_converted_to_cpu(user_items):
    """implicit's GPU models reach the kernel through their own ``to_cpu()``."""
    cpu = _fit(MF["als"](), user_items)

    class FakeGpuALS:  # stands in for implicit.gpu.als.AlternatingLeastSquares
        def to_cpu(self):
            return cpu

    FakeGpuALS.__module__ = "implicit.gpu.als"
    guard = gr.Guard(FakeGpuALS())
    users = np.arange(20)
    _same_up_to_ties(
        *guard.recommend(users, user_items[users], N=5),
        *cpu.recommend(users, user_items[users], N=5),
    )


@pytest.mark.parametrize("name", ["als", "cosine", "bm25"])
def test_implicit_evaluation_runs_on_a_guard(name, user_items):
    """implicit's evaluation reads the Guard's slates as its own (int32 ids, same shapes)."""
    from implicit.evaluation import precision_at_k, ranking_metrics_at_k, train_test_split

    train, test = train_test_split(user_items, 0.75, random_state=3)
    model = _fit({**MF, **II}[name](), train.tocsr())
    guard = gr.Guard(model)
    for K in (5, 10):
        want = ranking_metrics_at_k(model, train, test, K=K, show_progress=False)
        got = ranking_metrics_at_k(guard, train, test, K=K, show_progress=False)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert want["precision"] > 0
        assert precision_at_k(guard, train, test, K=K, show_progress=False) == pytest.approx(
            precision_at_k(model, train, test, K=K, show_progress=False), rel=1e-9
        )
    # ids in implicit's dtype on every path
    assert guard.recommend(0, train[0], N=3)[0].dtype == np.int32
    assert guard.recommend_detailed([0, 1], train[[0, 1]], N=3).ids.dtype == np.int32
    assert guard.similar_items([0, 1], N=3)[0].dtype == np.int32
    if name in MF:
        assert guard.similar_users(0, N=3)[0].dtype == np.int32


def test_item_item_backfill_is_explicit_and_eligible(user_items):
    model = _fit(II["cosine"](), user_items)
    popularity = np.asarray(user_items.sum(axis=0)).ravel()
    blocked = np.argsort(-popularity, kind="stable")[:5]  # the most popular are flagged
    policy = [gr.filters.BlockItems(blocked, reason="csam_seller")]
    plain = gr.Guard(model, policy)
    filled = gr.Guard(model, policy, backfill=popularity)
    users = np.arange(user_items.shape[0])
    ids_p, _ = plain.recommend(users, user_items, N=20)
    ids_f, sc_f = filled.recommend(users, user_items, N=20)
    liked = user_items.toarray() > 0
    assert (ids_p < 0).any(), "some slates are short without backfill"
    assert (ids_f >= 0).all(), "every slate is full with backfill"
    for r in users:
        k = int((ids_p[r] >= 0).sum())
        # the reachable items first, unchanged; then the most popular eligible ones
        np.testing.assert_array_equal(ids_f[r, :k], ids_p[r, :k])
        tail = ids_f[r, k:]
        assert not np.isin(tail, blocked).any() and not liked[r, tail].any()
        assert not np.isin(tail, ids_p[r, :k]).any()
        np.testing.assert_array_equal(sc_f[r, k:], 0.0)
        pops = popularity[tail]
        assert (np.diff(pops) <= 0).all()
        eligible = np.setdiff1d(np.flatnonzero(~liked[r]), np.r_[blocked, ids_p[r, :k]])
        if tail.size:
            assert pops.min() >= np.sort(popularity[eligible])[::-1][tail.size - 1]
    with pytest.raises(gr.ValidationError, match="backfill"):
        gr.Guard(model, backfill=popularity[:-1])
    # A factor model takes one too: it ranks only the rows a policy leaves without a
    # query, so without such a policy the slates are the model's own.
    als = _fit(MF["als"](), user_items)
    ids_a, sc_a = gr.Guard(als, backfill=popularity).recommend(users, user_items, N=20)
    ids_b, sc_b = gr.Guard(als).recommend(users, user_items, N=20)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(sc_a, sc_b)


def test_swap_model_serves_users_added_by_partial_fit(user_items):
    model = _fit(MF["als"](), user_items)
    guard = gr.Guard(model, [gr.filters.BlockItems([0, 1, 2])])
    before = guard.model_.user_factors.copy()
    n = user_items.shape[0]
    new_ids = np.arange(n, n + 3)
    rows = sp.csr_matrix(
        (np.ones(6, np.float32), [4, 9, 30, 5, 6, 7], [0, 3, 5, 6]), shape=(3, 80)
    )
    model.partial_fit_users(new_ids, rows)
    assert model.user_factors.shape[0] == n + 3
    # The Guard kept its own copy: nothing changed under it, and the new ids are unknown.
    np.testing.assert_array_equal(guard.model_.user_factors, before)
    with pytest.raises(gr.ValidationError, match="userid"):
        guard.recommend(new_ids, rows, N=5)
    version = guard.policy_version
    guard.swap_model(model)
    assert guard.model is model and guard.policy_version == version
    ids, scores = guard.recommend(new_ids, rows, N=5)
    ids_i, sc_i = model.recommend(new_ids, rows, N=5, filter_items=[0, 1, 2])
    _same_up_to_ties(ids, scores, ids_i, sc_i)
    assert not np.isin(ids, [0, 1, 2]).any()
    # A model of another kind swaps in too; a bad one leaves the Guard as it was.
    guard.swap_model(_fit(II["cosine"](), user_items))
    assert isinstance(guard.model_, gr.ItemItemModel)
    with pytest.raises(gr.UnsupportedModelError):
        guard.swap_model(object())
    assert isinstance(guard.model_, gr.ItemItemModel)


def test_serving_guard_returns_implicit_dtype_on_the_fallback_path_too():
    rng = np.random.default_rng(0)
    model = gr.FactorModel(rng.normal(size=(8, 3)), rng.normal(size=(20, 3)))
    guard = gr.Guard(model)
    assert guard.ids_dtype is np.int32
    serving = gr.ServingGuard(guard, on_failure="fallback", fallback_items=np.arange(20))
    with pytest.warns(gr.FailClosedWarning):  # no snapshot held: the vetted list is served
        r = serving.recommend_detailed(np.arange(8), None, N=5, filter_already_liked_items=False)
    assert r.info["fallback"] is True
    assert r.ids.dtype == np.int32 and r.ids.shape == (8, 5)
    with pytest.warns(gr.FailClosedWarning):
        ids, _ = serving.recommend(3, None, N=5, filter_already_liked_items=False)
    assert ids.dtype == np.int32


def test_one_policy_object_shared_by_guards_on_different_models():
    """Compiled candidate spaces hold a model's factors: Guards on two models sharing one
    Policy object (same catalogue size and snapshot) each serve their own model."""
    rng = np.random.default_rng(1)
    a, b = (gr.FactorModel(rng.normal(size=(30, 4)), rng.normal(size=(60, 4))) for _ in range(2))
    shared = gr.Policy([gr.filters.BlockItems([0, 5])])
    users = np.arange(30)
    got_a = gr.Guard(a, shared).recommend(users, None, N=6, filter_already_liked_items=False)
    got_b = gr.Guard(b, shared).recommend(users, None, N=6, filter_already_liked_items=False)
    own_b = gr.Guard(b, [gr.filters.BlockItems([0, 5])]).recommend(
        users, None, N=6, filter_already_liked_items=False
    )
    np.testing.assert_array_equal(got_b[0], own_b[0])
    np.testing.assert_array_equal(got_b[1], own_b[1])
    assert not np.array_equal(got_a[0], got_b[0])
