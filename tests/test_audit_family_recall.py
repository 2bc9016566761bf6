"""The family's recall measure: held-out hits and the paired bootstrap interval of the ratio."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails.audit.family_run import (
    FAMILY_TARGETS,
    family_targets,
    format_family,
    recall_ratio_interval,
)
from guardrails.exceptions import ValidationError

_FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


def _recalls(rng, m, p=0.05):
    """Per-user recall of ``m`` users with one to five held-out follows each."""
    n_true = rng.integers(1, 6, m)
    hits = rng.binomial(n_true, p)
    return hits / n_true


def test_identical_slates_give_ratio_one_and_a_degenerate_interval():
    b = _recalls(np.random.default_rng(0), 2000)
    ci = recall_ratio_interval(b, b.copy())
    assert ci["ratio"] == 1.0
    assert ci["low"] == ci["high"] == 1.0
    assert ci["n_users"] == 2000 and ci["level"] == 0.95


def test_a_guard_that_drops_every_hit_gives_an_interval_at_zero():
    b = _recalls(np.random.default_rng(1), 2000)
    assert b.sum() > 0
    ci = recall_ratio_interval(np.zeros_like(b), b)
    assert ci["ratio"] == 0.0 and ci["low"] == ci["high"] == 0.0


def test_no_unguarded_hits_gives_no_ratio():
    ci = recall_ratio_interval(np.zeros(50), np.zeros(50))
    assert np.isnan(ci["ratio"]) and np.isnan(ci["low"]) and np.isnan(ci["high"])
    ci = recall_ratio_interval(np.empty(0), np.empty(0))
    assert np.isnan(ci["ratio"]) and ci["n_users"] == 0


def test_users_without_held_out_follows_are_dropped_from_both():
    b = np.array([0.5, np.nan, 1.0, 0.0])
    g = np.array([0.5, 1.0, 0.0, np.nan])
    ci = recall_ratio_interval(g, b)
    assert ci["n_users"] == 2 and ci["ratio"] == pytest.approx(0.5 / 1.5)


def test_interval_is_seeded_and_narrows_with_more_hits():
    rng = np.random.default_rng(2)
    widths = []
    for m in (500, 5000, 50000):
        b = _recalls(rng, m)
        # The guard loses each unguarded hit with probability 0.1 (paired: the same users).
        g = b * (rng.random(m) > 0.1)
        a, c = recall_ratio_interval(g, b, seed=7), recall_ratio_interval(g, b, seed=7)
        assert a == c
        assert a["low"] <= 0.9 <= a["high"] or m == 500
        widths.append(a["high"] - a["low"])
    assert widths[0] > widths[1] > widths[2] > 0


def _lose(n_users, n_hits, n_lost):
    """Unguarded: ``n_hits`` users with recall 1; guarded: the same, ``n_lost`` of them 0."""
    b = np.zeros(n_users)
    b[:n_hits] = 1.0
    g = b.copy()
    g[:n_lost] = 0.0
    return g, b


def test_a_real_loss_is_told_from_noise():
    """A guard that loses 5% of the hits: on 1,200 hits the interval lies below 0.98; on
    40 hits (the size of family-1's sample) it reaches above 0.98."""
    big = recall_ratio_interval(*_lose(30_000, 1200, 60))
    assert big["ratio"] == 0.95 and big["low"] < 0.95 < big["high"] < 0.98
    small = recall_ratio_interval(*_lose(1000, 40, 2))
    assert small["ratio"] == 0.95 and small["high"] > 0.98


@_FAST
@given(
    m=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    p=st.floats(0.0, 1.0),
    drop=st.floats(0.0, 1.0),
    gain=st.floats(0.0, 0.2),
)
def test_interval_contains_the_point_estimate(m, seed, p, drop, gain):
    rng = np.random.default_rng(seed)
    b = _recalls(rng, m, p)
    g = np.clip(b * (rng.random(m) >= drop) + gain * (rng.random(m) < gain), 0.0, 1.0)
    ci = recall_ratio_interval(g, b, n_boot=200, seed=seed)
    if b.sum() == 0:
        assert np.isnan(ci["ratio"])
        return
    assert ci["low"] <= ci["ratio"] <= ci["high"]
    assert ci["ratio"] == pytest.approx(g.sum() / b.sum())
    assert ci["low"] >= 0.0
    if np.all(g <= b):  # a guard that only loses hits: no resample keeps more than all
        assert ci["high"] <= 1.0
    if np.array_equal(g, b):
        assert ci["low"] == ci["high"] == 1.0


def test_bad_input_gets_a_typed_error():
    with pytest.raises(ValidationError):
        recall_ratio_interval(np.ones(3), np.ones(4))
    with pytest.raises(ValidationError):
        recall_ratio_interval(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValidationError):
        recall_ratio_interval(np.ones(3), np.ones(3), level=1.5)
    with pytest.raises(ValidationError):
        recall_ratio_interval(-np.ones(3), np.ones(3))
    with pytest.raises(ValidationError):
        recall_ratio_interval(np.ones(3), np.ones(3), n_boot=0)


def _row(seed, kind, ratio, low, high, hits=(90, 100)):
    values = dict.fromkeys(FAMILY_TARGETS, 0.0)
    values["recall_ratio"] = ratio
    return {
        "seed": seed,
        "kind": kind,
        "model": {"model": kind},
        "platform": {
            "n_accounts": 5000,
            "n_subnetworks": 1,
            "unknown_subnetworks": 0,
            "n_known_seeds": 3,
        },
        "values": values,
        "quality": {
            "hits": hits[0],
            "hits_unguarded": hits[1],
            "recall_ratio_low": low,
            "recall_ratio_high": high,
        },
    }


def test_misses_are_judged_on_the_point_estimate_and_significant_ones_counted():
    rows = [
        _row(1, "als", 1.0, 0.99, 1.01),
        _row(2, "bpr", 0.95, 0.90, 1.00),  # a miss, not significant
        _row(3, "als", 0.90, 0.85, 0.95),  # a significant miss
        _row(4, "bpr", 0.979, 0.97, 0.981),  # a miss by the point estimate, not significant
    ]
    report = {
        "rows": rows,
        "settings": {"recall_interval": {"level": 0.95}},
        "distribution": {
            k: {"median": 0.0, "p90": 0.0, "worst": 0.9 if k == "recall_ratio" else 0.0}
            for k in FAMILY_TARGETS
        },
    }
    report["distribution"]["recall_ratio"]["worst_interval"] = [0.85, 0.95]
    t = {t["target"]: t for t in family_targets(report)}["recall_ratio"]
    assert not t["passed"]
    assert [b["seed"] for b in t["broken"]] == [2, 3, 4]
    assert [b["seed"] for b in t["significant"]] == [3]
    assert t["broken"][1]["low"] == 0.85 and t["broken"][1]["hits_unguarded"] == 100
    report["targets"] = list(family_targets(report))
    text = format_family(report)
    assert "recall 95% CI" in text and "[0.850, 0.950]" in text and "90/100" in text
    assert "significant" in text and "1/4" in text
    md = format_family(report, markdown=True)
    assert md.splitlines()[0].count("|") == md.splitlines()[2].count("|")


def test_rows_without_an_interval_keep_the_old_table():
    row = _row(1, "als", 1.0, 1.0, 1.0)
    row.pop("quality")
    report = {
        "rows": [row],
        "distribution": {k: {"median": 0.0, "p90": 0.0, "worst": 1.0} for k in FAMILY_TARGETS},
    }
    report["targets"] = family_targets(report)
    assert "CI" not in format_family(report)
    assert family_targets(report)[3]["significant"] == []


def test_cli_family_reports_the_interval_and_the_significant_misses(monkeypatch, tmp_path):
    """``audit --family``: the table carries the interval and the hits, and the exit
    message says how many recall misses are significant (run_family replaced by a report
    of known rows, so the CLI's own part is what is checked)."""
    from click.testing import CliRunner

    import guardrails.audit.family_run as fr
    from guardrails.cli import main

    rows = [_row(1, "als", 0.95, 0.90, 1.00), _row(2, "bpr", 0.90, 0.85, 0.95)]

    def fake_run_family(n, **_kw):
        report = {
            "rows": rows[:n],
            "settings": {"recall_interval": {"level": 0.95}},
            "distribution": {
                k: {
                    "median": 0.0,
                    "p90": 0.0,
                    "worst": min(r["values"][k] for r in rows[:n]) if k == "recall_ratio" else 0.0,
                }
                for k in FAMILY_TARGETS
            },
        }
        report["targets"] = family_targets(report)
        return report

    monkeypatch.setattr(fr, "run_family", fake_run_family)
    res = CliRunner().invoke(
        main, ["audit", "--family", "2", "--out", str(tmp_path), "--no-plots", "--quiet"]
    )
    assert res.exit_code == 1, res.output
    assert "recall_ratio (1 significant of 2)" in res.output
    assert "[0.850, 0.950]" in (tmp_path / "family.md").read_text()


def test_adult_pair_hits_leave_out_minor_viewers_and_minors_accounts():
    """Of the hits, the adult pairs are those where neither the viewer nor the followed
    account is a minor's."""
    from types import SimpleNamespace

    from guardrails.audit.family_run import _recall_hits

    n = 8
    minors = np.zeros(n, bool)
    minors[[1, 5]] = True
    held = sp.csr_matrix((np.ones(5, np.float32), ([0, 0, 1, 2, 2], [3, 5, 4, 6, 7])), shape=(n, n))
    platform = SimpleNamespace(train=sp.csr_matrix((n, n)), held_out=held, vulnerable=minors)
    slates = {0: [3, 5, 2], 1: [4, 0, 2], 2: [6, -1, -1]}

    class Fixed:
        def recommend(self, users, rows, N):
            return np.array([slates[int(u)][:N] for u in users]), None

    rec, hits, adult = _recall_hits(Fixed(), platform, np.array([0, 1, 2]), 3)
    # User 0 hits 3 and 5 (5 is a minor's), user 1 (a minor) hits 4, user 2 hits 6.
    np.testing.assert_array_equal(hits, [2, 1, 1])
    np.testing.assert_array_equal(adult, [1, 0, 1])
    np.testing.assert_allclose(rec, [1.0, 1.0, 0.5])


def test_context_shares_count_the_context_filters_marks():
    """Ordinary and network accounts at or above a ContextRisk filter's threshold, over
    every such filter of the policy; NaN without one."""
    from types import SimpleNamespace

    import guardrails as gr
    from guardrails.audit.family_run import context_shares

    n = 10
    risk = np.zeros(n)
    risk[[0, 1, 6]] = 0.5
    other = np.zeros(n)
    other[2] = 0.9
    pool = np.ones(n, bool)
    ordinary = np.zeros(n, bool)
    ordinary[:5] = True  # accounts 0-4; 0, 1 and 2 are marked
    network = np.zeros(n, bool)
    network[5:8] = True  # accounts 5-7; 6 is marked
    platform = SimpleNamespace(
        n_accounts=n,
        ordinary=ordinary,
        active=np.ones(n, bool),
        vulnerable=np.zeros(n, bool),
        network=network,
    )
    policy = gr.Policy(
        [
            gr.filters.ContextRisk(risk, threshold=0.4, pool=pool, name="a"),
            gr.filters.ContextRisk(other, threshold=0.8, pool=pool, name="b"),
        ]
    )
    got = context_shares(policy, platform)
    assert got == {"ordinary": 3 / 5, "network": 1 / 3}
    none = context_shares(gr.Policy([gr.filters.BlockItems([0])]), platform)
    assert np.isnan(none["ordinary"]) and np.isnan(none["network"])


def test_profile_lists_kept_is_the_share_of_the_unguarded_list_still_shown():
    """An ordinary profile's unguarded similar_items list (itself left out) against the
    guarded one: an empty policy keeps everything; blocking accounts removes exactly the
    blocked share; the marked profiles are averaged apart."""
    from types import SimpleNamespace

    import guardrails as gr
    from guardrails.audit.family_run import profile_lists_kept

    rng = np.random.default_rng(0)
    n, k, N = 40, 4, 5
    model = gr.FactorModel(rng.normal(size=(n, k)), rng.normal(size=(n, k)))
    ordinary = np.zeros(n, bool)
    ordinary[:30] = True
    vulnerable = np.zeros(n, bool)
    vulnerable[0] = True  # a minor's account: never sampled
    platform = SimpleNamespace(
        n_accounts=n, ordinary=ordinary, active=np.ones(n, bool), vulnerable=vulnerable
    )
    bare = gr.Guard(model)
    same = profile_lists_kept(gr.Guard(model), bare, platform, n_profiles=50, N=N)
    assert same["all"] == 1.0 and np.isnan(same["marked"]) and same["n_marked"] == 0
    blocked = np.arange(30, 40)
    marked = np.zeros(n, bool)
    marked[[1, 2, 3]] = True
    guard = gr.Guard(model, gr.Policy([gr.filters.BlockItems(blocked)]))
    got = profile_lists_kept(guard, bare, platform, marked, n_profiles=50, N=N)
    want = []
    for item in range(1, 30):
        ids, _ = bare.similar_items(item, N=N + 1)
        base = ids[ids != item][:N]
        want.append(1.0 - np.isin(base, blocked).mean())
    assert got["all"] == pytest.approx(np.mean(want))
    assert got["marked"] == pytest.approx(np.mean(want[:3]))
    assert got["n_marked"] == 3


def test_new_account_recall_serves_users_under_new_ids():
    """Users served from their own follows under ids beyond the model's users (factors
    folded in): an empty policy keeps everything; a block list keeps what the same
    new-account calls keep; no users gives NaN."""
    from types import SimpleNamespace

    import guardrails as gr
    from guardrails.audit.family_run import new_account_recall
    from guardrails.audit.metrics import recall_at_k

    rng = np.random.default_rng(3)
    n, k = 50, 4
    model = gr.FactorModel(rng.normal(size=(n, k)), rng.normal(size=(n, k)))
    train = sp.random(n, n, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    train.data[:] = 1.0
    held = sp.random(n, n, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    held.data[:] = 1.0
    platform = SimpleNamespace(n_accounts=n, train=train, held_out=held)
    users = np.arange(0, 40, 2)
    bare = gr.Guard(model)
    assert new_account_recall(gr.Guard(model), bare, platform, users)["ratio"] == 1.0
    blocked = np.arange(0, n, 3)
    guard = gr.Guard(model, gr.Policy([gr.filters.BlockItems(blocked)]))
    got = new_account_recall(guard, bare, platform, users, N=5)
    ids = n + np.arange(users.size)
    want = [
        np.nanmean(
            recall_at_k(
                g.recommend(ids, train[users], N=5, recalculate_user=True)[0], held[users], 5
            )
        )
        for g in (guard, bare)
    ]
    assert got["ratio"] == pytest.approx(want[0] / want[1]) and got["n_users"] == users.size
    # The new ids are not the known users': a known user's stored factors would differ.
    known = np.nanmean(recall_at_k(guard.recommend(users, train[users], N=5)[0], held[users], 5))
    assert want[0] != known or want[1] != np.nanmean(
        recall_at_k(bare.recommend(users, train[users], N=5)[0], held[users], 5)
    )
    assert np.isnan(new_account_recall(guard, bare, platform, users[:0])["ratio"])
