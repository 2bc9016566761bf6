"""default_policy's audience context: an account whose followers are risky viewing contexts
far beyond chance is a risky context itself, with no seed, term or neighbourhood of its own."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

import guardrails as gr
from guardrails.filters import Catalog
from guardrails.policy import DEFAULT_AUDIENCE_LIFT, default_policy
from guardrails.policy._attention import audience_marks
from guardrails.testing import check_guard_respects, random_viewers

N = 260
SELLERS = np.arange(0, 6)
BUYERS = np.arange(6, 36)
MINOR = 36
ORDINARY = np.arange(37, N)


def _world(seed: int):
    """Ordinary accounts follow 6 ordinary accounts each; buyers follow 2-4 sellers, the
    minor's account and 5 ordinary accounts; sellers follow 5 ordinary accounts. The
    given risk puts the buyers in the demotion band and the sellers at the typical
    level: only their audience tells the sellers apart. Sellers sit together in the
    model's factor space, and so do buyers (apart from them)."""
    rng = np.random.default_rng(seed)
    edges = []
    for a in ORDINARY:
        edges += [(int(a), int(x)) for x in rng.choice(ORDINARY, 6, replace=False) if x != a]
    for b in BUYERS:
        edges += [(int(b), int(x)) for x in rng.choice(SELLERS, rng.integers(2, 5), replace=False)]
        edges += [(int(b), MINOR)]
        edges += [(int(b), int(x)) for x in rng.choice(ORDINARY, 5, replace=False)]
    for s in SELLERS:
        edges += [(int(s), int(x)) for x in rng.choice(ORDINARY, 5, replace=False)]
    r, c = np.array(edges).T
    g = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(N, N))
    g.data[:] = 1.0
    risk = rng.uniform(0.01, 0.03, N).astype(np.float32)
    risk[SELLERS] = 0.02  # the typical level
    risk[BUYERS] = 0.06  # three times typical: the demotion band, not dropped
    V = rng.normal(size=(N, 8))
    for part in (SELLERS, BUYERS):
        V[part] = rng.normal(size=8) * 3 + 0.1 * rng.normal(size=(part.size, 8))
    minors = np.zeros(N, bool)
    minors[MINOR] = True
    model = gr.FactorModel(rng.normal(size=(N, 8)), V)
    return g, risk, minors, model, V.astype(np.float32)


def _policy(g, risk, V, **kw):
    return default_policy(risk=risk, graph=g, interactions=g, item_factors=V, **kw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 40),
    density=st.floats(0.02, 0.5),
    share=st.floats(0.0, 0.6),
    lift=st.floats(1.0, 8.0),
    p_tail=st.sampled_from([1e-4, 0.01, 0.2]),
    weights=st.booleans(),
    exempt_share=st.sampled_from([0.0, 0.2]),
)
def test_audience_marks_are_the_definition(
    seed, n, density, share, lift, p_tail, weights, exempt_share
):
    rng = np.random.default_rng(seed)
    g = sp.random(n, n, density=density, format="csr", random_state=seed % 10_000)
    if not weights:
        g.data[:] = 1.0  # stored values other than one count as one follow
    marked = rng.random(n) < share
    exempt = rng.random(n) < exempt_share
    got = audience_marks(g, marked, lift=lift, p_tail=p_tail, exempt=exempt)
    assert np.array_equal(got, _one_round(g, marked & ~exempt, lift, p_tail) & ~exempt)


def _one_round(g, marked, lift, p_tail):
    """The audience test, account by account."""
    n = g.shape[0]
    dense = g.toarray() != 0
    rate = marked.mean()
    out = np.zeros(n, dtype=bool)
    for b in range(n):
        followers = np.flatnonzero(dense[:, b])
        hits = int(marked[followers].sum())
        out[b] = (
            rate > 0
            and hits >= 2
            and hits >= lift * rate * max(followers.size, 1)
            and binom.sf(hits - 1, followers.size, rate) < p_tail
        )
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 40),
    density=st.floats(0.05, 0.4),
    share=st.floats(0.02, 0.4),
    lift=st.floats(1.0, 4.0),
)
def test_audience_marks_to_the_fixed_point_repeat_the_rounds(seed, n, density, share, lift):
    rng = np.random.default_rng(seed)
    g = sp.random(n, n, density=density, format="csr", random_state=seed % 10_000)
    marked = rng.random(n) < share
    got = audience_marks(g, marked, lift=lift, p_tail=0.2, fixed_point=True)
    current, want = marked, np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        new = _one_round(g, current, lift, 0.2)
        want |= new
        current = current | new
    assert np.array_equal(got, want)
    # Nothing new at the fixed point; one round is at most the fixed point.
    assert not (_one_round(g, marked | got, lift, 0.2) & ~(marked | got)).any()
    assert not (audience_marks(g, marked, lift=lift, p_tail=0.2) & ~got).any()


def test_sellers_followed_by_risky_contexts_are_marked_and_few_others():
    g, risk, _, _, _ = _world(0)
    marked = risk >= 0.05
    got = audience_marks(g, marked, lift=DEFAULT_AUDIENCE_LIFT, p_tail=0.01)
    assert got[SELLERS].all()
    assert not got[ORDINARY].any()
    # A lift the sellers' audience does not reach marks nobody.
    assert not audience_marks(g, marked, lift=100.0, p_tail=0.01).any()


def test_the_profile_of_an_audience_marked_seller_suggests_only_the_pool():
    g, risk, _, model, V = _world(1)
    pol = _policy(g, risk, V)
    off = _policy(g, risk, V, audience_context=False)
    ctx, ctx_off = pol["context_risk"], off["context_risk"]
    assert (ctx.risk[SELLERS] >= ctx.threshold).all()
    assert (ctx_off.risk[SELLERS] < ctx_off.threshold).all()  # no other rule sees them
    assert not ctx.pool[SELLERS].any()
    # Marked, never dropped or demoted for it: the drop and demotion read the risk.
    assert np.array_equal(pol["suppress_neighborhood"].risk_, off["suppress_neighborhood"].risk_)
    new = N + 3
    network = np.r_[SELLERS, BUYERS]
    for s in SELLERS:
        ids, _ = gr.Guard(model, pol).similar_items(int(s), N=10, viewer=new)
        ids = ids[ids >= 0]
        assert ids.size == 10 and ctx.pool[ids].all()
        assert not np.isin(ids, network).any()
    # Without the rule a seller's profile suggests the network (the test can fail).
    ids, _ = gr.Guard(model, off).similar_items(int(SELLERS[0]), N=10, viewer=new)
    assert np.isin(ids, network).any()


def test_a_new_account_following_an_audience_marked_seller_gets_the_pool():
    g, risk, _, model, V = _world(2)
    pol = _policy(g, risk, V)
    off = _policy(g, risk, V, audience_context=False)
    row = sp.csr_matrix(np.isin(np.arange(N), SELLERS[:1]).astype(np.float32)[None, :])
    network = np.r_[SELLERS, BUYERS]
    ids, _ = gr.Guard(model, pol).recommend(N + 5, row, N=10, recalculate_user=True)
    ids = ids[ids >= 0]
    assert ids.size == 10 and pol["context_risk"].pool[ids].all()
    assert not np.isin(ids, network).any()
    ref, _ = gr.Guard(model, off).recommend(N + 5, row, N=10, recalculate_user=True)
    assert np.isin(ref, network).any()


def test_minors_accounts_are_never_audience_marked():
    g, risk, minors, _, V = _world(3)
    # The minor's account is followed by every buyer: as sellers are, but it is a minor's.
    plain = _policy(g, risk, V)
    assert plain["context_risk"].risk[MINOR] >= plain["context_risk"].threshold
    pol = _policy(g, risk, V, minors=minors)
    assert pol["context_risk"].risk[MINOR] < pol["context_risk"].threshold
    assert (pol["context_risk"].risk[SELLERS] >= pol["context_risk"].threshold).all()


def test_no_follow_graph_means_no_audience_marks():
    g, risk, _, _, V = _world(4)
    # A non-square interaction matrix is no follow graph between candidates.
    ui = sp.vstack([g, g]).tocsr()
    pol = default_policy(risk=risk, interactions=ui, item_factors=V)
    assert (pol["context_risk"].risk[SELLERS] < pol["context_risk"].threshold).all()


def test_audience_context_must_be_a_bool():
    g, risk, _, _, V = _world(5)
    with pytest.raises(gr.exceptions.ValidationError):
        _policy(g, risk, V, audience_context="yes")


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 6))
def test_the_context_filter_with_audience_marks_keeps_the_guard_contract(seed, m):
    g, risk, minors, _, V = _world(seed % 50)
    pol = _policy(g, risk, V, minors=minors)
    check_guard_respects(
        pol["context_risk"], Catalog("items", N), random_viewers(N, 12, m, seed=seed)
    )
