"""Policy semantics: precedence, modes, shadow, surfaces, holdback, decisions, defaults."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.exceptions import FailClosedError, ValidationError
from guardrails.filters import (
    BlockLabeled,
    CohortRule,
    DemoteRisk,
    ShareCap,
    SuppressNeighborhood,
    SuppressRisk,
    ViewerCircuitBreaker,
)
from guardrails.filters.base import Catalog, ViewerBatch
from guardrails.policy import Holdback, Policy, _CallCache, default_policy
from guardrails.testing import builtin_filters

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
NU, NI, F = 24, 40, 5


def _model(seed=0, nu=NU, ni=NI):
    rng = np.random.default_rng(seed)
    return gr.FactorModel(rng.normal(size=(nu, F)), rng.normal(size=(ni, F)))


def _ui(m, seed, density=0.1):
    return sp.random(m, NI, density=density, format="csr", random_state=seed, dtype=np.float32)


def _named(filters):
    out = []
    for j, f in enumerate(filters):
        f.name = f"{f.name}_{j}"
        out.append(f)
    return out


policies = st.lists(builtin_filters(NI, NU), min_size=1, max_size=4).map(_named)


@SETTINGS
@given(
    filters=policies,
    seed=st.integers(0, 1000),
    surface=st.sampled_from([None, "feed", "suggested_accounts"]),
)
def test_strictest_action_wins_and_nothing_dropped_is_served(filters, seed, surface):
    pol = Policy(filters)
    g = gr.Guard(_model(seed), pol)
    users = np.arange(NU)
    ui = _ui(NU, seed)
    r = g.recommend_detailed(users, ui, N=6, surface=surface, record=True)
    cp = pol.compiled(Catalog("items", NI))
    cache = _CallCache(ViewerBatch(users, ui, surface, NU))
    enf = cp.active(surface)[0]
    rr, cc = np.nonzero(r.ids >= 0)
    items = r.ids[rr, cc]
    for i in enf:
        act, _ = cp.pair_actions(cache, i, rr, items)
        assert (act < 2).all(), pol.settings[i].name
    # Explanations agree: the served action is the strictest of the enforced verdicts.
    for u in range(0, NU, 7):
        for it in (0, 13, 27):
            ex = g.explain(u, it, user_items=ui[u], surface=surface)
            codes = {"allow": 0, "demote": 1, "drop": 2}
            enforced = [
                codes[v.action]
                for v, s in zip(ex.verdicts, pol.settings, strict=True)
                if v.mode == "enforce" and s.applies(surface)
            ]
            assert codes[ex.action] == max(enforced, default=0)
            if ex.action != "allow":
                first = next(
                    v
                    for v in ex.verdicts
                    if v.mode == "enforce" and codes[v.action] == codes[ex.action]
                )
                assert ex.deciding_filter == first.filter


@SETTINGS
@given(filters=policies, seed=st.integers(0, 1000))
def test_every_missing_id_is_explained_by_a_decision(filters, seed):
    g = gr.Guard(_model(seed), Policy(filters))
    plain = gr.Guard(_model(seed))
    users = np.arange(NU)
    ui = _ui(NU, seed)
    r = g.recommend_detailed(users, ui, N=7, record=True)
    base, _ = plain.recommend(users, ui, N=7)
    assert all(d.action != "displaced" for d in r.decisions)
    for u in users:
        missing = set(base[u][base[u] >= 0].tolist()) - set(r.ids[u].tolist())
        explained = {
            d.item for d in r.decisions if d.row == u and not d.in_slate and d.mode == "enforce"
        }
        assert missing <= explained, (u, missing - explained)
        for d in r.decisions:
            assert d.policy_version == g.policy_version
            if d.in_slate:
                assert d.action == "demote" and d.item in r.ids[d.row]


@SETTINGS
@given(filters=policies, seed=st.integers(0, 1000))
def test_shadow_mode_is_byte_identical_and_records_enforcement(filters, seed):
    pol = Policy(filters)
    users = np.arange(NU)
    ui = _ui(NU, seed)
    shadow = gr.Guard(_model(seed), pol.with_mode("shadow"))
    plain = gr.Guard(_model(seed))
    enforce = gr.Guard(_model(seed), pol)
    rs = shadow.recommend_detailed(users, ui, N=6, record=True)
    ids, scores = plain.recommend(users, ui, N=6)
    assert rs.ids.tobytes() == ids.tobytes() and rs.scores.tobytes() == scores.tobytes()
    re_ = enforce.recommend_detailed(users, ui, N=6, record=True)

    def key(ds):
        return {(d.row, d.item, d.filter, d.action, d.in_slate) for d in ds}

    shadow_dec = [d for d in rs.decisions if d.mode == "shadow"]
    assert key(shadow_dec) == key(re_.decisions)
    # What would be removed is counted even without per-item records.
    would = sum(v for k, v in rs.info.items() if k.endswith("/would_remove"))
    removed = sum(1 for d in re_.decisions if not d.in_slate)
    assert would == removed


def test_per_filter_modes_and_kill_switch():
    risk = np.linspace(0, 1, NI).astype(np.float32)
    a = SuppressRisk(risk, threshold=0.5)
    b = DemoteRisk(risk, weight=3.0)
    users, ui = np.arange(NU), _ui(NU, 1)
    full = gr.Guard(_model(), Policy([a, b]))
    only_a = gr.Guard(_model(), Policy([a]))
    b_shadow = gr.Guard(_model(), Policy([a, b], filter_modes={"demote_risk": "shadow"}))
    b_off = gr.Guard(_model(), Policy([a, b], filter_modes={"demote_risk": "off"}))
    ref = only_a.recommend(users, ui, N=5)[0]
    assert np.array_equal(b_shadow.recommend(users, ui, N=5)[0], ref)
    assert np.array_equal(b_off.recommend(users, ui, N=5)[0], ref)
    assert not np.array_equal(full.recommend(users, ui, N=5)[0], ref)
    killed = gr.Guard(_model(), Policy([a, b], mode="off"))
    assert np.array_equal(
        killed.recommend(users, ui, N=5)[0], gr.Guard(_model()).recommend(users, ui, N=5)[0]
    )
    versions = {
        Policy([a, b]).version,
        Policy([a, b], mode="shadow").version,
        Policy([a, b], mode="off").version,
        Policy([a, b], filter_modes={"demote_risk": "shadow"}).version,
    }
    assert len(versions) == 4
    assert Policy([a, b]).version == Policy([a, b]).version
    with pytest.raises(ValidationError, match="filter_modes"):
        Policy([a], filter_modes={"nope": "off"})
    with pytest.raises(ValidationError, match="distinct names"):
        Policy([a, SuppressRisk(risk, threshold=0.9)])


def test_surfaces_make_discovery_stricter():
    risk = np.linspace(0, 1, NI).astype(np.float32)
    strict = SuppressRisk(risk, threshold=0.3)
    strict.surfaces = ("suggested_accounts", "similar_accounts")
    base = SuppressRisk(risk, threshold=0.9)
    base.name = "base"
    g = gr.Guard(_model(), Policy([base, strict]))
    users, ui = np.arange(NU), _ui(NU, 2)
    feed, _ = g.recommend(users, ui, N=5, surface="feed")
    sugg, _ = g.recommend(users, ui, N=5, surface="suggested_accounts")
    anyw, _ = g.recommend(users, ui, N=5)
    assert (risk[sugg] < 0.3).all() and (risk[anyw] < 0.3).all()
    assert (risk[feed] < 0.9).all() and (risk[feed] >= 0.3).any()
    sim, _ = g.similar_items(np.arange(5), N=5, surface="similar_accounts")
    assert (risk[sim] < 0.3).all()


def test_holdback_exempts_a_stable_fraction_from_named_filters_only():
    risk = np.linspace(0, 1, NI).astype(np.float32)
    keep = SuppressRisk(risk, threshold=0.8)
    keep.name = "keep"
    demote = DemoteRisk(risk, weight=5.0)
    hb = Holdback(0.5, salt="exp-1", filters=["demote_risk"])
    pol = Policy([keep, demote], holdback=hb)
    users = np.arange(200)
    model = _model(nu=200)
    ui = sp.random(200, NI, density=0.1, format="csr", random_state=3, dtype=np.float32)
    held = hb.held(users, users.size)
    assert 0.35 < held.mean() < 0.65
    assert np.array_equal(held, hb.held(users, users.size))
    r = gr.Guard(model, pol).recommend_detailed(users, ui, N=5, record=True)
    full = gr.Guard(model, Policy([keep, demote])).recommend(users, ui, N=5)[0]
    without = gr.Guard(model, Policy([keep])).recommend(users, ui, N=5)[0]
    assert np.array_equal(r.ids[held], without[held])
    assert np.array_equal(r.ids[~held], full[~held])
    assert any(d.mode == "holdback" for d in r.decisions)
    single = gr.Guard(model, pol).recommend(
        int(np.flatnonzero(held)[0]), ui[np.flatnonzero(held)[0]], N=5
    )[0]
    assert np.array_equal(single, r.ids[np.flatnonzero(held)[0]])
    with pytest.raises(ValidationError, match="protected"):
        Policy(
            [BlockLabeled(["csam"], labels={"csam": np.zeros(NI, bool)})],
            holdback=Holdback(0.1, salt="x", filters=["block_labeled"]),
        )


def test_failing_filter_is_named_and_fails_closed():
    class Broken(gr.filters.Filter):
        name = "broken"

        def compile_global(self, catalog):
            raise RuntimeError("labels table unreachable")

    with pytest.raises(FailClosedError, match="broken"):
        gr.Guard(_model(), [Broken()])
    b = Broken()
    b.failure = "fail_open"
    with pytest.warns(gr.GuardrailsWarning):
        gr.Guard(_model(), [b])

    class BadShape(gr.filters.Filter):
        name = "bad_shape"

        def compile_global(self, catalog):
            from guardrails.core.plan import PlanPart

            return PlanPart(self.name, "x", penalty=-np.ones(catalog.n, np.float32))

    with pytest.raises(ValidationError, match="non-negative"):
        gr.Guard(_model(), [BadShape()])


def test_cohort_batches_equal_single_calls_and_counters():
    vc = np.arange(NU) % 3 - 1
    cc = np.arange(NI) % 2
    f = CohortRule(vc, cc, [["allow", "drop"], ["drop", "allow"]])
    g = gr.Guard(_model(), [f, ShareCap(max_share=0.4, communities=np.arange(NI) % 5)])
    users = np.r_[np.arange(NU), NU + 4]
    ui = _ui(users.size, 9)
    batch, bs = g.recommend(users, ui, N=6, recalculate_user=True)
    for r, u in enumerate(users):
        one, os_ = g.recommend(int(u), ui[r], N=6, recalculate_user=True)
        assert np.array_equal(one, batch[r][batch[r] >= 0])
        assert np.array_equal(os_, bs[r][batch[r] >= 0])
    c = g.decision_counters()
    assert c["calls"] == 1 + users.size and c["cohort_rule/viewers"] > 0


def test_guard_with_policy_pickles():
    risk = np.linspace(0, 1, NI).astype(np.float32)
    g = gr.Guard(
        _model(), Policy([SuppressNeighborhood(risk, threshold=0.5), ViewerCircuitBreaker(risk)])
    )
    g.recommend(np.arange(3), _ui(3, 1), N=4)
    g2 = pickle.loads(pickle.dumps(g))
    assert np.array_equal(
        g2.recommend(np.arange(3), _ui(3, 1), N=4)[0], g.recommend(np.arange(3), _ui(3, 1), N=4)[0]
    )
    assert g2.decision_counters()["calls"] == 2  # one carried over, one new


def _planted(seed=0, nu=300, ni=300, k=30):
    """``k`` random accounts form a flagged ring densely followed by a cluster of users."""
    rng = np.random.default_rng(seed)
    x = rng.random((nu, ni)) < 0.02
    ring = rng.choice(ni, size=k, replace=False)
    ring_users = rng.choice(nu, size=nu // 6, replace=False)
    x[np.ix_(ring_users, ring)] |= rng.random((ring_users.size, k)) < 0.4
    return sp.csr_matrix(x.astype(np.float32)), ring


def test_default_policy_protects_a_test_account_out_of_the_box():
    import implicit

    x, ring = _planted()
    seeds = ring[:5]  # only a few of the ring are known
    als = implicit.cpu.als.AlternatingLeastSquares(
        factors=16, iterations=8, random_state=0, num_threads=1
    )
    als.fit(x, show_progress=False)
    pol = default_policy(seeds=seeds, interactions=x)
    assert isinstance(pol, Policy) and pol.version
    g = gr.Guard(als, pol)
    plain = gr.Guard(als)
    # A test account follows three known seeds, then keeps following what it is shown.
    follows = list(seeds[:3])
    exposed_plain = exposed = 0
    for _ in range(4):
        row = sp.csr_matrix(
            (np.ones(len(follows), np.float32), follows, [0, len(follows)]), shape=(1, x.shape[1])
        )
        ids, _ = g.recommend(
            x.shape[0] + 1, row, N=10, recalculate_user=True, surface="suggested_accounts"
        )
        pids, _ = plain.recommend(x.shape[0] + 1, row, N=10, recalculate_user=True)
        exposed += np.isin(ids, ring).sum()
        exposed_plain += np.isin(pids, ring).sum()
        assert ids.size == 10
        follows += [int(i) for i in ids[:2] if int(i) not in follows]
    assert exposed_plain >= 10
    assert exposed <= 0.1 * exposed_plain
    # Graph input and precomputed risk work too.
    co = (x.T @ x).tocsr()
    assert len(default_policy(seeds=seeds, graph=co)) >= 4
    assert len(default_policy(risk=np.zeros(x.shape[1]))) >= 4
    with pytest.raises(ValidationError, match="'risk' parameter of default_policy"):
        default_policy(seeds=seeds)


def test_default_policy_with_cohorts_and_labels():
    x, ring = _planted(1, nu=60, ni=60, k=6)
    vc = np.arange(60) % 2
    cc = (np.arange(60) % 3 == 0).astype(int)
    pol = default_policy(
        seeds=ring,
        interactions=x,
        viewer_cohorts=vc,
        candidate_cohorts=cc,
        cohort_matrix=[["allow", "allow"], ["drop", "allow"]],
        cohort_labels=(["adult", "minor"], ["adult", "minor"]),
        snapshot_labels=True,
    )
    names = [s.name for s in pol.settings]
    assert names[0] == "block_labeled" and "cohort_rule" in names
    assert pol.settings[0].protected
    with pytest.raises(FailClosedError):
        gr.Guard(_model(nu=60, ni=60), pol)  # labels asked for, no snapshot: refuse


class _Strips(gr.filters.Filter):
    """A query filter that leaves out exactly the given cells."""

    name = "strips"

    def __init__(self, cells):
        self.cells = cells

    def compile_queries(self, catalog, viewers):
        return self.cells


@SETTINGS
@given(seed=st.integers(0, 10_000), shuffled=st.booleans(), outside=st.booleans())
def test_a_filter_may_leave_out_only_the_viewers_interactions(seed, shuffled, outside):
    from guardrails.filters._contract import compile_queries

    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 6))
    ui = _ui(m, seed, density=0.2)
    cells = ui.toarray() != 0
    strip = cells & (rng.random(cells.shape) < 0.5)
    if outside and (~cells).any():
        free = np.argwhere(~cells)
        r, c = free[rng.integers(len(free))]
        strip[r, c] = True
    else:
        outside = False
    if shuffled:  # the viewers' rows with unsorted column indices
        order = np.concatenate(
            [ui.indptr[r] + rng.permutation(ui.indptr[r + 1] - ui.indptr[r]) for r in range(m)]
        ).astype(np.int64)
        ui = sp.csr_matrix((ui.data[order], ui.indices[order], ui.indptr), shape=ui.shape)
    viewers = ViewerBatch(np.arange(m), ui)
    f = _Strips(sp.csr_matrix(strip.astype(np.float32)))
    if outside:
        with pytest.raises(ValidationError, match="outside the viewers' interactions"):
            compile_queries(f, Catalog("items", NI), viewers, f.name)
        return
    out = compile_queries(f, Catalog("items", NI), viewers, f.name)
    if strip.any():
        np.testing.assert_array_equal(out.toarray() != 0, strip)
    else:
        assert out is None


class _ProfileStrips(gr.filters.Filter):
    """A profile query filter that leaves out exactly the given cells."""

    name = "profile_strips"

    def __init__(self, cells):
        self.cells = cells

    def compile_profile_queries(self, catalog, viewers):
        return self.cells


class _ReadsInteractions(_Strips):
    """A query filter written for recommend: it reads the interactions."""

    def compile_queries(self, catalog, viewers):
        return viewers.user_items.multiply(0)


def test_a_profile_batch_asks_only_profile_query_filters():
    """Without interactions (``similar_items``) a viewer's query is the viewed profile:
    a profile query filter may leave that cell out, and no other; a query filter written
    for ``recommend`` is never handed the batch."""
    from guardrails.filters._contract import compile_queries

    ctx = sp.csr_matrix((np.ones(3, np.float32), [4, 9, 4], [0, 1, 2, 3]), shape=(3, NI))
    viewers = ViewerBatch(None, None, None, 3, ctx)
    ok = sp.csr_matrix((np.ones(1, np.float32), [9], [0, 0, 1, 1]), shape=(3, NI))
    out = compile_queries(_ProfileStrips(ok), Catalog("items", NI), viewers, "s")
    np.testing.assert_array_equal(out.toarray(), ok.toarray())
    bad = sp.csr_matrix((np.ones(1, np.float32), [5], [0, 1, 1, 1]), shape=(3, NI))
    with pytest.raises(ValidationError, match="outside the viewers' interactions"):
        compile_queries(_ProfileStrips(bad), Catalog("items", NI), viewers, "s")
    assert compile_queries(_ReadsInteractions(ok), Catalog("items", NI), viewers, "s") is None
    # And a recommend batch never asks a profile query filter.
    rec = ViewerBatch(np.arange(3), ctx)
    assert compile_queries(_ProfileStrips(ok), Catalog("items", NI), rec, "s") is None
