"""Viewer groups sharing one kernel call serve what one call per group serves, bit for bit.

A policy with cohorts (drops and demotions per cohort), a circuit breaker, a share cap,
relationship demotions and a holdback splits a batch into many viewer groups; with
``SHARED_CALLS`` at ``"always"`` (every group whose first call is alike joins one call),
``"auto"`` (the cost model) or ``"off"`` (one call per group) the ids, scores and
decisions are the same, nothing suppressed is served, slates are full where enough items
are eligible, and a batch serves each viewer what a single-viewer call serves. Both
selection backends and both kernel paths (a tiny tile size makes the fused path run on
these small catalogues) are exercised.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worlds import BREAKER, COHORTS, KERNEL_BACKENDS, every_filter_case

import guardrails as gr
import guardrails.core._exact as exact
import guardrails.core._fused as fused
import guardrails.core.kernel as kernel
import guardrails.policy._run as run
from guardrails.filters import CohortRule, DemoteRisk, ViewerCircuitBreaker
from guardrails.filters.base import ViewerBatch
from guardrails.policy import Policy

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
NU, F = 40, 6
# (backend, fused): numpy or compiled selection; tiny tiles force the fused path.
PATHS = [(backend, fuse) for backend in KERNEL_BACKENDS for fuse in (False, True)]


def _paths(stack: ExitStack, backend: str, fuse: bool) -> None:
    if backend == "numpy":
        stack.enter_context(mock.patch.object(exact, "_tile", None))
    if fuse:
        # One-kilobyte tiles: the fused, pruned path runs on a few hundred items.
        stack.enter_context(mock.patch.object(fused, "_TILE_BYTES", 1 << 10))
        stack.enter_context(mock.patch.object(fused, "_MIN_TILES", 2))


@contextmanager
def _kernel_calls():
    """Record the ``groups`` of every kernel call the Guard makes (``None``: one group)."""
    seen = []
    real = kernel.guarded_topk

    def spy(*args, **kw):
        seen.append(kw.get("groups"))
        return real(*args, **kw)

    with mock.patch("guardrails.guard.guarded_topk", spy):
        yield seen


def _serve(model, pol, ui, N, mode, record=False):
    with mock.patch.object(run, "SHARED_CALLS", mode):
        g = gr.Guard(model, pol)
        users = np.arange(NU)
        out = []
        for _ in range(2):  # the second call follows the share cap's saturation notes
            r = g.recommend_detailed(users, ui, N=N, record=record)
            out.append((r.ids, r.scores, r.decisions, r.info))
        return g, out


def _serve_more(model, pol, ui, N, mode):
    """``items=`` (a per-call space) and ``similar_items`` with viewers, both grouped."""
    n_items = ui.shape[1]
    with mock.patch.object(run, "SHARED_CALLS", mode):
        g = gr.Guard(model, pol)
        users = np.arange(NU)
        some = np.arange(0, n_items, 2)
        return (
            g.recommend(users, ui, N=N, items=some),
            g.similar_items(users % n_items, N=N, viewer=users),
        )


@pytest.mark.parametrize("backend,fuse", PATHS)
@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    N=st.integers(1, 9),
    NI=st.sampled_from([60, 300]),
    cap_groups=st.sampled_from([1, 3]),
    holdback=st.booleans(),
)
def test_shared_calls_serve_what_one_call_per_group_serves(
    backend, fuse, seed, N, NI, cap_groups, holdback
):
    model, pol, ui, suppressed, pairs = every_filter_case(
        seed, n_users=NU, n_items=NI, n_factors=F, cap_groups=cap_groups, holdback=holdback
    )
    with ExitStack() as stack:
        _paths(stack, backend, fuse)
        seen = stack.enter_context(_kernel_calls())
        _, want = _serve(model, pol, ui, N, "off", record=True)
        per_group_calls = len(seen)
        assert all(groups is None for groups in seen)
        for mode in ("always", "auto"):
            seen.clear()
            g, got = _serve(model, pol, ui, N, mode, record=True)
            for (i1, s1, d1, c1), (i0, s0, d0, c0) in zip(got, want, strict=True):
                np.testing.assert_array_equal(i1, i0)
                np.testing.assert_array_equal(s1, s0)
                assert d1 == d0 and c1 == c0
            if mode == "always":
                assert len(seen) <= per_group_calls
        want_more = _serve_more(model, pol, ui, N, "off")
        for got_ids, got_scores in _serve_more(model, pol, ui, N, "always"):
            want_ids, want_scores = want_more[0]
            want_more = want_more[1:]
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(got_scores, want_scores)
        ids, scores = got[-1][0], got[-1][1]
        users = np.arange(NU)
        for r in range(NU):
            row = ids[r][ids[r] >= 0]
            assert not suppressed[row].any()
            assert not np.isin(row, pairs[r].indices).any()
            one, s1 = g.recommend(r, ui[r], N=N)
            np.testing.assert_array_equal(one, row)
            np.testing.assert_array_equal(s1, scores[r][ids[r] >= 0])
        # Viewers with no cohort and no tripped breaker have far more than N eligible
        # items, so their slates are full (unless the cap's groups leave fewer).
        plain = ~pol.filters[BREAKER].tripped(ViewerBatch(users, ui)) & (
            pol.filters[COHORTS].viewer_cohorts_ < 0
        )
        if cap_groups == 1:
            assert ((ids[plain] >= 0).sum(axis=1) == N).all()


def test_groups_alike_share_one_kernel_call():
    """Four cohorts that each drop a few items, plus tripped viewers: one shared call."""
    rng = np.random.default_rng(5)
    NI = 400
    model = gr.FactorModel(rng.normal(size=(NU, F)), rng.normal(size=(NI, F)))
    risk = (rng.random(NI) ** 3).astype(np.float32)
    matrix = [["allow"] * 4 for _ in range(4)]
    for c in range(4):
        matrix[c][c] = "drop"
    cand = np.full(NI, -1)
    cand[rng.choice(NI, size=8, replace=False)] = np.arange(8) % 4
    pol = Policy(
        [
            CohortRule(rng.integers(0, 4, NU), cand, matrix),
            ViewerCircuitBreaker(risk, item_threshold=0.2, trip=0.3),
            DemoteRisk(risk, weight=1.0),
        ]
    )
    ui = sp.random(NU, NI, density=0.05, format="csr", random_state=1, dtype=np.float32)
    with _kernel_calls() as seen:
        _, got = _serve(model, pol, ui, 5, "auto")
        shared = list(seen)
        seen.clear()
        _, want = _serve(model, pol, ui, 5, "off")
    # One kernel call per batch (two batches), every row in it with its group's plan.
    assert len(shared) == 2 and all(s is not None and s.n_groups > 4 for s in shared)
    assert len(seen) > 2 * 4 and all(s is None for s in seen)
    np.testing.assert_array_equal(got[-1][0], want[-1][0])
    np.testing.assert_array_equal(got[-1][1], want[-1][1])


def test_item_item_models_keep_one_call_per_group():
    rng = np.random.default_rng(2)
    NI = 50
    sim = sp.random(NI, NI, density=0.3, format="csr", random_state=2)
    model = gr.ItemItemModel(sim)
    pol = Policy(
        [
            CohortRule(
                rng.integers(0, 2, NU),
                rng.integers(0, 2, NI),
                [["allow", "drop"], ["drop", "allow"]],
            ),
        ]
    )
    ui = sp.random(NU, NI, density=0.2, format="csr", random_state=3, dtype=np.float32)
    with _kernel_calls() as seen:
        _, got = _serve(model, pol, ui, 4, "always")
    assert len(seen) >= 4 and all(s is None for s in seen)
    _, want = _serve(model, pol, ui, 4, "off")
    np.testing.assert_array_equal(got[-1][0], want[-1][0])
    np.testing.assert_array_equal(got[-1][1], want[-1][1])
