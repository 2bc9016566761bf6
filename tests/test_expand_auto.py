"""method="auto": choice by validation on the seeds, determinism, provenance, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import guardrails as gr
import guardrails.expand as ex
from guardrails.exceptions import ValidationError
from guardrails.expand._auto import average_precision


def planted_partition(sizes, p_in, p_out, seed):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    n = lab.size
    P = np.where(lab[:, None] == lab[None, :], p_in, p_out)
    U = np.triu(rng.random((n, n)) < P, 1)
    A = sp.csr_matrix((U | U.T).astype(np.float32))
    return A, lab


def unseen_ap(scores, group, seeds):
    pos = np.setdiff1d(np.flatnonzero(group), seeds)
    return average_precision(scores, pos, seeds)


# Derandomized (the examples CI runs, every run): the property is statistical. On 600
# random draws of this domain outside Hypothesis, auto fell more than 0.01 below the best
# fixed candidate twice (0.3%): once by leaving the prior (plain@0.95, 0.066 below; the
# held-out seeds ranked consistently higher under it, the unseen members lower), once
# where the prior itself was 0.013 below. Random local runs would fail about 1 in 10.
@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    blocks=st.integers(2, 4),
    size=st.integers(20, 60),
    p_in=st.floats(0.2, 0.6),
    ratio=st.floats(0.01, 0.15),
    seed=st.integers(0, 10_000),
)
# Found on random runs: validation put plain@0.95 ahead of the prior, whose unseen
# members ranked better (0.989 against 1.0).
@example(blocks=4, size=37, p_in=0.40625, ratio=0.03125, seed=536)
def test_auto_is_never_far_below_the_best_fixed_candidate(blocks, size, p_in, ratio, seed):
    """On planted partitions auto never picks a scorer more than 0.01 (average precision
    of the unseen members) below the best fixed one.

    Over sizes 20-60 and densities p_in 0.2-0.6, p_out / p_in up to 0.15, where a
    block's members have at least 6 expected neighbours inside it: sparser than that,
    the best fixed candidate in hindsight beats every single candidate, the prior
    included, by chance on some draws (0.125 on 20-node blocks at p_in 0.23)."""
    assume(p_in * (size - 1) >= 6)
    A, lab = planted_partition([size] * blocks, p_in, p_in * ratio, seed)
    group = lab == 0
    rng = np.random.default_rng([seed, 1])  # not the graph's own stream
    seeds = np.sort(rng.choice(np.flatnonzero(group), max(5, size // 4), replace=False))
    g = ex.RiskGraph(A)
    auto = unseen_ap(g.propagate(seeds, raw=True), group, seeds)
    chosen = g.selection_[0]
    fixed = {
        m: unseen_ap(g.propagate(seeds, method=m, raw=True), group, seeds) for m in g.candidates()
    }
    assert chosen.method in fixed
    assert auto >= max(fixed.values()) - 0.01, (chosen, fixed)


def test_auto_is_deterministic_and_records_its_choice():
    A, lab = planted_partition([40, 40, 40], 0.3, 0.03, 1)
    seeds = {"a": np.flatnonzero(lab == 0)[:12], "b": np.flatnonzero(lab == 1)[:3]}
    g1, g2 = ex.RiskGraph(A), ex.RiskGraph(A)
    r1 = g1.propagate(seeds, random_state=7)
    r2 = g2.propagate(seeds, random_state=7)
    np.testing.assert_array_equal(r1, r2)
    assert g1.selection_ == g2.selection_
    a, b = g1.selection_
    # 12 seeds: validated (5 folds), every candidate scored; 3 seeds: the documented fallback.
    assert not a.fallback and a.n_folds == 5 and a.n_seeds == 12
    assert set(a.scores) == set(g1.candidates()) and a.method in a.scores
    assert all(0.0 <= v <= 1.0 for v in a.scores.values())
    assert b.fallback and b.method == "degree@0.95" == g1.candidates()[0]
    assert b.scores == {} and b.n_seeds == 3 and b.n_folds == 0
    # the fallback is the prior's order on the graph's own PageRank's values
    raw_b = g1.propagate(seeds, random_state=7, raw=True)[:, 1]
    prior_b = g1.propagate(seeds["b"], method=b.method, raw=True)
    own_b = g1.propagate(seeds["b"], method="ppr", raw=True)
    o = np.argsort(prior_b, kind="stable")
    assert np.all(np.diff(raw_b[o]) >= -1e-6)
    np.testing.assert_allclose(np.sort(raw_b), np.sort(own_b), atol=1e-4)
    # the chosen candidate orders the nodes; the graph's own PageRank gives the values
    chosen = g1.propagate(seeds["a"], method=a.method, raw=True)
    own = g1.propagate(seeds["a"], method="ppr", raw=True)
    raw = g1.propagate(seeds, random_state=7, raw=True)[:, 0]
    o = np.argsort(chosen, kind="stable")
    assert np.all(np.diff(raw[o]) >= -1e-6)
    rest = np.setdiff1d(np.arange(A.shape[0]), seeds["a"])
    assert abs(int((raw[rest] >= 0.1).sum()) - int((own >= 0.1).sum())) <= seeds["a"].size
    # the one-call form agrees
    np.testing.assert_array_equal(ex.propagate(A, seeds, random_state=7), r1)


def core_periphery(seed, n_core=30, n_periphery=300):
    """A dense core (the group) that every peripheral account links to twice."""
    rng = np.random.default_rng(seed)
    n = n_core + n_periphery
    U = np.zeros((n, n), bool)
    U[:n_core, :n_core] = rng.random((n_core, n_core)) < 0.6
    for i in range(n_core, n):
        U[i, rng.choice(n_core, 2, replace=False)] = True
        U[i, n_core + rng.choice(n_periphery, 2, replace=False)] = True
    U = np.triu(U | U.T, 1)
    return sp.csr_matrix((U | U.T).astype(np.float32)), np.arange(n) < n_core


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_leaves_the_prior_when_the_seeds_show_it_fails(seed):
    # Degree normalisation dilutes a dense core that everybody links to (its members
    # have many neighbours, few of them flagged): the seeds show it, and auto switches.
    A, group = core_periphery(seed)
    seeds = np.sort(np.random.default_rng([seed, 1]).choice(30, 10, replace=False))
    g = ex.RiskGraph(A)
    r = g.propagate(seeds, raw=True)
    sel = g.selection_[0]
    assert not sel.method.startswith("degree")
    assert sel.scores[sel.method] > sel.scores["degree@0.95"]
    prior = unseen_ap(g.propagate(seeds, method="degree@0.95", raw=True), group, seeds)
    assert unseen_ap(r, group, seeds) > 0.85 > 0.2 > prior


def test_risk_scale_kept_by_every_candidate():
    A, _ = planted_partition([30, 30], 0.3, 0.05, 2)
    g = ex.RiskGraph(A)
    w = np.linspace(0.2, 1.0, 8).astype(np.float32)
    for m in ("auto", *g.candidates()):
        r = g.propagate(np.arange(8), weights=w, method=m)
        assert r.dtype == np.float32 and np.all((r >= 0) & (r <= 1))
        assert np.all(r[:8] >= w - 1e-5), m


def test_candidates_can_be_restricted_and_are_checked():
    A, lab = planted_partition([30, 30], 0.3, 0.05, 4)
    g = ex.RiskGraph(A)
    seeds = np.flatnonzero(lab == 0)[:10]
    g.propagate(seeds, candidates=["onehop", "plain@0.5"])
    assert set(g.selection_[0].scores) == {"onehop", "plain@0.5"}
    for bad in (["nope"], [], "onehop", ["auto"], ["degree@1.5"]):
        with pytest.raises(ValidationError, match="candidates"):
            g.propagate(seeds, candidates=bad)
    with pytest.raises(ValidationError, match="method"):
        g.propagate(seeds, method="pagerank")
    with pytest.raises(ValidationError, match="n_folds"):
        g.propagate(seeds, n_folds=1)


def test_bipartite_auto_scores_coengagement_on_the_seeds_side():
    rng = np.random.default_rng(0)
    B = sp.csr_matrix((rng.random((80, 60)) < 0.1).astype(np.float32))
    bg = ex.BipartiteRiskGraph(B)
    users, items = bg.propagate(col_seeds=np.arange(10), random_state=3)
    sel = bg.selection_[0]
    assert "coengagement" in sel.scores and not sel.fallback
    assert items.shape == (60,) and users.shape == (80,)
    _, co = bg.propagate(col_seeds=np.arange(10), method="coengagement")
    assert np.all(co[:10] == 1.0) and np.all((co >= 0) & (co <= 1))
    _, again = bg.propagate(col_seeds=np.arange(10), random_state=3)
    np.testing.assert_array_equal(items, again)


@pytest.mark.parametrize(
    "call",
    [
        lambda A: ex.propagate(A, [0, 99]),  # out of range
        lambda A: ex.propagate(A, [-1]),
        lambda A: ex.propagate(A, []),  # empty
        lambda A: ex.propagate(A, [[0, 1], []]),  # an empty category
        lambda A: ex.propagate(-A, [0]),  # negative weights
        lambda A: ex.propagate(A[:, :10], [0]),  # not square
        lambda A: gr.propagate_risk(A[:10], [0]),
        lambda A: ex.RiskGraph(A).propagate([0], method="auto", random_state=-1),
    ],
)
def test_bad_input_is_a_validation_error(call):
    A, _ = planted_partition([10, 10], 0.5, 0.1, 0)
    with pytest.raises(ValidationError):
        call(A)


def test_average_precision_counts_ties_half():
    s = np.array([0.0, 1.0, 1.0, 0.5, 0.0])
    # node 1 and 2 tied at the top, node 0 a training seed
    assert average_precision(s, np.array([1]), np.array([0])) == pytest.approx(1 / 1.5)
    assert average_precision(s, np.array([3]), np.array([0])) == pytest.approx(1 / 3)
    # two positives tied at the top: ranks 1.5 and 1.5
    assert average_precision(s, np.array([1, 2]), np.array([0])) == pytest.approx(5 / 6)
    assert average_precision(s, np.array([3]), np.array([0]), auc=True) == pytest.approx(1 / 3)


def test_switching_needs_a_significant_gain_over_the_prior():
    from guardrails.expand._auto import _significant

    # the same gain on every fold: significant; a mean gain carried by one fold: not
    assert _significant(np.full(5, 0.02), 7)
    assert not _significant(np.array([0.2, -0.01, -0.01, 0.0, -0.02]), 7)
    assert not _significant(np.array([0.3]), 7)  # one fold: no test
    assert not _significant(np.full(5, -0.02), 7)
    # the Bonferroni correction: a gain that passes against one alternative fails
    # against seven
    d = np.array([0.05, 0.03, 0.04, 0.035, 0.045])  # t = 11.3 on 4 degrees of freedom
    assert _significant(d, 1) and not _significant(d, 7 * 20)


def test_few_seeds_get_the_prior_on_either_kind_of_graph():
    A, lab = planted_partition([30, 30], 0.3, 0.05, 4)
    g = ex.RiskGraph(A)
    g.propagate(np.flatnonzero(lab == 0)[:4])
    (sel,) = g.selection_
    assert sel.fallback and sel.method == g.candidates()[0] == "degree@0.95"
    rng = np.random.default_rng(1)
    bg = ex.BipartiteRiskGraph(sp.csr_matrix((rng.random((50, 40)) < 0.1).astype(np.float32)))
    bg.propagate(col_seeds=[0, 1, 2])
    (sel,) = bg.selection_
    assert sel.fallback and sel.method == bg.graph.candidates()[0] == "degree@0.5"
    # with a restricted list, the first given candidate is the prior
    g.propagate(np.flatnonzero(lab == 0)[:4], candidates=["heat", "onehop"])
    assert g.selection_[0].method == "heat"
