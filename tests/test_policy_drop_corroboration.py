"""A drop takes two signals: the graph's risk at the drop line and the model's agreement.

``default_policy`` with a model space (``item_factors`` / ``item_similarity``) drops an
account at the drop line only when its neighbourhood risk (the mean risk of its nearest
accounts in the model's space) is at least the demotion line; otherwise the account is
demoted, and stays a risky context. Seeds are dropped whatever their neighbourhood.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.exceptions import ValidationError
from guardrails.filters._risk import nearest_items, neighbour_risk
from guardrails.policy import default_policy
from guardrails.policy._defaults import _corroborated, _thresholds


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    drop_t=st.floats(1e-4, 1.0),
    demote_frac=st.floats(0.0, 1.0),
    with_seeds=st.booleans(),
)
def test_corroborated_holds_back_exactly_the_uncorroborated_drops(
    seed, n, drop_t, demote_frac, with_seeds
):
    rng = np.random.default_rng(seed)
    risk = rng.choice([0.0, drop_t, 1.0, rng.uniform(0, 1)], size=n).astype(np.float32)
    risk = np.maximum(risk, rng.uniform(0, 1, n).astype(np.float32) * (rng.random(n) < 0.5))
    demote_t = demote_frac * drop_t
    near = rng.choice([0.0, demote_t, 1.0, rng.uniform(0, 1)], size=n).astype(np.float32)
    seeds = rng.random(n) < 0.2 if with_seeds else None
    out = _corroborated(risk, near, drop_t, demote_t, seeds)
    assert out.dtype == np.float32 and out.shape == risk.shape
    at_line = risk >= drop_t
    keep = at_line & (near >= demote_t)
    if seeds is not None:
        keep |= at_line & seeds
    # Dropped after: exactly the corroborated accounts (and seeds) at the line.
    np.testing.assert_array_equal(out >= drop_t, keep)
    # Nothing else changes; held-back accounts sit just under the line.
    np.testing.assert_array_equal(out[~(at_line & ~keep)], risk[~(at_line & ~keep)])
    held = at_line & ~keep
    assert (out[held] < drop_t).all()
    assert (out[held] >= np.nextafter(np.float32(drop_t), np.float32(0)) - 1e-12).all()


def _world(seed: int, n: int = 300, f: int = 8):
    """Accounts 0-19: a network, clustered in the model's space and at high risk.
    Account 20: at the drop line by its graph risk alone, placed among ordinary accounts
    in the model's space. Account 21: a seed placed among ordinary accounts."""
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, f))
    V[:, 0] = -1.0 - np.abs(V[:, 0])  # ordinary accounts on one side of the space...
    V[:20] = 0.05 * rng.normal(size=(20, f))
    V[:20, 0] += 5.0  # ...the network clustered on the other
    risk = rng.uniform(0.0, 0.02, n).astype(np.float32)
    risk[:20] = rng.uniform(0.6, 1.0, 20)
    risk[20] = 0.5
    seeds = np.zeros(n, dtype=bool)
    seeds[[0, 21]] = True
    return risk, seeds, V.astype(np.float32)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), viewer=st.integers(0, 250))
def test_an_account_the_model_places_among_ordinary_ones_is_demoted_not_dropped(seed, viewer):
    risk, seeds, V = _world(seed)
    n = risk.size
    pol = default_policy(risk=risk, seeds=seeds, item_factors=V)
    plain = default_policy(risk=risk, seeds=seeds, item_factors=V, drop_corroboration=False)
    _, drop_t, demote_t, _, _ = _thresholds(risk, seeds, 0.10)
    near = neighbour_risk(risk, nearest_items(item_factors=V, k=10))
    # The premise: account 20 is at the line, its neighbourhood is not; 1-19 are both.
    assert risk[20] >= drop_t and near[20] < demote_t
    assert (near[1:20] >= demote_t).all()
    model = gr.FactorModel(np.random.default_rng(seed).normal(size=(n, 8)), V)
    ids, _ = gr.Guard(model, pol).recommend(viewer, N=n, filter_already_liked_items=False)
    shown = set(ids[ids >= 0].tolist())
    # The network and both seeds are dropped; account 20 is only demoted.
    assert not shown & set(range(20)) and 21 not in shown
    assert 20 in shown
    why = gr.Guard(model, pol).explain(viewer, 20)
    assert (why.action, why.deciding_filter) == ("demote", "demote_risk")
    ids0, _ = gr.Guard(model, plain).recommend(viewer, N=n, filter_already_liked_items=False)
    assert 20 not in set(ids0[ids0 >= 0].tolist())
    # Still at the line for the breaker and a risky viewing context: its profile
    # suggests only the low-risk pool, and following it counts as a risky follow.
    ctx = pol["context_risk"]
    assert ctx.risk[20] >= ctx.threshold
    breaker = pol["viewer_circuit_breaker"]
    assert breaker.risk_[20] >= breaker.item_threshold_
    assert not breaker.pool_[20]


def test_minors_accounts_and_the_switch_itself():
    risk, seeds, V = _world(1)
    minors = np.zeros(risk.size, dtype=bool)
    minors[[20, 30]] = True
    pol = default_policy(risk=risk, seeds=seeds, item_factors=V, minors=minors)
    # Minors' accounts carry no risk of their own: never at the line, with or without it.
    assert (pol["suppress_neighborhood"].risk_[minors] == 0).all()
    with pytest.raises(ValidationError, match="drop_corroboration"):
        default_policy(risk=risk, seeds=seeds, drop_corroboration="no")
    with pytest.raises(ValidationError, match="drop_corroboration"):
        default_policy(risk=risk, seeds=seeds, item_factors=V, drop_corroboration=1)


def test_without_a_model_space_every_account_at_the_line_is_dropped():
    risk, seeds, _ = _world(0)
    a = default_policy(risk=risk, seeds=seeds)["suppress_neighborhood"]
    b = default_policy(risk=risk, seeds=seeds, drop_corroboration=False)
    np.testing.assert_array_equal(a.risk_, risk)
    np.testing.assert_array_equal(b["suppress_neighborhood"].risk_, risk)
