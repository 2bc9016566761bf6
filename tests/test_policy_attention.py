"""default_policy's attention-to-minors context: accounts whose audience is made of adults
following unrelated minors are risky contexts, with no seed and no flagged term."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.filters import Catalog
from guardrails.policy import default_policy
from guardrails.policy._attention import attention_marks, untied_minor_follows
from guardrails.testing import check_guard_respects, random_viewers

N_MINORS, COACH = 20, 20
SELLERS = np.arange(21, 26)
BUYERS = np.arange(26, 46)
N = 240


def _world(seed: int):
    """Minors 0-19 follow each other and a coach (20); ordinary accounts 46-239 follow
    each other, a few follow one minor (relatives); buyers 26-45 follow 2-4 minors with no
    tie, 2-3 sellers (21-25) and some ordinary accounts. Sellers and buyers sit together
    in the model's factor space."""
    rng = np.random.default_rng(seed)
    edges = []
    for m in range(N_MINORS):
        edges += [(m, int(x)) for x in rng.choice(N_MINORS, 4, replace=False) if x != m]
        edges.append((m, COACH))
    ordinary = np.arange(46, N)
    for a in ordinary:
        edges += [(int(a), int(x)) for x in rng.choice(ordinary, 6, replace=False) if x != a]
        if rng.random() < 0.05:
            edges.append((int(a), int(rng.integers(0, N_MINORS))))
    for b in BUYERS:
        edges += [(int(b), int(x)) for x in rng.choice(N_MINORS, rng.integers(2, 5), replace=False)]
        edges += [(int(b), int(x)) for x in rng.choice(SELLERS, rng.integers(2, 4), replace=False)]
        edges += [(int(b), int(x)) for x in rng.choice(ordinary, 5, replace=False)]
    for s in SELLERS:
        edges += [(int(s), int(x)) for x in rng.choice(ordinary, 5, replace=False)]
    r, c = np.array(edges).T
    g = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(N, N))
    g.data[:] = 1.0
    minors = np.zeros(N, bool)
    minors[:N_MINORS] = True
    V = rng.normal(size=(N, 8))
    centre = rng.normal(size=8) * 3
    V[21:46] = centre + 0.1 * rng.normal(size=(25, 8))
    model = gr.FactorModel(rng.normal(size=(N, 8)), V)
    return g, minors, model, V.astype(np.float32)


def _policy(g, minors, V, **kw):
    return default_policy(
        seeds=[N - 1],
        graph=g,
        interactions=g,
        minors=minors,
        minor_viewers=minors,
        item_factors=V,
        **kw,
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(5, 40),
    density=st.floats(0.02, 0.3),
    through_minors=st.sampled_from([True, False, "anchored"]),
)
def test_untied_follows_are_the_definition(seed, n, density, through_minors):
    rng = np.random.default_rng(seed)
    g = (sp.random(n, n, density=density, format="csr", random_state=seed % 10_000) > 0).astype(
        np.float32
    )
    minors = rng.random(n) < 0.3
    got = untied_minor_follows(g, minors, hub_quantile=0.9, through_minors=through_minors)
    dense = g.toarray() > 0
    followers = dense.sum(axis=0)
    nonhub = followers <= np.quantile(followers, 0.9)
    outside = nonhub & ~minors
    for a in range(n):
        ties = nonhub if through_minors is True else outside.copy()
        if through_minors == "anchored":
            # A (non-hub) minor that a follows and shares an outside contact with ties.
            for m in np.flatnonzero(minors & dense[a] & nonhub):
                ties[m] = (dense[a] & dense[m] & outside).any()
        want = 0
        if not minors[a]:
            for m in np.flatnonzero(minors & dense[a]):
                if not (dense[a] & dense[m] & ties).any():
                    want += 1
        assert got[a] == want, a


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 30), hub_quantile=st.floats(0.0, 1.0))
def test_a_follow_stored_twice_counts_once(seed, n, hub_quantile):
    """A CSR graph with duplicate cells (the same follow stored twice) is read as the tie
    rule reads its graph: each follow once, in the follows and in the follower counts."""
    rng = np.random.default_rng(seed)
    g = (sp.random(n, n, density=0.2, format="csr", random_state=seed % 10_000) > 0).astype(
        np.float32
    )
    coo = g.tocoo()
    k = min(4, coo.nnz)
    rows, cols = np.r_[coo.row, coo.row[:k]], np.r_[coo.col, coo.col[:k]]
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    doubled = sp.csr_matrix((np.ones(rows.size, np.float32), cols[order], indptr), shape=(n, n))
    assert doubled.nnz == g.nnz + k
    minors = rng.random(n) < 0.3
    got = untied_minor_follows(doubled, minors, hub_quantile=hub_quantile, min_shared=1)
    want = untied_minor_follows(g, minors, hub_quantile=hub_quantile, min_shared=1)
    assert np.array_equal(got, want)


def test_sellers_followed_by_attentive_adults_are_marked_and_nobody_else():
    g, minors, _, _ = _world(0)
    marks = attention_marks(
        g, minors, hub_quantile=0.99, min_untied=2, lift=4.0, minor_share=0.1
    )
    assert marks[SELLERS].all()
    assert not marks[minors].any()
    assert not marks[COACH]  # minors follow the coach: their community, not an audience
    assert marks[46:].mean() < 0.02
    # One untied follow per adult (relatives, noise) is not attention.
    assert not attention_marks(
        g, minors, hub_quantile=0.99, min_untied=5, lift=4.0, minor_share=0.1
    ).any()
    # Exempt viewers (known minors in one id space) never count as attentive.
    assert not attention_marks(
        g,
        minors,
        exempt=np.isin(np.arange(N), BUYERS),
        hub_quantile=0.99,
        min_untied=2,
        lift=4.0,
        minor_share=0.1,
    )[SELLERS].any()


def test_the_profile_of_a_marked_account_suggests_only_the_pool():
    g, minors, model, V = _world(1)
    pol = _policy(g, minors, V)
    off = _policy(g, minors, V, minor_attention=False)
    ctx = pol["context_risk"]
    assert (ctx.risk[SELLERS] >= ctx.threshold).all()
    assert not ctx.pool[SELLERS].any()
    new = N + 3
    ids, _ = gr.Guard(model, pol).similar_items(int(SELLERS[0]), N=10, viewer=new)
    ids = ids[ids >= 0]
    assert ids.size == 10 and ctx.pool[ids].all()
    assert not np.isin(ids, SELLERS).any()
    # Without the rule the profile suggests the other sellers (the test can fail).
    ids, _ = gr.Guard(model, off).similar_items(int(SELLERS[0]), N=10, viewer=new)
    assert np.isin(ids, SELLERS).any()


def test_an_adult_following_a_minor_and_a_marked_account_gets_no_minors():
    g, minors, model, V = _world(2)
    pol = _policy(g, minors, V)
    off = _policy(g, minors, V, minor_attention=False)
    ordinary = np.arange(46, N)
    # An ordinary adult who follows one minor (a relative) and one seller.
    viewer = next(
        int(a)
        for a in ordinary
        if minors[g[a].indices].any() and not np.isin(g[a].indices, SELLERS).any()
    )
    follows = g.tolil()
    follows[viewer, int(SELLERS[0])] = 1.0
    follows = sp.csr_matrix(follows)
    pol = _policy(follows, minors, V)
    off = _policy(follows, minors, V, minor_attention=False)
    band = off["context_risk"].risk >= pol["protect_minors"].item_threshold_
    assert not band[SELLERS[0]]  # no other rule sees the seller
    row = follows[viewer]
    got, _ = gr.Guard(model, pol).recommend(viewer, row, N=N, filter_already_liked_items=False)
    assert not minors[got[got >= 0]].any()
    ref, _ = gr.Guard(model, off).recommend(viewer, row, N=N, filter_already_liked_items=False)
    assert minors[ref[ref >= 0]].any()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 3),
    n_new=st.integers(1, 5),
    N_=st.integers(1, 30),
)
def test_new_accounts_following_marked_accounts_get_the_pool_batch_equals_single(
    seed, k, n_new, N_
):
    g, minors, model, V = _world(seed % 50)
    pol = _policy(g, minors, V)
    ctx = pol["context_risk"]
    rng = np.random.default_rng(seed)
    marked = SELLERS[ctx.risk[SELLERS] >= ctx.threshold]
    assert marked.size >= 3
    rows = []
    for _ in range(n_new):
        f = rng.choice(marked, size=k, replace=False)
        rows.append(np.isin(np.arange(N), f).astype(np.float32))
    ui = sp.csr_matrix(np.array(rows))
    users = N + 10 + np.arange(n_new)
    guard = gr.Guard(model, pol)
    ids, _ = guard.recommend(users, ui, N=N_, recalculate_user=True)
    eligible = int((ctx.pool & ~minors).sum())
    for r in range(n_new):
        got = ids[r][ids[r] >= 0]
        assert ctx.pool[got].all()  # nothing outside the pool, no seller, no buyer
        assert got.size == min(N_, eligible)  # full slates when enough are eligible
        one, _ = guard.recommend(int(users[r]), ui[r], N=N_, recalculate_user=True)
        assert np.array_equal(np.atleast_2d(one)[0], ids[r])  # batch == single


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 6))
def test_the_context_filter_with_attention_marks_keeps_the_guard_contract(seed, m):
    g, minors, _, V = _world(seed % 50)
    pol = _policy(g, minors, V)
    check_guard_respects(
        pol["context_risk"], Catalog("items", N), random_viewers(N, 12, m, seed=seed)
    )
    check_guard_respects(
        pol["protect_minors"], Catalog("items", N), random_viewers(N, N, m, seed=seed)
    )


def test_no_minors_or_no_graph_means_no_marks():
    g, minors, _, V = _world(3)
    plain = default_policy(seeds=[N - 1], graph=g, interactions=g, item_factors=V)
    assert plain["context_risk"].risk[SELLERS].max() < plain["context_risk"].threshold
    with pytest.raises(gr.exceptions.ValidationError):
        _policy(g, minors, V, minor_attention="yes")
