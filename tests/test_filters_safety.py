"""Property tests for the built-in safety filters, each through a real Guard."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.exceptions import FailClosedError, GuardrailsWarning, ValidationError
from guardrails.filters import (
    BlockLabeled,
    CohortRule,
    DemoteRisk,
    RelationshipRule,
    ShareCap,
    SuppressNeighborhood,
    ViewerCircuitBreaker,
)
from guardrails.filters._risk import propagate_seed_risk
from guardrails.filters.base import Catalog
from guardrails.policy import Policy
from guardrails.testing import cohort_arrays, risk_vectors

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
NU, NI, F = 30, 48, 6


def _model(seed=0, nu=NU, ni=NI):
    rng = np.random.default_rng(seed)
    return gr.FactorModel(rng.normal(size=(nu, F)), rng.normal(size=(ni, F)))


def _empty(m, n=NI):
    return sp.csr_matrix((m, n), dtype=np.float32)


def _interactions(m, seed, density=0.1, n=NI):
    return sp.random(m, n, density=density, format="csr", random_state=seed, dtype=np.float32)


class FakeSnapshot:
    """The snapshot interface BlockLabeled reads."""

    def __init__(self, labels, severity, version="snap-1"):
        self._labels = labels
        self.categories = tuple(sorted(labels))
        self.max_severity = severity
        self.version = version

    def has(self, category):
        if category not in self._labels:
            raise ValidationError(f"unknown category {category!r}")
        return self._labels[category].copy()


# ---------------------------------------------------------------------------- BlockLabeled
@SETTINGS
@given(seed=st.integers(0, 10_000), min_sev=st.sampled_from([None, 0.5, 0.9]))
def test_block_labeled_never_serves_labeled(seed, min_sev):
    rng = np.random.default_rng(seed)
    csam = rng.random(NI) < 0.2
    spam = rng.random(NI) < 0.2
    sev = rng.random(NI).astype(np.float32)
    f = BlockLabeled(
        ["csam", "spam"], labels={"csam": csam, "spam": spam}, severity=sev, min_severity=min_sev
    )
    blocked = csam | spam | ((sev >= min_sev) if min_sev is not None else False)
    ids, _ = gr.Guard(_model(seed), [f]).recommend(
        np.arange(NU), _empty(NU), N=10, filter_already_liked_items=False
    )
    served = ids[ids >= 0]
    assert not blocked[served].any()
    # Slates stay full from the eligible items.
    assert (ids >= 0).all(axis=1).all() == ((~blocked).sum() >= 10)


def test_block_labeled_reads_snapshot_and_records_its_version():
    rng = np.random.default_rng(1)
    csam = rng.random(NI) < 0.3
    snap = FakeSnapshot(
        {"csam": csam, "spam": np.zeros(NI, bool)}, np.where(csam, 0.9, 0.0).astype(np.float32)
    )
    g = gr.Guard(_model(), [BlockLabeled(["csam"])], snapshot=snap)
    r = g.recommend_detailed(
        np.arange(NU), _empty(NU), N=8, filter_already_liked_items=False, record=True
    )
    assert not csam[r.ids[r.ids >= 0]].any()
    assert r.snapshot_version == "snap-1"
    assert r.decisions and all(d.snapshot_version == "snap-1" for d in r.decisions)
    assert {d.reason for d in r.decisions} == {"label:csam"}


def test_block_labeled_fails_closed_for_child_safety():
    f = BlockLabeled(["csam"])
    assert f.protected and f.failure == "fail_closed"
    with pytest.raises(FailClosedError, match="csam"):
        gr.Guard(_model(), [f])  # no snapshot
    snap = FakeSnapshot({"spam": np.zeros(NI, bool)}, np.zeros(NI, np.float32))
    with pytest.raises(FailClosedError, match="does not carry"):
        gr.Guard(_model(), [f], snapshot=snap)
    with pytest.raises(ValidationError, match="fail_closed"):
        BlockLabeled(["csam_seller"], failure="fail_open")


def test_block_labeled_fail_open_warns_and_counts():
    f = BlockLabeled(["spam"])
    assert f.failure == "fail_open" and not f.protected
    with pytest.warns(GuardrailsWarning, match="spam"):
        g = gr.Guard(_model(), [f])
    ids, _ = g.recommend(np.arange(3), _empty(3), N=5, filter_already_liked_items=False)
    ref, _ = gr.Guard(_model()).recommend(
        np.arange(3), _empty(3), N=5, filter_already_liked_items=False
    )
    assert np.array_equal(ids, ref)
    assert g.decision_counters()["block_labeled/skipped_fail_open"] == 1


def test_block_labeled_demote_action():
    labels = np.zeros(NI, bool)
    labels[:10] = True
    f = BlockLabeled(["nudity"], labels={"nudity": labels}, action="demote", weight=0.7)
    (part,) = Policy([f]).compile_global(Catalog("items", NI)).parts
    assert part.hard_mask is None
    assert np.allclose(part.penalty, np.where(labels, 0.7, 0.0))


# ---------------------------------------------------------------------------- neighbourhood
@SETTINGS
@given(data=st.data(), t=st.sampled_from([0.2, 0.5, 0.8]))
def test_suppress_neighborhood_drops_above_threshold_and_demotes_band(data, t):
    risk = data.draw(risk_vectors(NI))
    f = SuppressNeighborhood(risk, threshold=t, demote_threshold=t / 2, demote_weight=2.0)
    g = gr.Guard(_model(), [f])
    ids, _ = g.recommend(np.arange(NU), _empty(NU), N=6, filter_already_liked_items=False)
    assert not (risk[ids[ids >= 0]] >= t).any()
    plan = Policy([f]).compile_global(Catalog("items", NI))
    band = (risk >= t / 2) & (risk < t)
    pen = np.zeros(NI) if plan.penalty is None else plan.penalty
    assert np.allclose(pen, np.where(band, 2.0 * risk, 0.0), atol=1e-6)
    reasons = {p.reason for p in plan.parts}
    assert reasons <= {"risk_neighborhood", "risk_neighborhood_demoted"}


def test_propagation_from_seeds():
    # A path 0-1-2-3 and an isolated component 4-5.
    g = sp.csr_matrix(([1, 1, 1, 1], ([0, 1, 2, 4], [1, 2, 3, 5])), shape=(6, 6))
    r = propagate_seed_risk([0], g, alpha=0.5)
    assert r[0] == 1.0
    assert r[1] > r[2] > r[3] > 0
    assert r[4] == r[5] == 0
    f = SuppressNeighborhood(seeds=[0], graph=g, threshold=0.4)
    mask = Policy([f]).compile_global(Catalog("items", 6)).hard_mask
    assert mask[0] and mask[1] and not mask[4]


def test_suppress_neighborhood_reads_snapshot_risk_or_fails_closed():
    with pytest.raises(FailClosedError):
        gr.Guard(_model(), [SuppressNeighborhood(threshold=0.5)])

    class Snap:
        version = "s"
        risk = np.linspace(0, 1, NI).astype(np.float32)

    g = gr.Guard(_model(), [SuppressNeighborhood(threshold=0.5)], snapshot=Snap())
    ids, _ = g.recommend(np.arange(NU), _empty(NU), N=5, filter_already_liked_items=False)
    assert (Snap.risk[ids] < 0.5).all()


# ---------------------------------------------------------------------------- DemoteRisk
@SETTINGS
@given(data=st.data(), curve=st.sampled_from(DemoteRisk.CURVES), w=st.floats(0.01, 5))
def test_demote_risk_curves_are_monotone_and_bounded(data, curve, w):
    risk = data.draw(risk_vectors(NI))
    f = DemoteRisk(risk, weight=w, curve=curve)
    pen = f.compile_global(Catalog("items", NI)).penalty
    order = np.argsort(risk, kind="stable")
    assert (np.diff(pen[order].astype(np.float64)) >= -1e-6).all()
    assert (pen >= 0).all() and (pen <= w * (1 + 1e-6)).all()


def test_demote_risk_compatible_and_knots():
    risk = np.linspace(0, 1, NI).astype(np.float32)
    assert np.allclose(
        DemoteRisk(risk, weight=0.5).compile_global(Catalog("items", NI)).penalty, 0.5 * risk
    )
    f = DemoteRisk(risk, weight=1.0, knots=[(0.2, 0.0), (0.5, 0.5), (1.0, 1.0)])
    pen = f.compile_global(Catalog("items", NI)).penalty
    assert np.allclose(pen, np.interp(risk, [0.2, 0.5, 1.0], [0.0, 0.5, 1.0], left=0.0), atol=1e-6)
    with pytest.raises(ValidationError, match="knots"):
        DemoteRisk(risk, weight=1.0, knots=[(0.5, 0.5), (0.2, 0.6)])


# ---------------------------------------------------------------------------- CohortRule
MATRIX = [["allow", "drop", "allow"], ["drop", "allow", "demote"], ["allow", "allow", "drop"]]


@SETTINGS
@given(data=st.data())
def test_cohort_rule_holds_for_every_pair(data):
    vc = data.draw(cohort_arrays(NU, 3))
    cc = data.draw(cohort_arrays(NI, 3))
    f = CohortRule(
        vc,
        cc,
        MATRIX,
        viewer_labels=["adult", "minor", "flagged_adult"],
        candidate_labels=["adult", "minor", "new"],
    )
    g = gr.Guard(_model(), [f])
    users = np.arange(NU + 3)  # three new accounts beyond the cohort array
    ui = _interactions(users.size, 3)
    ids, _ = g.recommend(users, ui, N=8, recalculate_user=True)
    codes = f.matrix_
    strict = codes.max(axis=0)
    for r, u in enumerate(users):
        for it in ids[r][ids[r] >= 0]:
            c = cc[it]
            if c < 0:
                continue
            action = strict[c] if u >= NU else (codes[vc[u], c] if vc[u] >= 0 else 0)
            assert action != 2, (u, it)


def test_cohort_rule_demotes_and_explains():
    vc = np.full(NU, 1)
    cc = np.full(NI, 2)
    f = CohortRule(vc, cc, MATRIX)
    ex = gr.Guard(_model(), [f]).explain(0, 0)
    assert ex.action == "demote" and ex.deciding_filter == "cohort_rule"
    with pytest.raises(ValidationError, match="matrix"):
        CohortRule(vc, cc, [["allow", "block"]])
    with pytest.raises(ValidationError, match="viewer_cohorts"):
        CohortRule(np.full(NU, 7), cc, MATRIX)


# ---------------------------------------------------------------------------- circuit breaker
def _flagged_platform(seed=0, nu=80, ni=120, n_flag=20):
    """Items 0..n_flag-1 form a flagged community that its fans co-follow."""
    rng = np.random.default_rng(seed)
    fans = rng.random((nu // 4, n_flag)) < 0.5
    rest = rng.random((nu, ni)) < 0.05
    rest[: nu // 4, :n_flag] |= fans
    x = sp.csr_matrix(rest.astype(np.float32))
    risk = np.zeros(ni, np.float32)
    risk[:n_flag] = 0.9
    risk[n_flag : n_flag + 10] = 0.2
    return x, risk


def test_circuit_breaker_stops_test_account_flood():
    x, risk = _flagged_platform()
    import implicit

    als = implicit.cpu.als.AlternatingLeastSquares(
        factors=8, iterations=5, random_state=0, num_threads=1
    )
    als.fit(x, show_progress=False)
    # A brand-new test account follows a handful of flagged accounts.
    test_rows = sp.csr_matrix((np.ones(3, np.float32), [0, 1, 2], [0, 3]), shape=(1, x.shape[1]))
    new_id = x.shape[0] + 5
    plain = gr.Guard(als)
    ids0, _ = plain.recommend(new_id, test_rows, N=10, recalculate_user=True)
    cb = ViewerCircuitBreaker(risk, item_threshold=0.5, trip=0.2, pool_threshold=0.1)
    g = gr.Guard(als, [cb])
    r = g.recommend_detailed(new_id, test_rows, N=10, recalculate_user=True, record=True)
    assert (risk[ids0] >= 0.5).sum() >= 1  # the unguarded model floods it
    assert (risk[r.ids] < 0.1).all() and r.ids.size == 10
    assert r.info["viewer_circuit_breaker/viewers"] == 1
    assert r.info["viewer_circuit_breaker/stripped"] == 3
    assert {d.filter for d in r.decisions if not d.in_slate} == {"viewer_circuit_breaker"}
    # A viewer with benign interactions is untouched.
    benign = sp.csr_matrix((np.ones(3, np.float32), [60, 70, 80], [0, 3]), shape=(1, x.shape[1]))
    a, _ = g.recommend(new_id, benign, N=10, recalculate_user=True)
    b, _ = plain.recommend(new_id, benign, N=10, recalculate_user=True)
    assert np.array_equal(a, b)


@SETTINGS
@given(data=st.data(), trip=st.sampled_from([0.1, 0.3, 0.6]))
def test_circuit_breaker_tripped_viewers_only_get_pool(data, trip):
    risk = data.draw(risk_vectors(NI))
    vr = data.draw(risk_vectors(NU))
    cb = ViewerCircuitBreaker(risk, item_threshold=0.5, trip=trip, viewer_risk=vr)
    ui = _interactions(NU, data.draw(st.integers(0, 1000)), density=0.15)
    ids, _ = gr.Guard(_model(), [cb]).recommend(np.arange(NU), ui, N=6)
    share_num = np.asarray(abs(ui) @ (risk >= 0.5).astype(np.float64)).ravel()
    tot = np.asarray(abs(ui).sum(axis=1)).ravel()
    share = np.divide(share_num, tot, out=np.zeros_like(tot), where=tot > 0)
    tripped = np.maximum(share, vr) >= trip
    pool = risk < cb.pool_threshold_
    for r in np.flatnonzero(tripped):
        assert pool[ids[r][ids[r] >= 0]].all()


# ---------------------------------------------------------------------------- ShareCap
@SETTINGS
@given(
    data=st.data(),
    share=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    N=st.integers(1, 12),
    communities=st.booleans(),
)
def test_share_cap_holds_and_backfills(data, share, N, communities):
    seed = data.draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    if communities:
        groups = rng.integers(-1, 4, NI)
        f = ShareCap(max_share=share, communities=groups)
    else:
        risk = data.draw(risk_vectors(NI))
        f = ShareCap(max_share=share, risk=risk, threshold=0.3)
        groups = np.where(risk >= 0.3, 0, -1)
    filt = rng.choice(NI, size=int(rng.integers(0, NI)), replace=False)
    g = gr.Guard(_model(seed), [f])
    ids, scores = g.recommend(
        np.arange(NU), _empty(NU), N=N, filter_already_liked_items=False, filter_items=filt
    )
    eligible = np.ones(NI, bool)
    eligible[filt] = False
    allow = f.compile_caps(Catalog("items", NI)).allowance(N)
    feasible = int((eligible & (groups < 0)).sum()) + sum(
        min(allow, int((eligible & (groups == k)).sum()))
        for k in range(int(groups.max(initial=-1)) + 1)
    )
    for r in range(NU):
        row = ids[r][ids[r] >= 0]
        gr_ = groups[row]
        gr_ = gr_[gr_ >= 0]
        assert gr_.size == 0 or np.bincount(gr_).max() <= allow
        assert eligible[row].all()
        assert row.size == min(N, feasible)  # full whenever enough items exist within the caps
        assert (np.diff(scores[r][: row.size].astype(np.float64)) <= 1e-6).all()


# ---------------------------------------------------------------------------- RelationshipRule
@SETTINGS
@given(seed=st.integers(0, 10_000), action=st.sampled_from(["drop", "demote"]))
def test_relationship_rule_applies_only_to_non_followers(seed, action):
    rng = np.random.default_rng(seed)
    targets = rng.random(NI) < 0.25
    follows = sp.random(NU, NI, density=0.15, format="csr", random_state=seed)
    f = RelationshipRule(
        targets, follows=follows, action=action, weight=0.5, use_call_interactions=False
    )
    cp = Policy([f]).compiled(Catalog("items", NI))
    from guardrails.filters.base import ViewerBatch
    from guardrails.policy import _CallCache

    users = np.arange(NU)
    cache = _CallCache(ViewerBatch(users, None, None, NU))
    rr, ii = np.meshgrid(users, np.arange(NI), indexing="ij")
    act, _ = cp.pair_actions(cache, 0, rr.ravel(), ii.ravel())
    fol = follows.toarray().ravel() != 0
    expected = np.where(targets[ii.ravel()] & ~fol, 2 if action == "drop" else 1, 0)
    assert np.array_equal(act, expected)
    if action == "drop":
        ids, _ = gr.Guard(_model(seed), [f]).recommend(
            users, _empty(NU), N=8, filter_already_liked_items=False
        )
        for u in users:
            row = ids[u][ids[u] >= 0]
            assert not (targets[row] & (follows[u].toarray().ravel()[row] == 0)).any()


def test_relationship_rule_uses_call_interactions():
    targets = np.zeros(NI, bool)
    targets[[1, 2, 3]] = True
    f = RelationshipRule(targets, action="drop")
    ui = sp.csr_matrix((np.ones(1, np.float32), [2], [0, 1]), shape=(1, NI))
    g = gr.Guard(_model(), [f])
    assert g.explain(0, 2, user_items=ui).action == "allow"
    assert g.explain(0, 1, user_items=ui).action == "drop"


def test_filter_validation_messages():
    with pytest.raises(ValidationError, match="'threshold' parameter of SuppressNeighborhood"):
        SuppressNeighborhood(np.zeros(3), threshold=2.0)
    with pytest.raises(ValidationError, match="'risk' parameter of ShareCap"):
        ShareCap(max_share=0.2)
    with pytest.raises(ValidationError, match="'mode' parameter of DemoteRisk"):
        DemoteRisk(np.zeros(3), weight=1.0, mode="loud")
    with pytest.raises(ValidationError, match="sized to the items catalogue"):
        gr.Guard(_model(), [ViewerCircuitBreaker(np.zeros(5))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Policy([SuppressNeighborhood(np.zeros(NI), threshold=0.5)]).compiled(Catalog("items", NI))


def test_viewed_profile_is_context_not_a_follow():
    """similar_items passes the viewed account as context: the circuit breaker reads it,
    a relationship rule does not count it as followed."""
    import guardrails as gr
    from guardrails.filters import RelationshipRule, ViewerCircuitBreaker

    rng = np.random.default_rng(5)
    model = gr.FactorModel(rng.standard_normal((8, 4)), rng.standard_normal((40, 4)))
    # the viewed account (0) is itself in its own "similar" list (cosine 1)
    assert 0 in gr.Guard(model).similar_items(0, N=5)[0]
    rel = gr.Guard(model, [RelationshipRule(np.array([0]), action="drop")])
    assert 0 not in rel.similar_items(0, N=5)[0]

    risk = np.zeros(40, dtype=np.float32)
    risk[0] = 1.0
    risk[20:] = 0.5  # outside the low-risk pool
    breaker = ViewerCircuitBreaker(risk, item_threshold=0.9, trip=0.5, pool_threshold=0.2)
    guard = gr.Guard(model, [breaker])
    ids, _ = guard.similar_items(0, N=10)
    assert (ids < 20).all() and 0 not in ids  # a risky profile suggests only the pool
    benign, _ = guard.similar_items(5, N=10)
    # a benign profile is not restricted: the same slate as without the breaker
    np.testing.assert_array_equal(benign, gr.Guard(model).similar_items(5, N=10)[0])
    assert (benign >= 20).any()


def test_memoised_state_is_left_out_of_pickles():
    """Filters ship to workers by pickle; a memo of one batch (or of derived follows) stays
    behind, and the filter rebuilds it on first use with the same results."""
    import pickle

    from guardrails.filters.base import ViewerBatch

    ui = sp.csr_matrix(np.eye(3, 6, dtype=np.float32))
    viewers = ViewerBatch(np.arange(3, dtype=np.int64), ui)
    cat = Catalog("items", 6)
    breaker = ViewerCircuitBreaker(np.linspace(0, 1, 6).astype(np.float32), trip=0.1)
    tripped = breaker.tripped(viewers)
    rule = RelationshipRule(np.array([1, 4]), follows=sp.csr_matrix(np.eye(6, dtype=np.float32)))
    followed = rule.followed_targets(cat, viewers).toarray()
    for f, memo in ((breaker, "_memo"), (rule, "_follows_memo")):
        assert hasattr(f, memo)
        back = pickle.loads(pickle.dumps(f))
        assert not hasattr(back, memo)
        assert back.fingerprint() == f.fingerprint()
    assert np.array_equal(pickle.loads(pickle.dumps(breaker)).tripped(viewers), tripped)
    back_rule = pickle.loads(pickle.dumps(rule))
    assert np.array_equal(back_rule.followed_targets(cat, viewers).toarray(), followed)
