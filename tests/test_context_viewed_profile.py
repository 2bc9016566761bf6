"""A risky viewed profile is left out of its own list's query (``strip_context``).

Ranked by similarity to a risky profile, the low-risk pool is led by the accounts closest
to it. With ``strip_context`` the list of a risky profile is the pool ranked for the
model's typical user (factor models) or only the Guard's backfill (item-item models),
while ordinary profiles keep their similarity ranking; every slate keeps the contract (no
suppressed id, full when the pool allows, batch equal to single).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.exceptions import ValidationError

NI, NU, K = 70, 30, 5
THRESHOLD = 0.3


def _world(seed):
    rng = np.random.default_rng(seed)
    model = gr.FactorModel(rng.normal(size=(NU, K)), rng.normal(size=(NI, K)))
    risk = rng.uniform(0.0, 0.05, NI)
    risky = rng.choice(NI, 10, replace=False)
    risk[risky] = rng.uniform(0.4, 1.0, risky.size)
    pool = rng.uniform(size=NI) < 0.6
    return rng, model, risk, risky, pool


def _filter(risk, pool, strip_context=True, exclude_viewed=True):
    return gr.filters.ContextRisk(
        risk,
        threshold=THRESHOLD,
        pool=pool,
        new_viewer_interactions=0,
        exclude_viewed=exclude_viewed,
        strip_context=strip_context,
    )


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_rows=st.integers(1, 8),
    N=st.integers(1, 25),
    exclude_viewed=st.booleans(),
    backfill=st.booleans(),
)
def test_a_risky_profile_lists_the_pool_for_the_typical_user(
    seed, n_rows, N, exclude_viewed, backfill
):
    """A risky profile's list is the pool ranked for the typical user (cosine), or by
    the Guard's backfill then id when it has one; ordinary profiles keep theirs."""
    rng, model, risk, risky, pool = _world(seed)
    f = _filter(risk, pool, exclude_viewed=exclude_viewed)
    fill = rng.integers(0, 4, NI).astype(np.float64) if backfill else None
    g = gr.Guard(model, gr.Policy([f]), backfill=fill)
    plain = gr.Guard(model, gr.Policy([_filter(risk, pool, False, exclude_viewed)]))
    items = rng.choice(NI, n_rows, replace=True)
    items[0] = rng.choice(risky)
    ids, scores = g.similar_items(items, N=N)
    base_ids, _ = plain.similar_items(items, N=N)
    eligible = pool & (risk < THRESHOLD)
    typical = _unit(model.typical_user())
    cos_typical = _unit(model.item_factors) @ typical
    for r, item in enumerate(items):
        got = ids[r][ids[r] >= 0]
        one, one_scores = g.similar_items(int(item), N=N)
        # Batch equals single.
        assert np.array_equal(one, got)
        assert np.array_equal(one_scores, scores[r][: got.size])
        if risk[item] >= THRESHOLD:
            # Only the pool, never the profile itself; full as far as the pool goes.
            assert eligible[got].all() and item not in got
            assert got.size == min(N, int(eligible.sum()))
            cand = np.flatnonzero(eligible)
            if fill is not None:
                # By the backfill, ties to the lower id; its scores are the backfill.
                want = cand[np.lexsort((cand, -fill[cand]))][: got.size]
                assert np.array_equal(got, want)
                assert np.allclose(scores[r][: got.size], fill[got])
                continue
            # Ranked for the typical user, whatever the profile's own neighbours.
            best = cand[np.argsort(-cos_typical[cand], kind="stable")][: got.size]
            assert np.allclose(np.sort(cos_typical[got]), np.sort(cos_typical[best]), atol=1e-5)
            assert np.allclose(scores[r][: got.size], cos_typical[got], atol=1e-5)
        else:
            # An ordinary profile keeps its similarity ranking.
            assert np.array_equal(got, base_ids[r][base_ids[r] >= 0])


def test_the_list_of_a_risky_profile_does_not_follow_its_neighbours():
    """A camouflaged pool account nearest to the risky profile leads the list without
    ``strip_context`` and is not favoured with it."""
    rng, model, risk, risky, pool = _world(11)
    seller = int(risky[0])
    item_factors = model.item_factors.copy()
    # A low-risk pool account right beside the seller in the embedding.
    buyer = int(np.flatnonzero(pool & (risk < THRESHOLD))[0])
    item_factors[buyer] = item_factors[seller] * 1.01
    model = gr.FactorModel(model.user_factors, item_factors)
    before, _ = gr.Guard(model, gr.Policy([_filter(risk, pool, False)])).similar_items(seller, N=5)
    after, _ = gr.Guard(model, gr.Policy([_filter(risk, pool)])).similar_items(seller, N=5)
    assert before[0] == buyer
    cos_typical = _unit(item_factors) @ _unit(model.typical_user())
    eligible = np.flatnonzero(pool & (risk < THRESHOLD))
    want = eligible[np.argsort(-cos_typical[eligible], kind="stable")][:5]
    assert np.array_equal(np.sort(after), np.sort(want))


def _item_model(rng):
    sim = sp.random(NI, NI, density=0.15, format="csr", random_state=rng)
    sim.data[:] = rng.uniform(0.1, 1.0, sim.nnz)
    return gr.ItemItemModel(sim)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), N=st.integers(1, 20), backfill=st.booleans())
def test_an_item_item_model_lists_only_backfill_on_a_risky_profile(seed, N, backfill):
    """An empty item-item query reaches nothing: a risky profile's list is empty, or the
    backfill's best eligible accounts when the Guard has a backfill; ordinary profiles
    are unchanged."""
    rng, _, risk, risky, pool = _world(seed)
    model = _item_model(rng)
    fill = rng.uniform(size=NI) if backfill else None
    g = gr.Guard(model, gr.Policy([_filter(risk, pool)]), backfill=fill)
    plain = gr.Guard(model, gr.Policy([_filter(risk, pool, False)]), backfill=fill)
    items = np.r_[risky[:3], np.setdiff1d(np.arange(NI), risky)[:3]]
    ids, _ = g.similar_items(items, N=N)
    base_ids, _ = plain.similar_items(items, N=N)
    eligible = pool & (risk < THRESHOLD)
    for r, item in enumerate(items):
        got = ids[r][ids[r] >= 0]
        assert np.array_equal(got, g.similar_items(int(item), N=N)[0])
        if risk[item] >= THRESHOLD:
            assert eligible[got].all() and item not in got
            if fill is None:
                assert got.size == 0
            else:
                cand = np.flatnonzero(eligible)
                want = cand[np.lexsort((cand, -fill[cand]))][: min(N, cand.size)]
                assert np.array_equal(got, want)
        else:
            assert np.array_equal(got, base_ids[r][base_ids[r] >= 0])


def test_explanations_name_the_stripped_profile():
    """The decisions of a risky profile's list say its query left the profile out."""
    rng, model, risk, risky, pool = _world(4)
    g = gr.Guard(model, gr.Policy([_filter(risk, pool)]))
    res = g.similar_items_detailed(int(risky[0]), N=5, record=True)
    reasons = {d.reason for d in res.decisions if d.action == "requery"}
    assert "risky_context:profile_stripped" in reasons


def test_strip_context_is_checked():
    _, _, risk, _, pool = _world(0)
    with pytest.raises(ValidationError, match="strip_context"):
        gr.filters.ContextRisk(risk, threshold=0.3, pool=pool, strip_context="yes")


def test_the_default_policy_strips_a_risky_profile():
    """``default_policy`` strips a risky profile from its list's query unless
    ``strip_context=False``; the keyword is checked."""
    _, _, risk, _, _ = _world(2)
    for on in (True, False):
        policy = gr.default_policy(risk=risk, strip_context=on)
        (ctx,) = [f for f in policy.filters if isinstance(f, gr.filters.ContextRisk)]
        assert ctx.strip_context_ is on
    with pytest.raises(ValidationError, match="strip_context"):
        gr.default_policy(risk=risk, strip_context="yes")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_rows=st.integers(1, 6), N=st.integers(1, 20))
def test_a_risky_queried_account_lists_the_user_pool_for_the_typical_user(seed, n_rows, N):
    """``similar_users`` with a user policy: the queried account is the viewed profile, so
    a risky one gets only the pool, without itself, ranked for the typical user (cosine
    in the users' space); ordinary ones keep their ranking; batch equals single."""
    rng = np.random.default_rng(seed)
    model = gr.FactorModel(rng.normal(size=(NU, K)), rng.normal(size=(NI, K)))
    risk = rng.uniform(0.0, 0.05, NU)
    risky = rng.choice(NU, 6, replace=False)
    risk[risky] = rng.uniform(0.4, 1.0, risky.size)
    pool = rng.uniform(size=NU) < 0.6
    g = gr.Guard(model, user_policy=gr.Policy([_filter(risk, pool)]))
    plain = gr.Guard(model, user_policy=gr.Policy([_filter(risk, pool, False)]))
    users = rng.choice(NU, n_rows, replace=True)
    users[0] = rng.choice(risky)
    ids, scores = g.similar_users(users, N=N)
    base_ids, _ = plain.similar_users(users, N=N)
    eligible = pool & (risk < THRESHOLD)
    cos_typical = _unit(model.user_factors) @ _unit(model.typical_user())
    for r, u in enumerate(users):
        got = ids[r][ids[r] >= 0]
        one, one_scores = g.similar_users(int(u), N=N)
        assert np.array_equal(one, got)
        assert np.array_equal(one_scores, scores[r][: got.size])
        if risk[u] >= THRESHOLD:
            assert eligible[got].all() and u not in got
            assert got.size == min(N, int(eligible.sum()))
            cand = np.flatnonzero(eligible)
            best = cand[np.argsort(-cos_typical[cand], kind="stable")][: got.size]
            assert np.allclose(np.sort(cos_typical[got]), np.sort(cos_typical[best]), atol=1e-5)
        else:
            assert np.array_equal(got, base_ids[r][base_ids[r] >= 0])


def test_the_breaker_reads_similar_users_queried_account():
    """The circuit breaker reads ``similar_users``' queried account as the viewer's
    context, as it reads ``similar_items``' item: a dropped account's similar users are
    the breaker's pool only."""
    rng = np.random.default_rng(7)
    model = gr.FactorModel(rng.normal(size=(NU, K)), rng.normal(size=(NI, K)))
    risk = np.full(NU, 0.01)
    risk[:3] = 0.9
    pool = np.zeros(NU, bool)
    pool[10:20] = True
    breaker = gr.filters.ViewerCircuitBreaker(risk, item_threshold=0.5, trip=0.5, pool=pool)
    g = gr.Guard(model, user_policy=gr.Policy([breaker]))
    ids, _ = g.similar_users(np.array([0, 25]), N=8)
    assert set(ids[0][ids[0] >= 0].tolist()) <= set(range(10, 20))
    assert not set(ids[1][ids[1] >= 0].tolist()) <= set(range(10, 20))


def test_explain_reads_the_viewed_profile_as_the_guard_does():
    """``Guard.explain`` passes the viewed profile as the calls do: ``similar_users``'
    queried account (``candidates="users"``), and ``similar_items``' item (``viewed=``).
    A candidate the call leaves out is explained as dropped; without the viewed profile
    the same candidate is allowed."""
    rng = np.random.default_rng(7)
    model = gr.FactorModel(rng.normal(size=(NU, K)), rng.normal(size=(NU, K)))
    risk = np.full(NU, 0.01)
    risk[:3] = 0.9
    pool = np.zeros(NU, bool)
    pool[10:20] = True
    breaker = gr.filters.ViewerCircuitBreaker(risk, item_threshold=0.5, trip=0.5, pool=pool)
    g = gr.Guard(model, gr.Policy([breaker]), user_policy="same")
    users, _ = g.similar_users(0, N=NU)
    items, _ = g.similar_items(0, N=NU)
    outside = 25  # an eligible account outside the pool
    assert outside not in users and outside not in items
    assert g.explain(0, outside, candidates="users").action == "drop"
    assert g.explain(None, outside, viewed=0).action == "drop"
    assert g.explain(None, outside).action == "allow"
    assert g.explain(None, outside, viewed=25).action == "allow"
    with pytest.raises(ValidationError, match="viewed"):
        g.explain(None, outside, viewed=[1, 2])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_rows=st.integers(1, 8),
    N=st.integers(1, 15),
    limit=st.sampled_from(["none", "filter_items", "items"]),
    shared=st.sampled_from(["off", "always"]),
    backfill=st.booleans(),
)
def test_stripped_profiles_keep_the_contract_with_caps_limits_and_shared_calls(
    seed, n_rows, N, limit, shared, backfill
):
    """With a share cap, a block list, ``items=`` / ``filter_items=`` and viewer groups
    sharing kernel calls: no suppressed id, caps held, risky profiles get only the pool
    and never themselves, batch equals single."""
    from unittest import mock

    from guardrails.policy import _run as run

    rng, model, risk, risky, pool = _world(seed)
    blocked = rng.choice(NI, 5, replace=False)
    communities = rng.integers(-1, 3, NI)
    policy = gr.Policy(
        [
            _filter(risk, pool),
            gr.filters.BlockItems(blocked),
            gr.filters.ShareCap(max_share=0.3, communities=communities),
        ]
    )
    items = rng.choice(NI, n_rows, replace=True)
    items[0] = rng.choice(risky)
    kw: dict = {}
    allowed = np.ones(NI, bool)
    if limit == "filter_items":
        kw["filter_items"] = rng.choice(NI, 10, replace=False)
        allowed[kw["filter_items"]] = False
    elif limit == "items":
        kw["items"] = rng.choice(NI, 40, replace=False)
        allowed[:] = False
        allowed[kw["items"]] = True
    fill = rng.integers(0, 4, NI).astype(np.float64) if backfill else None
    with mock.patch.object(run, "SHARED_CALLS", shared):
        g = gr.Guard(model, policy, backfill=fill)
        ids, scores = g.similar_items(items, N=N, **kw)
        ones = [g.similar_items(int(i), N=N, **kw) for i in items]
    allowance = max(1, int(np.floor(0.3 * N)))
    eligible = pool & (risk < THRESHOLD)
    for r, item in enumerate(items):
        got = ids[r][ids[r] >= 0]
        assert np.array_equal(ones[r][0], got)
        assert np.array_equal(ones[r][1], scores[r][: got.size])
        assert allowed[got].all() and not np.isin(got, blocked).any()
        c = communities[got]
        c = c[c >= 0]
        assert c.size == 0 or np.bincount(c).max() <= allowance
        if risk[item] >= THRESHOLD:
            assert eligible[got].all() and item not in got
