"""A new account that has followed a risky viewing context gets neither minors' accounts
nor risky contexts, however many accounts it follows after (``default_policy`` with a
minors' list and interactions: the ``protect_minors_new_accounts`` rule)."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.exceptions import ValidationError

NI, NU, K = 80, 60, 6


def _world(seed):
    rng = np.random.default_rng(seed)
    model = gr.FactorModel(rng.normal(size=(NU, K)), rng.normal(size=(NI, K)))
    risk = rng.uniform(0.0, 0.02, NI).astype(np.float32)
    seeds = rng.choice(NI, 3, replace=False)
    risk[seeds] = 1.0
    band = np.setdiff1d(rng.choice(NI, 8, replace=False), seeds)
    risk[band] = rng.uniform(0.2, 0.6, band.size)
    minors = np.setdiff1d(rng.choice(NI, 10, replace=False), np.r_[seeds, band])
    ui = sp.random(NU, NI, density=0.08, format="csr", random_state=rng, dtype=np.float32)
    ui.data[:] = 1.0
    policy = gr.default_policy(risk=risk, seeds=seeds, minors=minors, interactions=ui)
    return rng, model, policy, minors


def _rule(policy):
    (rule,) = [f for f in policy.filters if f.name == "protect_minors_new_accounts"]
    return rule


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_plain=st.integers(0, 30),
    risky_first=st.booleans(),
    known=st.booleans(),
)
def test_a_new_account_that_followed_a_risky_context_gets_no_minors(
    seed, n_plain, risky_first, known
):
    rng, model, policy, minors = _world(seed)
    rule = _rule(policy)
    risky = rule.risky_candidates()
    assert rule.protected and not risky[minors].any()
    plain = np.flatnonzero(~risky)
    follows = list(rng.choice(plain, n_plain, replace=False))
    if risky_first:
        follows.append(int(rng.choice(np.flatnonzero(risky))))
    row = sp.csr_matrix(
        (np.ones(len(follows), np.float32), (np.zeros(len(follows), int), follows)),
        shape=(1, NI),
    )
    uid = 5 if known else NU + 3
    viewers = gr.filters.ViewerBatch(np.array([uid]), row, n_rows=1)
    tripped = bool(rule.risky_context(viewers)[0])
    # However many accounts it follows: a new account with a risky follow, only.
    assert tripped == (risky_first and not known)
    g = gr.Guard(model, policy)
    ids, _ = g.recommend(uid, row, N=NI, recalculate_user=True)
    batch, _ = g.recommend(
        np.array([uid, uid]), sp.vstack([row, row]).tocsr(), N=NI, recalculate_user=True
    )
    assert np.array_equal(batch[0][batch[0] >= 0], ids)
    if tripped:
        assert not np.isin(ids, minors).any() and not risky[ids].any()
        # The rest of the catalogue is still served (no empty slate).
        assert ids.size > 0


def test_without_interactions_or_minors_there_is_no_rule():
    rng, _, _, minors = _world(1)
    risk = rng.uniform(0, 0.5, NI)
    assert not any(
        f.name == "protect_minors_new_accounts" for f in gr.default_policy(risk=risk).filters
    )
    assert not any(
        f.name == "protect_minors_new_accounts"
        for f in gr.default_policy(risk=risk, minors=minors).filters
    )


def test_the_rule_is_protected():
    """A child-safety rule: it cannot be held back or failed open."""
    _, _, policy, _ = _world(2)
    assert _rule(policy).protected
    with pytest.raises(ValidationError, match="protected"):
        gr.Policy(
            policy.filters,
            holdback=gr.Holdback(0.1, salt="x", filters=["protect_minors_new_accounts"]),
        )
