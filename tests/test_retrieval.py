"""Guarded ANN retrieval: the contract on pools, widening and the exact fallback.

Small pools, few probed lists and low ``max_pool`` make the index miss on purpose, so
that every path runs: a full pool, a widened pool, and the exact fallback. Whatever the
index returns, the Guard must never return a suppressed id, must fill every slate when
enough eligible items exist, and must return for a batch exactly what it returns for
each viewer alone. Only the ranking may be approximate.
"""

from __future__ import annotations

import pickle
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("faiss")

from test_guard_contract import _eligible, scenarios  # noqa: E402
from worlds import KERNEL_BACKENDS  # noqa: E402

import guardrails as gr  # noqa: E402
import guardrails.core._exact as exact  # noqa: E402
from guardrails.core.kernel import FactorSpace, guarded_topk, pool_topk  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _retrieval(data, n_items):
    pool = data.draw(st.integers(1, 8))
    return gr.ANNRetrieval(
        kind=data.draw(st.sampled_from(["ivf", "ivfpq", "hnsw"])),
        pool=pool,
        head=data.draw(st.sampled_from([None, 0, 1, 5, n_items])),
        max_pool=data.draw(st.integers(pool, pool * 8)),
        widen=data.draw(st.integers(2, 4)),
        nprobe=1,
        M=4,
        ef_search=data.draw(st.sampled_from([1, 16])),
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(s=scenarios(kind="factors"), data=st.data())
def test_ann_recommend_contract(s, data, backend):
    """The contract on every path: the compiled pool step, rescoring and merge, or (with
    the compiled module hidden) their numpy fallbacks."""
    with mock.patch.object(exact, "_tile", exact._tile if backend == "compiled" else None):
        _check_ann_contract(s, data)


def _check_ann_contract(s, data):
    retrieval = _retrieval(data, s["n_items"])
    guard = gr.Guard(s["model"], s["filters"], retrieval=retrieval)
    m = data.draw(st.integers(1, s["n_users"]))
    userids = s["rng"].choice(s["n_users"], size=m, replace=False)
    N = data.draw(st.integers(1, s["n_items"] + 3))
    filter_liked = data.draw(st.booleans())
    filter_items = None
    if data.draw(st.booleans()):
        filter_items = s["rng"].choice(
            s["n_items"], size=s["rng"].integers(1, s["n_items"] + 1), replace=False
        )
    rows = s["user_items"][userids]
    call = dict(N=N, filter_already_liked_items=filter_liked, filter_items=filter_items)
    ids, scores = guard.recommend(userids, rows, **call)
    ok = _eligible(s, userids, filter_liked, filter_items, None)
    n_cols = min(N, s["n_items"])
    assert ids.shape == scores.shape == (m, n_cols)
    for r in range(m):
        k = min(n_cols, int(ok[r].sum()))
        valid = ids[r] >= 0
        assert valid[:k].all() and not valid[k:].any()  # full when k eligible exist
        assert ok[r, ids[r, :k]].all()  # never a suppressed id
        assert len(set(ids[r, :k].tolist())) == k
        assert np.isfinite(scores[r, :k]).all() and np.isneginf(scores[r, k:]).all()
        assert np.all(np.diff(scores[r, :k].astype(np.float64)) <= 0)
    # batch equals single: pools, widening and fallback are decided per viewer
    for r, u in enumerate(userids):
        i1, s1 = guard.recommend(int(u), rows[r], **call)
        k = int((ids[r] >= 0).sum())
        np.testing.assert_array_equal(i1, ids[r, :k])
        np.testing.assert_array_equal(s1, scores[r, :k])


@st.composite
def pools(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m, n, d = draw(st.integers(1, 8)), draw(st.integers(1, 150)), draw(st.integers(1, 5))
    Q = (rng.standard_normal((m, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))).astype(np.float32)
    V = (
        rng.integers(-2, 3, (n, d)).astype(np.float32)
        if draw(st.booleans())
        else (rng.standard_normal((n, d)).astype(np.float32))
    )
    hard = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.9]))
    pen = (rng.random(n) * 3).astype(np.float32) if draw(st.booleans()) else None
    vm = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.3])), format="csr", random_state=rng)
    vp = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.3])), format="csr", random_state=rng)
    call = (
        rng.choice(n, size=rng.integers(0, n + 1), replace=False) if draw(st.booleans()) else None
    )
    return dict(Q=Q, V=V, hard=hard, pen=pen, vm=vm, vp=vp, call=call, m=m, n=n)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(p=pools(), N=st.integers(1, 20), junk=st.booleans(), scored=st.booleans())
def test_pool_covering_everything_gives_the_exact_slate(p, N, junk, scored, backend):
    """A pool holding every item returns the exact path's ids and scores bit for bit
    (the exact path's numpy step against either pool step)."""
    rng = np.random.default_rng(p["n"])
    space = FactorSpace.build(p["V"], hard_mask=p["hard"], penalty=p["pen"], block_width=4)
    kw = dict(call_mask=p["call"], viewer_masks=[p["vm"]], viewer_penalties=[p["vp"]])
    want_ids, want_scores = guarded_topk(space, p["Q"], N, backend="numpy", **kw)
    kw["backend"] = backend
    pool = np.stack([rng.permutation(p["n"]) for _ in range(p["m"])])
    if junk:  # padding and repeats, as an index may return
        pool = np.concatenate([pool, np.full((p["m"], 3), -1), pool[:, :2]], axis=1)
    dots = None
    if scored:
        # float32 inner products in another summation order than the kernel's
        V = p["V"][np.clip(pool, 0, None)]
        dots = np.einsum("mpk,mk->mp", V[:, :, ::-1], p["Q"][:, ::-1]).astype(np.float32)
    ids, scores = pool_topk(space, p["Q"], pool, N, pool_scores=dots, **kw)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    if not junk and scored:
        # rows without repeats, pruned as dense arrays (what ANNRetrieval passes)
        ids, scores = pool_topk(space, p["Q"], pool, N, pool_scores=dots, unique=True, **kw)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(p=pools(), N=st.integers(1, 20), P=st.integers(1, 40), pad=st.booleans())
def test_dense_pool_pruning_matches_the_general_one(p, N, P, pad, backend):
    """Partial pools without repeats (and -1 padding): both prunings (the dense one in
    numpy or compiled), the same slates."""
    rng = np.random.default_rng(p["n"] + P)
    space = FactorSpace.build(p["V"], hard_mask=p["hard"], penalty=p["pen"], block_width=4)
    kw = dict(call_mask=p["call"], viewer_masks=[p["vm"]], viewer_penalties=[p["vp"]])
    P = min(P, p["n"])
    pool = np.stack([rng.permutation(p["n"])[:P] for _ in range(p["m"])])
    if pad:
        pool[:, P // 2 :] = -1
    dots = np.einsum("mpk,mk->mp", p["V"][np.clip(pool, 0, None)], p["Q"]).astype(np.float32)
    general = pool_topk(space, p["Q"], pool, N, pool_scores=dots, backend="numpy", **kw)
    dense = pool_topk(space, p["Q"], pool, N, pool_scores=dots, unique=True, backend=backend, **kw)
    np.testing.assert_array_equal(dense[0], general[0])
    np.testing.assert_array_equal(dense[1], general[1])
    for r in range(p["m"]):
        got = dense[0][r][dense[0][r] >= 0]
        assert np.isin(got, pool[r]).all() and not p["hard"][got].any()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pool_rows_split_over_threads_give_the_one_piece_slates(threads):
    """Enough rows for the compiled pool step to split them over workers: the same
    slates as one piece and as the numpy step, and each row's as when it is alone."""
    rng = np.random.default_rng(5)
    m, n, d, P = 900, 3000, 16, 60
    Q = rng.standard_normal((m, d)).astype(np.float32)
    V = (rng.standard_normal((n, d)) * (rng.pareto(2.0, n) + 0.1)[:, None]).astype(np.float32)
    space = FactorSpace.build(
        V, hard_mask=rng.random(n) < 0.05, penalty=(rng.random(n) * 0.5).astype(np.float32)
    )
    vm = sp.random(m, n, density=0.01, format="csr", random_state=rng)
    vp = sp.random(m, n, density=0.01, format="csr", random_state=rng)
    call_mask = rng.choice(n, 50, replace=False)
    pool = np.stack([rng.choice(n, P, replace=False) for _ in range(m)])
    dots = np.einsum("mpk,mk->mp", V[pool], Q).astype(np.float32)
    kw = dict(call_mask=call_mask, viewer_masks=[vm], viewer_penalties=[vp], unique=True)
    ref = pool_topk(space, Q, pool, 10, pool_scores=dots, backend="numpy", **kw)
    got = pool_topk(space, Q, pool, 10, pool_scores=dots, num_threads=threads, **kw)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert (got[0] >= 0).all()
    for r in (0, 449, 899):
        one = pool_topk(
            space,
            Q[r : r + 1],
            pool[r : r + 1],
            10,
            pool_scores=dots[r : r + 1],
            call_mask=call_mask,
            viewer_masks=[vm[r]],
            viewer_penalties=[vp[r]],
            unique=True,
        )
        np.testing.assert_array_equal(one[0][0], got[0][r])
        np.testing.assert_array_equal(one[1][0], got[1][r])


def _small(seed=0, n_users=30, n_items=400, d=8):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_users, d)).astype(np.float32)
    V = rng.standard_normal((n_items, d)).astype(np.float32)
    return gr.FactorModel(U, V), rng


def test_swaps_reuse_the_index():
    model, rng = _small()
    retrieval = gr.ANNRetrieval(pool=20)
    guard = gr.Guard(model, [gr.filters.BlockItems([1, 2, 3], reason="x")], retrieval=retrieval)
    index = retrieval.index_
    guard.swap_policy(gr.Policy([gr.filters.BlockItems(np.arange(100), reason="y")]))
    assert retrieval.index_ is index
    ids, _ = guard.recommend(np.arange(30), None, N=10, filter_already_liked_items=False)
    assert not np.isin(ids, np.arange(100)).any() and (ids >= 0).all()


def test_widening_and_fallback_fill_slates_when_most_items_are_blocked():
    model, rng = _small(n_items=400)
    blocked = np.arange(395)  # five eligible items left
    retrieval = gr.ANNRetrieval(pool=2, max_pool=4, nprobe=1)
    guard = gr.Guard(model, [gr.filters.BlockItems(blocked, reason="x")], retrieval=retrieval)
    ids, _ = guard.recommend(np.arange(30), None, N=10, filter_already_liked_items=False)
    assert ids.shape == (30, 10)
    assert (np.sort(ids[:, :5], axis=1) == np.arange(395, 400)).all()
    assert (ids[:, 5:] == -1).all()
    assert retrieval.last_fallbacks_ == 30  # five eligible items never fill a slate of 10


def test_widening_alone_fills_slates():
    model, rng = _small(n_items=400)
    # each viewer has already liked their own top 20: the first pool holds nothing new
    top = np.argsort(-(model.user_factors @ model.item_factors.T), axis=1)[:, :20]
    liked = sp.csr_matrix(
        (np.ones(top.size, np.float32), (np.repeat(np.arange(30), 20), top.ravel())),
        shape=(30, 400),
    )
    retrieval = gr.ANNRetrieval(kind="ivf", pool=2, max_pool=400, nprobe=1_000)
    guard = gr.Guard(model, retrieval=retrieval)
    ids, _ = guard.recommend(np.arange(30), liked, N=10)
    assert (ids >= 0).all() and not (liked[np.arange(30)[:, None], ids].toarray()).any()
    assert retrieval.last_widened_ == 30 and retrieval.last_fallbacks_ == 0
    # every list probed: the widened pools hold the exact top 10
    np.testing.assert_array_equal(ids, gr.Guard(model).recommend(np.arange(30), liked, N=10)[0])


def test_pickled_guard_keeps_its_index():
    model, _ = _small()
    guard = gr.Guard(model, retrieval=gr.ANNRetrieval(kind="hnsw", pool=16))
    again = pickle.loads(pickle.dumps(guard))
    a = guard.recommend(np.arange(30), None, N=5, filter_already_liked_items=False)
    b = again.recommend(np.arange(30), None, N=5, filter_already_liked_items=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_save_and_load(tmp_path):
    model, _ = _small()
    built = gr.ANNRetrieval(pool=16).build(model.item_factors)
    built.save(tmp_path / "items.faiss")
    loaded = gr.ANNRetrieval(pool=16).load(tmp_path / "items.faiss")
    assert (loaded.n_items_, loaded.n_factors_) == (400, 8)
    assert loaded.memory_bytes() > 0
    gr.Guard(model, retrieval=loaded)


def test_refuses_a_mismatched_index_and_item_item_models():
    model, _ = _small()
    other = gr.ANNRetrieval().build(np.ones((10, 8), np.float32))
    with pytest.raises(gr.ValidationError, match="retrieval"):
        gr.Guard(model, retrieval=other)
    with pytest.raises(gr.ValidationError, match="retrieval"):
        gr.Guard(gr.ItemItemModel(sp.identity(5, format="csr")), retrieval=gr.ANNRetrieval())
    with pytest.raises(gr.ValidationError, match="retrieval"):
        gr.Guard(model, retrieval="faiss")
    with pytest.raises(gr.ValidationError, match="kind"):
        gr.ANNRetrieval(kind="lsh")
    with pytest.raises(gr.ValidationError, match="max_pool"):
        gr.ANNRetrieval(pool=10, max_pool=5)


def test_a_swapped_model_of_another_shape_takes_the_exact_path_until_rebuilt():
    model, _ = _small(n_items=400)
    retrieval = gr.ANNRetrieval(pool=16)
    guard = gr.Guard(model, [gr.filters.BlockItems([0, 1], reason="x")], retrieval=retrieval)
    bigger, _ = _small(seed=1, n_items=500)
    guard.swap_model(bigger)
    ids, _ = guard.recommend(np.arange(30), None, N=10, filter_already_liked_items=False)
    exact = gr.Guard(bigger, [gr.filters.BlockItems([0, 1], reason="x")])
    want = exact.recommend(np.arange(30), None, N=10, filter_already_liked_items=False)[0]
    np.testing.assert_array_equal(ids, want)
    retrieval.build(bigger.item_factors)  # rebuilt: pools again, same contract
    ids, _ = guard.recommend(np.arange(30), None, N=10, filter_already_liked_items=False)
    assert (ids >= 0).all() and not np.isin(ids, [0, 1]).any()


def _policy_case(rng, n_users, n_items, d, ties=False):
    if ties:
        U = rng.integers(-2, 3, (n_users, d)).astype(np.float32)
        V = rng.integers(-2, 3, (n_items, d)).astype(np.float32)
    else:
        U = rng.standard_normal((n_users, d)).astype(np.float32)
        V = (rng.standard_normal((n_items, d)) * (rng.pareto(2.0, n_items) + 0.2)[:, None]).astype(
            np.float32
        )
    risk = rng.random(n_items).astype(np.float32)
    blocked = rng.choice(n_items, size=n_items // 10, replace=False)
    pairs = sp.random(n_users, n_items, density=0.05, format="csr", random_state=rng)
    policy = [
        gr.filters.BlockItems(blocked, reason="x"),
        gr.filters.ExcludePairs(pairs, reason="y"),
        gr.filters.SuppressRisk(risk, threshold=0.8),
        gr.filters.DemoteRisk(risk, weight=2.0),
    ]
    ok = np.ones((n_users, n_items), dtype=bool)
    ok[:, blocked] = False
    ok[:, risk >= 0.8] = False
    ok &= pairs.toarray() == 0
    return gr.FactorModel(U, V), policy, ok


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    head=st.sampled_from([None, 0, 40]),
    pool=st.integers(1, 30),
    N=st.integers(1, 25),
    nprobe=st.sampled_from([1, 4]),
)
def test_quantised_lists_keep_the_contract(seed, head, pool, N, nprobe):
    """4-bit fast-scan codes (a tail of >= 1000 items), exact rescoring, the same contract."""
    rng = np.random.default_rng(seed)
    model, policy, ok = _policy_case(rng, 20, 1300, 6)
    retrieval = gr.ANNRetrieval(
        kind="ivfpq", pool=pool, max_pool=pool * 4, head=head, nprobe=nprobe, seed=seed % 7
    )
    guard = gr.Guard(model, policy, retrieval=retrieval)
    assert retrieval.index_ is not None and "FastScan" in type(retrieval.index_).__name__
    users = np.arange(20)
    ids, scores = guard.recommend(users, None, N=N, filter_already_liked_items=False)
    for r in users:
        k = min(N, int(ok[r].sum()))
        assert (ids[r, :k] >= 0).all() and (ids[r, k:] == -1).all()
        assert ok[r, ids[r, :k]].all()  # never a suppressed id
        assert len(set(ids[r, :k].tolist())) == k
        assert np.all(np.diff(scores[r, :k].astype(np.float64)) <= 0)
        one_ids, one_scores = guard.recommend(int(r), None, N=N, filter_already_liked_items=False)
        np.testing.assert_array_equal(one_ids, ids[r, :k])
        np.testing.assert_array_equal(one_scores, scores[r, :k])


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
@pytest.mark.parametrize("head", [0, 7, 1300])
@pytest.mark.parametrize("ties", [False, True])
def test_every_list_and_a_whole_pool_give_the_exact_slates(kind, head, ties):
    # The head scored exactly and merged by score then id (the kernel's tie-break), the
    # tail's pool holding every tail item: the exact Guard's slates, bit for bit.
    rng = np.random.default_rng(5)
    model, policy, _ = _policy_case(rng, 25, 1300, 6, ties=ties)
    retrieval = gr.ANNRetrieval(
        kind=kind, pool=1300, max_pool=1300, head=head, nprobe=10_000, ef_search=2000
    )
    guard = gr.Guard(model, policy, retrieval=retrieval)
    exact = gr.Guard(model, policy)
    users = np.arange(25)
    call = dict(N=12, filter_already_liked_items=False)
    ids, scores = guard.recommend(users, None, **call)
    want_ids, want_scores = exact.recommend(users, None, **call)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert retrieval.head_ids_.size == head and retrieval.last_fallbacks_ == 0


def test_save_and_load_keep_the_head_and_read_a_bare_faiss_index(tmp_path):
    import faiss

    rng = np.random.default_rng(2)
    model, policy, _ = _policy_case(rng, 10, 1300, 6)
    built = gr.ANNRetrieval(head=50).build(model.item_factors)
    built.save(tmp_path / "items.npz")
    loaded = gr.ANNRetrieval().load(tmp_path / "items.npz")
    assert loaded.kind == built.kind == "ivfpq"
    np.testing.assert_array_equal(loaded.head_ids_, built.head_ids_)
    np.testing.assert_array_equal(loaded.tail_ids_, built.tail_ids_)
    # the head holds the largest norms
    norms = np.linalg.norm(model.item_factors, axis=1)
    assert norms[built.head_ids_].min() >= norms[built.tail_ids_].max()
    a = gr.Guard(model, policy, retrieval=built).recommend(
        np.arange(10), None, N=5, filter_already_liked_items=False
    )
    b = gr.Guard(model, policy, retrieval=loaded).recommend(
        np.arange(10), None, N=5, filter_already_liked_items=False
    )
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # a bare index over every item (the format before the head), e.g. written by faiss
    bare = gr.ANNRetrieval(kind="ivf", head=0).build(model.item_factors)
    faiss.write_index(bare.index_, str(tmp_path / "bare.faiss"))
    old = gr.ANNRetrieval().load(tmp_path / "bare.faiss")
    assert old.kind == "ivf" and old.head_ids_.size == 0 and old.tail_ids_.size == 1300
    gr.Guard(model, policy, retrieval=old).recommend(
        np.arange(10), None, N=5, filter_already_liked_items=False
    )
    (tmp_path / "junk.npz").write_bytes(b"PK not an archive")
    with pytest.raises(Exception):  # noqa: B017 - numpy's own error for a broken zip
        gr.ANNRetrieval().load(tmp_path / "junk.npz")


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(0, 12),
    k=st.integers(1, 30),
    n=st.integers(1, 60),
    d=st.integers(1, 33),
)
def test_pool_rescoring_is_the_float32_inner_product(seed, m, k, n, d):
    """The 4-bit path's exact rescoring of a pool: each cell within float32 rounding of
    the float64 inner product, ``-inf`` for a missing label, and an out-of-range label
    refused (it would read outside the factors)."""
    from guardrails.retrieval import _inner_products_by_id

    rng = np.random.default_rng(seed)
    items = (rng.standard_normal((n, d)) * rng.uniform(0.1, 10.0, (n, 1))).astype(np.float32)
    raw = rng.standard_normal((m, d)).astype(np.float32)
    ids = rng.integers(-1, n, size=(m, k)).astype(np.int64)
    got = _inner_products_by_id(raw, items, ids)
    assert got.shape == (m, k) and got.dtype == np.float32
    want = np.einsum(
        "mkd,md->mk", items[np.maximum(ids, 0)].astype(np.float64), raw.astype(np.float64)
    )
    tol = (
        (d + 2)
        * np.finfo(np.float32).eps
        * np.outer(np.linalg.norm(raw.astype(np.float64), axis=1), np.ones(k))
        * np.linalg.norm(items.astype(np.float64), axis=1)[np.maximum(ids, 0)]
    )
    real = ids >= 0
    assert np.all(np.abs(got[real] - want[real]) <= tol[real] + 1e-30)
    assert np.isneginf(got[~real]).all()
    if m:
        bad = ids.copy()
        bad[0, 0] = n
        with pytest.raises(gr.ValidationError):
            _inner_products_by_id(raw, items, bad)


def test_default_head_and_lists_searched():
    """Defaults: the 2 sqrt(n) items of largest norm scored exactly, 8 lists searched
    (never more than the index has)."""
    rng = np.random.default_rng(3)
    V = (rng.standard_normal((1300, 6)) * rng.uniform(0.5, 3.0, (1300, 1))).astype(np.float32)
    r = gr.ANNRetrieval(kind="ivfpq").build(V)
    assert r.head_ids_.size == int(2 * np.sqrt(1300))
    norms = np.linalg.norm(V.astype(np.float64), axis=1)
    assert norms[r.head_ids_].min() >= norms[r.tail_ids_].max()
    assert r.index_.nprobe == min(8, r.index_.nlist)
    small = gr.ANNRetrieval(kind="ivf", nlist=3).build(V[:400])
    assert small.index_.nprobe == 3


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 12),
    n=st.integers(1, 300),
    density=st.sampled_from([0.0, 0.01, 0.2, 1.0]),
    bits=st.sampled_from([None, 1, 2, 6]),
    shuffle=st.booleans(),
    zeros=st.booleans(),
)
def test_pool_viewer_masks_match_a_pair_lookup(seed, m, n, density, bits, shuffle, zeros):
    """The pool's per-viewer mask test (hashed table, exact check) equals the kernel's
    sorted pair lookup on every cell, for tables small enough that most cells collide,
    masks whose rows hold unsorted columns or stored zeros, and repeated cells."""
    from guardrails.core import _pool
    from guardrails.core._exact import PairLookup, chunk_cells

    rng = np.random.default_rng(seed)
    vm = sp.random(m, n, density=density, format="csr", random_state=rng)
    if zeros and vm.nnz:
        vm.data[rng.random(vm.nnz) < 0.5] = 0.0  # a stored entry masks, whatever its value
    if shuffle and vm.nnz:
        for r in range(m):  # columns out of order within each row
            lo, hi = vm.indptr[r], vm.indptr[r + 1]
            perm = rng.permutation(hi - lo)
            vm.indices[lo:hi], vm.data[lo:hi] = vm.indices[lo:hi][perm], vm.data[lo:hi][perm]
        vm.has_sorted_indices = False
    k = int(rng.integers(0, 4 * n + 1))
    rows = rng.integers(0, m, k).astype(np.int64)
    g = rng.integers(0, n, k).astype(np.int64)
    pos = np.arange(n, dtype=np.int64)
    rr, cc, _ = chunk_cells(vm, 0, m, pos)
    want = PairLookup(rr, cc, np.ones(rr.size), n).get(rows, g) > 0
    got = _pool._viewer_masked([vm, None, sp.csr_matrix((m, n))], m, rows, g)
    np.testing.assert_array_equal(got, want)
    if bits is not None and vm.nnz:
        keys = _pool._row_keys(vm, m, n)
        np.testing.assert_array_equal(_pool._in_sorted(keys, rows * n + g, bits), want)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 6),
    Na=st.integers(1, 8),
    Nb=st.integers(1, 8),
    N=st.integers(1, 8),
)
def test_compiled_slate_merge_gives_the_numpy_merge(seed, m, Na, Nb, N):
    """Head and pool slates (disjoint items, ties, padding) merge the same either way."""
    from guardrails import retrieval
    from guardrails.core._exact import compiled_step

    if compiled_step() is None:
        pytest.skip("the compiled step was not built")
    rng = np.random.default_rng(seed)
    items = np.stack([rng.permutation(40)[: Na + Nb] for _ in range(m)])
    scores = rng.integers(-3, 3, (m, Na + Nb)).astype(np.float64)  # many ties
    pad = rng.random((m, Na + Nb)) < 0.3
    items[pad], scores[pad] = -1, -np.inf
    args = (items[:, :Na], scores[:, :Na], items[:, Na:], scores[:, Na:])
    N = min(N, Na + Nb)
    got = retrieval._merge(*args, N)
    want = retrieval._merge_numpy(*args, N)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), N=st.integers(1, 12), m=st.integers(1, 8))
def test_stripped_viewers_are_ranked_by_the_backfill_behind_an_index(seed, N, m):
    """Behind an ANN index, a new viewer whose every follow a policy left out of its
    query is ranked by the Guard's backfill, exactly as the exact Guard ranks it; no
    suppressed id; batch equals single."""
    model, rng = _small(seed, n_items=300)
    risk = rng.uniform(0.0, 0.05, 300)
    risky = rng.choice(300, 20, replace=False)
    risk[risky] = 0.9
    pool = rng.uniform(size=300) < 0.5
    ctx = gr.filters.ContextRisk(risk, threshold=0.3, pool=pool, new_viewer_interactions=5)
    fill = rng.integers(0, 6, 300).astype(np.float64)
    ann = gr.Guard(model, [ctx], retrieval=gr.ANNRetrieval(pool=4, nprobe=1), backfill=fill)
    exact_guard = gr.Guard(model, [ctx], backfill=fill)
    follows = [rng.choice(risky, int(rng.integers(1, 3)), replace=False) for _ in range(m)]
    rows = sp.csr_matrix(
        (
            np.ones(sum(f.size for f in follows), np.float32),
            np.concatenate(follows),
            np.r_[0, np.cumsum([f.size for f in follows])],
        ),
        shape=(m, 300),
    )
    users = np.arange(m)
    ids, scores = ann.recommend(users, rows, N=N, recalculate_user=True)
    want, want_scores = exact_guard.recommend(users, rows, N=N, recalculate_user=True)
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(scores, want_scores)
    eligible = np.flatnonzero(pool & (risk < 0.3))
    best = eligible[np.lexsort((eligible, -fill[eligible]))][:N]
    for r in range(m):
        np.testing.assert_array_equal(ids[r][ids[r] >= 0], best)
        one, _ = ann.recommend(r, rows[r], N=N, recalculate_user=True)
        np.testing.assert_array_equal(one, best)
