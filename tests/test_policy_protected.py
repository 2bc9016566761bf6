"""default_policy's minors' filters are protected child-safety rules.

They can be neither held back nor failed open (both a typed error), and a failure to read
their signals while serving fails closed, exactly like a label filter on a child-safety
category.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from worlds import youth_world

import guardrails as gr
from guardrails.exceptions import FailClosedError, ValidationError
from guardrails.filters import CohortRule, RequireTie, ViewerCircuitBreaker
from guardrails.policy import Holdback, Policy, default_policy

MINOR_FILTERS = (
    "protect_minors",
    "protect_minors_new_accounts",
    "minors_need_tie",
    "minor_viewers",
)


@pytest.fixture(scope="module")
def world():
    g, minors, model, people = youth_world(0, adult_also_follows=[70])
    pol = default_policy(seeds=[70], graph=g, interactions=g, minors=minors, minor_viewers=minors)
    return g, minors, model, people, pol


def test_the_minors_filters_of_default_policy_are_protected(world):
    *_, pol = world
    names = [f.name for f in pol.filters]
    assert set(MINOR_FILTERS) <= set(names)
    for s in pol.settings:
        assert s.protected == (s.name in MINOR_FILTERS), s.name
        if s.protected:
            assert s.failure == "fail_closed"
            assert pol[s.name].protected is True


@pytest.mark.parametrize("name", MINOR_FILTERS)
def test_a_holdback_of_a_minors_filter_is_refused(world, name):
    *_, pol = world
    with pytest.raises(ValidationError, match="protected"):
        Policy(pol.filters, holdback=Holdback(0.1, salt="exp", filters=[name]))
    # A filter that is not a minors' one can still be held back.
    Policy(pol.filters, holdback=Holdback(0.1, salt="exp", filters=["share_cap_risky"]))


@pytest.mark.parametrize("name", MINOR_FILTERS)
def test_a_minors_filter_set_fail_open_is_refused(world, name):
    *_, pol = world
    f = pol[name]
    f.failure = "fail_open"  # bypassing the constructor: the policy still refuses it
    try:
        with pytest.raises(ValidationError, match="fail_closed"):
            Policy(pol.filters)
    finally:
        f.failure = "fail_closed"


def _tie(g, minors, **kw):
    return RequireTie(minors, graph=g, **kw)


def _breaker(g, minors, **kw):
    return ViewerCircuitBreaker(np.zeros(g.shape[0], np.float32), **kw)


def _cohorts(g, minors, **kw):
    return CohortRule(np.zeros(g.shape[0], np.int64), minors.astype(np.int64) - 1, [["drop"]], **kw)


@pytest.mark.parametrize("make", [_tie, _breaker, _cohorts])
def test_protected_filters_refuse_fail_open_and_a_non_bool(world, make):
    g, minors, *_ = world
    with pytest.raises(ValidationError, match="fail_closed"):
        make(g, minors, protected=True, failure="fail_open")
    with pytest.raises(ValidationError, match="protected"):
        make(g, minors, protected="yes")
    assert make(g, minors).protected is False
    assert make(g, minors, protected=True).protected is True
    # The setting is part of the filter's identity (fingerprint, policy version).
    assert make(g, minors).fingerprint() != make(g, minors, protected=True).fingerprint()


class _Unreadable(OSError):
    pass


def _break(f, monkeypatch):
    """Make every signal-reading step of ``f`` raise, as a lost store would."""

    def boom(*a, **k):
        raise _Unreadable("signal store unreadable")

    for step in ("compile_viewers", "assign_cohorts", "compile_queries"):
        if hasattr(f, step):
            monkeypatch.setattr(f, step, boom)


@pytest.mark.parametrize("name", MINOR_FILTERS)
def test_a_failure_reading_a_minors_filters_signals_fails_closed(world, name, monkeypatch):
    g, minors, model, (coach, parent, adult, celeb), _ = world
    pol = default_policy(seeds=[70], graph=g, interactions=g, minors=minors, minor_viewers=minors)
    guard = gr.Guard(model, pol)
    users = np.array([0, parent, adult])
    guard.recommend(users, g[users], N=10)  # serves while the signals are readable
    _break(pol[name], monkeypatch)
    with pytest.raises(FailClosedError, match=name):
        guard.recommend(users, g[users], N=10)


def test_the_same_failure_of_an_unprotected_fail_open_filter_is_skipped(world, monkeypatch):
    # The contrast that makes the test above meaningful: without protection a fail-open
    # filter whose signals cannot be read is skipped with a warning and the call serves.
    g, minors, model, (coach, parent, adult, celeb), _ = world
    tie = RequireTie(minors, graph=g, follows=g, failure="fail_open", name="tie_open")
    guard = gr.Guard(model, Policy([tie]))
    _break(tie, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, _ = guard.recommend(adult, g[adult], N=10)
    assert (ids >= 0).sum() == 10
    assert any("tie_open" in str(w.message) for w in caught)
