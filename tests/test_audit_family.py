"""The randomised platform family, its audit, and the viewing-context filter it motivated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.audit import family as fam
from guardrails.audit.family import (
    MODEL_KINDS,
    SIZES,
    draw_config,
    draw_model,
    family_seeds,
    make_family_platform,
)
from guardrails.audit.family_run import (
    FAMILY_TARGETS,
    family_targets,
    format_family,
    run_family,
    view_profiles,
    write_family_plot,
)
from guardrails.audit.platform import BUYER, MINOR, SELLER
from guardrails.exceptions import ValidationError
from guardrails.filters import Catalog, ContextRisk, ViewerBatch
from guardrails.testing import FilterConformance, check_guard_respects

_SLOW = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------- seeds
def test_seed_streams_are_disjoint_deterministic_and_versioned(monkeypatch):
    tune = family_seeds(200, split="tuning")
    ev = family_seeds(200, split="evaluation")
    assert len(set(tune)) == len(set(ev)) == 200
    assert not set(tune) & set(ev)
    assert family_seeds(5, split="evaluation", start=3) == ev[3:8]
    assert family_seeds(200, split="evaluation") == ev
    monkeypatch.setattr(fam, "FAMILY_VERSION", "family-test-other")
    assert not set(family_seeds(50, split="evaluation")) & set(ev)
    with pytest.raises(ValidationError):
        family_seeds(3, split="train")


# ---------------------------------------------------------------------------- configs
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**62), size=st.sampled_from(tuple(SIZES)))
def test_every_draw_lies_in_the_documented_ranges(seed, size):
    c = draw_config(seed, size=size)
    lo, hi = SIZES[size]
    assert lo <= c.n_accounts <= hi
    assert 5.0 <= c.camouflage <= 60.0
    assert 0.05 <= c.known_fraction <= 0.5
    assert 1 <= c.n_subnetworks <= 5 and 0 <= c.unknown_subnetworks < c.n_subnetworks
    assert 0.0 <= c.stale_share <= 0.9 and (c.recreate_fraction > 0) == (c.stale_share > 0)
    assert 1.0 < c.pop_tail <= 2.5 and 0.4 <= c.community_density <= 0.9
    assert 0.008 <= c.network_share <= 0.06 and 2.0 <= c.buyers_per_seller <= 30.0
    assert 0.1 <= c.buyer_minor_reach <= 0.9 and 0.0 <= c.noise_share <= 0.15
    assert draw_config(seed, size=size) == c  # deterministic


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_draws(kind):
    for seed in family_seeds(30):
        spec = draw_model(seed, kind)
        if kind == "item":
            assert spec["model"] in ("cosine", "bm25") and 20 <= spec["K"] <= 100
        else:
            assert 32 <= spec["factors"] <= 256 and spec["factors"] % 8 == 0


# ---------------------------------------------------------------------------- platforms
def _check_family_platform(p):
    c = p.config
    n = p.n_accounts
    assert n == c.n_accounts
    assert p.follows.shape == p.train.shape == p.held_out.shape == (n, n)
    assert np.all(p.follows.data == 1) and p.follows.diagonal().sum() == 0
    assert (p.train + p.held_out - p.follows).count_nonzero() == 0
    held_rows = np.flatnonzero(np.diff(p.held_out.indptr))
    assert p.benign[held_rows].all()
    # Held-out follows: every active benign account with enough follows holds out its
    # share of them (at least one), and no other account holds out any.
    deg = np.diff(p.follows.indptr)
    eligible = np.flatnonzero(p.benign & p.active & (deg >= fam.HELD_OUT_MIN_FOLLOWS))
    assert np.array_equal(held_rows, eligible)
    want = np.maximum(1, np.rint(fam.HELD_OUT_SHARE * deg[eligible]))
    assert np.array_equal(np.diff(p.held_out.indptr)[eligible], want)
    assert np.array_equal(np.diff(p.train.indptr)[eligible], deg[eligible] - want)
    assert np.all(np.diff(p.train.indptr)[eligible] >= 4)
    # Deactivated accounts have no follows either way.
    gone = np.flatnonzero(~p.active)
    assert p.follows[gone].nnz == 0 and p.follows[:, gone].nnz == 0
    # Sub-networks: every network account has one; sub-networks with no known seed exist
    # exactly as drawn, and every known one has at least one identified seller.
    net = (p.role == SELLER) | (p.role == BUYER)
    assert np.all((p.subnetwork >= 0) == net)
    assert p.known_subnetworks.size == c.n_subnetworks
    assert int((~p.known_subnetworks).sum()) == c.unknown_subnetworks
    known_sub = p.subnetwork[p.known_seeds]
    assert p.known_subnetworks[known_sub].all()
    assert set(np.flatnonzero(p.known_subnetworks)) == set(known_sub.tolist())
    # Known seeds: sellers, a share of about known_fraction of their sub-network.
    assert np.all(p.role[p.known_seeds] == SELLER) and not p.recreated[p.known_seeds].any()
    for k in np.flatnonzero(p.known_subnetworks):
        sellers_k = np.sum((p.subnetwork == k) & (p.role == SELLER) & ~p.recreated)
        known_k = np.sum(known_sub == k)
        assert known_k == max(1, min(sellers_k, round(c.known_fraction * sellers_k)))
    # Every sub-network still has active sellers and buyers.
    for k in range(c.n_subnetworks):
        assert np.any((p.subnetwork == k) & (p.role == SELLER) & p.active)
        assert np.any((p.subnetwork == k) & (p.role == BUYER))
    # Stale seeds: banned accounts are known sellers; re-created ones are new, unlabelled.
    assert np.all(p.role[gone] == SELLER) and np.isin(gone, p.known_seeds).all()
    assert (gone.size > 0) == (c.stale_share > 0 and p.scenario == "stale")
    if p.recreated.any():
        assert np.all(p.role[p.recreated] == SELLER) and p.active[p.recreated].all()
    # What trust and safety kept of the banned: their follows at the ban, in and out,
    # every one touching a banned account, none of them left in the follow graph, and
    # every banned account with at least one (a banned seed is not an island there).
    if gone.size:
        b = p.banned_follows.tocoo()
        assert p.banned_follows.shape == (n, n)
        assert (np.isin(b.row, gone) | np.isin(b.col, gone)).all()
        assert p.follows.multiply(p.banned_follows).nnz == 0
        touched = np.diff(p.banned_follows.indptr) + np.bincount(b.col, minlength=n)
        assert (touched[gone] > 0).all()
    else:
        assert p.banned_follows is None
    # Buyers follow sellers of their own sub-network (the ones that still exist).
    buyers = p.buyers
    f = p.follows[buyers].tocoo()
    own = (p.role[f.col] == SELLER) & (p.subnetwork[f.col] == p.subnetwork[buyers[f.row]])
    reach = np.bincount(f.row[own], minlength=buyers.size) > 0
    assert reach.mean() >= 0.8
    # Camouflage: network accounts follow ordinary accounts, about `camouflage` each.
    network = np.flatnonzero(p.network)
    ordinary_follows = p.follows[network][:, np.flatnonzero(p.benign & (p.role != MINOR))]
    mean_cam = ordinary_follows.nnz / network.size
    assert 0.4 * c.camouflage <= mean_cam <= 1.6 * c.camouflage + 5
    # Minors exist, and some buyers follow them.
    assert p.vulnerable.sum() >= 10
    assert p.follows[buyers][:, np.flatnonzero(p.vulnerable)].nnz > 0
    # Hashtags: the flagged ones are used, and search finds accounts for them.
    assert p.hashtags.shape[0] == n and p.hashtags[:, p.flagged_tags].nnz > 0
    summary = p.summary()
    json.dumps(summary)
    assert summary["n_subnetworks"] == c.n_subnetworks


@_SLOW
@given(seed=st.integers(0, 2**62))
# Found on a random run: a steep seller tail put the popular sellers among the banned ones
# and left most buyers of a sub-network without any seller (reach 0.60).
@example(seed=1085687869140164)
def test_every_drawn_config_yields_a_valid_platform(seed):
    _check_family_platform(make_family_platform(seed, size="small"))


def test_platforms_from_the_evaluation_stream_are_valid_and_varied():
    ps = [make_family_platform(s, size="small") for s in family_seeds(6)]
    for p in ps:
        _check_family_platform(p)
    assert len({p.n_accounts for p in ps}) == 6
    assert len({p.config.n_subnetworks for p in ps}) > 1


def test_make_family_platform_is_deterministic():
    s = family_seeds(1, split="tuning")[0]
    a, b = make_family_platform(s, size="small"), make_family_platform(s, size="small")
    assert (a.follows != b.follows).nnz == 0
    assert np.array_equal(a.known_seeds, b.known_seeds)


# ---------------------------------------------------------------------------- signals
# ---------------------------------------------------------------------------- ContextRisk
def _context_filter(n=30, seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.random(n).astype(np.float32)
    return ContextRisk(risk, threshold=0.7, pool=risk < 0.4, new_viewer_interactions=2)


class TestContextRiskConformance(FilterConformance):
    n_candidates = 30
    max_examples = 15

    def make_filter(self, n_candidates, n_users, seed):
        return _context_filter(n_candidates, seed)


def test_risky_profile_gets_the_pool_and_never_itself():
    f = _context_filter()
    risky = int(np.flatnonzero(f.risk >= 0.7)[0])
    calm = int(np.flatnonzero(f.risk < 0.4)[0])
    ctx = sp.csr_matrix(([1.0, 1.0], ([0, 1], [risky, calm])), shape=(2, 30))
    vb = ViewerBatch(None, None, None, 2, ctx)
    assert f.assign_cohorts(Catalog("items", 30), vb).tolist() == [0, -1]
    table = f.compile_cohorts(Catalog("items", 30))
    assert table.hard_masks[0][risky] and not table.hard_masks[0][calm]
    model = gr.FactorModel(
        np.random.default_rng(1).normal(size=(3, 4)), np.random.default_rng(2).normal(size=(30, 4))
    )
    guard = gr.Guard(model, gr.Policy([f]))
    ids, _ = guard.similar_items(np.array([risky, calm]), N=11, viewer=[40, 41])
    assert risky not in ids[0] and np.all(f.pool[ids[0][ids[0] >= 0]])
    assert calm in ids[1]


def test_new_viewers_follows_count_as_context_established_ones_do_not():
    n = 30
    f = _context_filter()
    f2 = ContextRisk(
        f.risk, threshold=0.7, pool=f.pool, new_viewer_interactions=2, known_viewers=10
    )
    risky = int(np.flatnonzero(f.risk >= 0.7)[0])
    ui = sp.csr_matrix(([1.0, 1.0], ([0, 1], [risky, risky])), shape=(2, n))
    vb = ViewerBatch(np.array([3, 12]), ui, None)
    assert f.assign_cohorts(Catalog("items", n), vb).tolist() == [0, 0]
    # Viewer 3 is known to the model (id below known_viewers): not a new account.
    assert f2.assign_cohorts(Catalog("items", n), vb).tolist() == [-1, 0]
    # Many interactions: not new either.
    many = sp.csr_matrix(np.ones((1, n), np.float32))
    assert f.assign_cohorts(
        Catalog("items", n), ViewerBatch(np.array([20]), many, None)
    ).tolist() == [-1]
    # similar_users: the queried account is the profile being viewed.
    assert f.assign_cohorts(
        Catalog("users", n), ViewerBatch(np.array([risky]), None, None)
    ).tolist() == [0]


@_SLOW
@given(seed=st.integers(0, 2**31 - 1), n_plain=st.integers(3, 12), known=st.booleans())
def test_unknown_viewers_risky_follows_are_left_out_of_their_query(seed, n_plain, known):
    n = 30
    f0 = _context_filter(seed=seed)
    f = ContextRisk(
        f0.risk, threshold=0.7, pool=f0.pool, new_viewer_interactions=2, known_viewers=10
    )
    rng = np.random.default_rng(seed)
    risky = np.flatnonzero(f.risk >= 0.7)
    plain = np.flatnonzero(f.risk < 0.7)
    if not risky.size or plain.size < n_plain:
        return
    follows = np.concatenate([risky[:1], rng.choice(plain, n_plain, replace=False)])
    row = sp.csr_matrix((np.ones(follows.size, np.float32), follows, [0, follows.size]), (1, n))
    uid = 3 if known else 12
    strip = f.compile_queries(Catalog("items", n), ViewerBatch(np.array([uid]), row, None))
    if known:  # the model knows this viewer: its follows are its own business
        assert strip is None
        return
    assert strip is not None and set(strip.indices.tolist()) == {int(risky[0])}
    # The Guard scores the viewer as if the risky follow were not there.
    model = gr.FactorModel(rng.normal(size=(10, 4)), rng.normal(size=(n, 4)))
    guard = gr.Guard(model, gr.Policy([f]))
    kw = {"N": 8, "recalculate_user": True, "filter_already_liked_items": False}
    got, _ = guard.recommend(uid, row, **kw)
    rest = sp.csr_matrix(row.multiply(f.risk[None, :] < 0.7))
    rest.eliminate_zeros()
    want, _ = guard.recommend(uid, rest, **kw)
    assert got.tolist() == want.tolist()


@_SLOW
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 6))
def test_context_risk_guard_invariants(seed, m):
    from guardrails.testing import random_viewers

    f = _context_filter(seed=seed)
    check_guard_respects(f, Catalog("items", 30), random_viewers(30, 12, m, seed=seed))


def test_context_risk_rejects_bad_input():
    with pytest.raises(ValidationError):
        ContextRisk(np.zeros(5), threshold=0.5, pool=np.zeros(4, bool))
    with pytest.raises(ValidationError):
        ContextRisk(np.zeros(5), threshold=0.0, pool=np.zeros(5, bool))


# ---------------------------------------------------------------------------- the audit
@pytest.fixture(scope="module")
def small_family():
    """The first two small evaluation platforms x three model kinds, shipped default policy
    (about a minute). The seeds come from FAMILY_VERSION: a changed family is tested on
    fresh platforms."""
    return run_family(2, size="small", n_walkers=10, n_steps=4, num_threads=1)


def test_small_family_report_shape(small_family, tmp_path):
    r = small_family
    assert len(r["rows"]) == 2 * len(MODEL_KINDS)
    assert {row["kind"] for row in r["rows"]} == set(MODEL_KINDS)
    assert r["settings"]["split"] == "evaluation"
    json.dumps(r, default=float)
    assert [t["target"] for t in r["targets"]] == list(FAMILY_TARGETS)
    for t in r["targets"]:
        assert t["passed"] == (not t["broken"])
    text = format_family(r)
    assert "worst" in text and "recall_ratio" in text and "adult-pair hits kept" in text
    assert "benign_suppressed (adults' accounts)" in text
    for row in r["rows"]:
        assert 0.0 <= row["quality"]["benign_suppressed_adults"] <= 1.0
    md = format_family(r, markdown=True)
    assert md.startswith("| seed")
    pytest.importorskip("matplotlib")
    assert write_family_plot(r, tmp_path / "f.png") is not None


#: Safety targets checked on the small CI family (every platform, every model kind).
_CI_WORST_CASE = ("exposure", "self_shown", "minors_to_risky")
#: How far a pinned miss may move before the test fails: one slot of a slate of 10. The
#: models train on one thread with fixed seeds, but another CPU's BLAS can round ALS and
#: BPR differently, and a changed factor moves these shares in steps of whole slots.
_CI_SLACK = 0.10
#: Safety misses measured on the CI family of family-2 (position in the evaluation
#: stream, model kind) -> the measured value, which the row must not exceed by more than
#: _CI_SLACK. The first evaluation platform of family-2 (8,854 accounts, five
#: sub-networks, one unknown; also the first row of the 20-platform evaluation in
#: docs/audit.md) leaks with every model:
#: follow-a-handful and view-one walks reach 10-20% network share (a sub-network no seed
#: reaches, with few tagged sellers and small audiences). Its buyers no longer get
#: minors' accounts (ALS 50% and item-item 10% before the anchored minors' ties: a buyer
#: who follows nine children was tied to their friends through them). The misses belong
#: to the policy, not to the measure; they are pinned here so that a new miss, or a known
#: one getting worse, fails, and a row that starts meeting its target must be removed
#: from this list.
_CI_KNOWN_MISSES = {
    (0, "als"): {"exposure": 0.20},
    (0, "bpr"): {"exposure": 0.20},
    (0, "item"): {"exposure": 0.10},
}
#: Bounds the collateral stays within there (the point estimates; targets: recall kept
#: >= 0.98, benign suppression <= 1%). Measured on family-2's CI family: recall kept
#: x0.966-x1.008 (two rows below 0.98, none significantly: BPR rows rest on 216-248
#: unguarded hits), suppression at most 0.02%; these bounds catch a regression beyond
#: what was measured.
_CI_COLLATERAL = {"recall_ratio": 0.95, "benign_suppressed": 0.02}


def test_small_family_worst_case_targets(small_family):
    """``default_policy`` on the small CI family: the safety targets hold on every row but
    the pinned misses, which do not get worse, and the collateral stays within the
    measured bounds. The 20-platform family in docs/audit.md is where the misses are
    reported."""
    seeds = family_seeds(2)
    assert set(_CI_WORST_CASE) <= set(FAMILY_TARGETS)
    for t in small_family["targets"]:
        if t["target"] not in _CI_WORST_CASE:
            continue
        for b in t["broken"]:
            known = _CI_KNOWN_MISSES.get((seeds.index(b["seed"]), b["kind"]), {})
            assert t["target"] in known, (t["target"], b)
            assert b["value"] <= known[t["target"]] + _CI_SLACK, (t["target"], b)
    # A pinned miss that no longer misses must leave the list.
    broken = {
        (seeds.index(b["seed"]), b["kind"], t["target"])
        for t in small_family["targets"]
        for b in t["broken"]
    }
    for (pos, kind), targets in _CI_KNOWN_MISSES.items():
        for target in targets:
            assert (pos, kind, target) in broken, (pos, kind, target)
    d = small_family["distribution"]
    assert d["recall_ratio"]["worst"] >= _CI_COLLATERAL["recall_ratio"], d["recall_ratio"]
    assert d["benign_suppressed"]["worst"] <= _CI_COLLATERAL["benign_suppressed"], d[
        "benign_suppressed"
    ]
    # The recall ratio is reported with its interval and the hits it rests on.
    for row in small_family["rows"]:
        q = row["quality"]
        assert q["recall_ratio_low"] <= row["values"]["recall_ratio"] <= q["recall_ratio_high"]
        assert q["hits_unguarded"] >= 100 and q["n_held_out"] >= q["n_users"]
        # Adult pairs are a part of the hits, measured the same way.
        assert 0 < q["hits_adults_unguarded"] <= q["hits_unguarded"]
        assert q["hits_adults"] <= q["hits"]
        assert q["recall_ratio_adults"] == q["hits_adults"] / q["hits_adults_unguarded"]
        # The viewing-context collateral is a share of ordinary and of network accounts.
        assert 0.0 <= q["contexts_ordinary"] <= 1.0 and 0.0 <= q["contexts_network"] <= 1.0


def test_family_targets_name_the_platforms_that_break_them():
    report = {
        "rows": [
            {"seed": 1, "kind": "als", "values": dict.fromkeys(FAMILY_TARGETS, 0.0)},
            {"seed": 2, "kind": "bpr", "values": dict.fromkeys(FAMILY_TARGETS, 0.0)},
        ],
    }
    report["rows"][0]["values"]["recall_ratio"] = 1.0
    report["rows"][1]["values"]["recall_ratio"] = 0.9
    report["rows"][1]["values"]["exposure"] = 0.02
    report["distribution"] = {
        k: {"worst": 0.9 if k == "recall_ratio" else 0.02 if k == "exposure" else 0.0}
        for k in FAMILY_TARGETS
    }
    out = {t["target"]: t for t in family_targets(report)}
    assert not out["exposure"]["passed"] and out["exposure"]["broken"][0]["seed"] == 2
    assert not out["recall_ratio"]["passed"]
    assert out["self_shown"]["passed"]


def test_view_profiles_counts_a_profile_in_its_own_list():
    from guardrails.audit.guards import default_guard_policy

    p = make_family_platform(family_seeds(1, split="tuning")[0], size="small")
    model = fam.train_family_model(p, draw_model(1, "als"), num_threads=1)
    bare = view_profiles(gr.Guard(model, user_policy=None), p, n_views=10)
    # Unguarded, implicit puts the viewed account first in its own list.
    assert bare["self_shown"] == 1.0
    pol = default_guard_policy(p)
    guarded = gr.Guard(model, pol, user_policy="same")
    out = view_profiles(guarded, p, n_views=10)
    assert 0.0 <= out["self_shown"] <= 1.0 and out["similar_users"] is not None
    # A profile the policy cannot clear (in the context band) never lists itself.
    ctx = pol["context_risk"]
    band = np.flatnonzero(ctx.risk >= ctx.threshold)[:20]
    ids, _ = guarded.similar_items(band, N=11, viewer=p.n_accounts + np.arange(band.size))
    assert not np.any(ids == band[:, None])


def test_benign_suppression_counts_minors_accounts_apart_from_adults():
    # A guard that withholds exactly the minors' accounts suppresses benign accounts for
    # ordinary viewers (minors' accounts are benign), and none of the adults' accounts.
    from guardrails.audit.family_run import _suppressed_by_guard
    from guardrails.audit.metrics import ordinary_viewers

    p = make_family_platform(family_seeds(1, split="tuning")[0], size="small")
    model = fam.train_family_model(p, draw_model(1, "als"), num_threads=1)
    withhold = gr.Guard(model, gr.Policy([gr.filters.BlockItems(np.flatnonzero(p.vulnerable))]))
    viewers = ordinary_viewers(p, n=5, seed=0)
    out = _suppressed_by_guard(withhold, gr.Guard(model), p, viewers)
    assert out["mean"] > 0.0
    assert out["adults_mean"] == 0.0
    same = _suppressed_by_guard(gr.Guard(model), gr.Guard(model), p, viewers)
    assert same["mean"] == same["adults_mean"] == 0.0


def test_ban_history_adds_the_banned_seeds_follows_to_the_graph():
    """``with_ban_history``: the training graph plus the banned seeds' follows at the ban,
    binary; the default policy's signals keep the training graph alone, where a banned
    seed is isolated (and ``default_policy`` warns about it)."""
    from guardrails.audit.guards import default_guard_policy, with_ban_history

    stale = next(
        p
        for p in (make_family_platform(s, size="small") for s in family_seeds(12, split="tuning"))
        if p.banned_follows is not None
    )
    g = with_ban_history(stale)
    want = (stale.train + stale.banned_follows) > 0
    assert (g != want).nnz == 0 and set(np.unique(g.data)) == {1.0}
    gone = np.flatnonzero(~stale.active)
    assert stale.train[gone].nnz == 0 and stale.train[:, gone].nnz == 0
    with pytest.warns(gr.IsolatedSeedWarning):
        default_guard_policy(stale)
