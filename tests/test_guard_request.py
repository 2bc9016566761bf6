"""One request per call: Guard.prepare checks a call's arguments once into a frozen
GuardRequest, Guard.execute runs it, and ServingGuard reuses it for retries and fallbacks."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from guardrails import FactorModel, Guard, ServingGuard
from guardrails.exceptions import FailClosedWarning, ValidationError
from guardrails.filters import BlockItems
from guardrails.guard import GuardRequest

N_USERS, N_ITEMS = 25, 60


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(7)
    return FactorModel(rng.normal(size=(N_USERS, 5)), rng.normal(size=(N_ITEMS, 5)))


def test_prepare_then_execute_equals_the_call(model):
    guard = Guard(model, [BlockItems([1, 2])])
    liked = sp.random(3, N_ITEMS, density=0.1, format="csr", random_state=1)
    req = guard.prepare(
        "recommend",
        userid=[0, 4, 9],
        user_items=liked,
        N=7,
        filter_already_liked_items=True,
        filter_items=[5],
        recalculate_user=False,
        items=None,
        surface=None,
        record=False,
        user_factors=None,
    )
    assert isinstance(req, GuardRequest) and req.n_rows == 3 and req.n_columns == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.N = 3
    a = guard.execute(req)
    b = guard.recommend_detailed([0, 4, 9], liked, N=7, filter_items=[5])
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    sim = guard.prepare(
        "similar_items",
        itemid=3,
        N=4,
        recalculate_item=False,
        item_users=None,
        filter_items=None,
        items=[3, 7, 8, 9, 10],
        viewer=None,
        surface=None,
        record=False,
    )
    assert sim.scalar and sim.limit == 5 and sim.candidates == "items"
    np.testing.assert_array_equal(
        guard.execute(sim).ids, guard.similar_items(3, N=4, items=[3, 7, 8, 9, 10])[0]
    )


def test_requests_are_checked_and_bound_to_their_guard(model):
    guard = Guard(model)
    with pytest.raises(ValidationError, match="'method' parameter of Guard.prepare"):
        guard.prepare("rank_everything", userid=0)
    with pytest.raises(TypeError):
        guard.prepare("similar_users", userid=0)  # arguments missing: a programming error
    with pytest.raises(ValidationError, match="'request' parameter of Guard.execute"):
        guard.execute("not a request")
    other = Guard(FactorModel(np.ones((N_USERS, 5)), np.ones((N_ITEMS, 5))))
    req = other.prepare(
        "similar_users", userid=0, N=3, filter_users=None, users=None, surface=None, record=False
    )
    with pytest.raises(ValidationError, match="prepared for another model"):
        guard.execute(req)
    with pytest.raises(ValidationError, match="'ranking' parameter"):
        req.with_ranking(np.ones(N_USERS + 1))
    with pytest.raises(ValidationError, match="'ranking' parameter"):
        req.with_ranking(np.full(N_USERS, np.inf))


def test_serving_guard_checks_arguments_once_per_call(model, monkeypatch):
    """A fail-closed call with a retry and a fallback still checks its arguments once."""
    guard = Guard(model, [BlockItems([0])])
    sg = ServingGuard(guard, on_failure="fallback", fallback_items=np.arange(N_ITEMS))
    prepared: list[str] = []
    real = guard.prepare

    def spy(method, /, **kw):
        prepared.append(method)
        return real(method, **kw)

    monkeypatch.setattr(guard, "prepare", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FailClosedWarning)
        r = sg.recommend_detailed([1, 2], None, N=4, filter_already_liked_items=False)
        s = sg.similar_items_detailed(6, N=3)
    assert prepared == ["recommend", "similar_items"]
    assert r.info["fail_closed"] == "missing" and r.ids.tolist() == [[1, 2, 3, 4]] * 2
    assert s.ids.tolist() == [1, 2, 3]  # never the query item, never a blocked one
    with pytest.raises(ValidationError, match="'N' parameter of Guard.recommend"):
        sg.recommend(0, N=0, filter_already_liked_items=False)


@pytest.mark.parametrize("method", ["recommend", "similar_items", "similar_users"])
@pytest.mark.parametrize("cls", [Guard, ServingGuard])
def test_plain_forms_take_a_prefix_of_the_detailed_arguments(cls, method):
    # The plain forms hand every argument on to their *_detailed form by name: each of
    # their parameters is one of the detailed form's, of the same kind and default.
    import inspect

    plain = inspect.signature(getattr(cls, method)).parameters
    detailed = inspect.signature(getattr(cls, f"{method}_detailed")).parameters
    assert list(plain) == list(detailed)[: len(plain)]
    for name, p in plain.items():
        assert (p.kind, p.default) == (detailed[name].kind, detailed[name].default), name


@pytest.mark.parametrize("positional", [True, False])
def test_plain_recommend_equals_the_detailed_ids(model, positional):
    guard = Guard(model, [BlockItems([1, 2])])
    liked = sp.random(3, N_ITEMS, density=0.1, format="csr", random_state=2)
    args = ([0, 4, 9], liked, 7, True, [3], False, None)
    if positional:
        ids, scores = guard.recommend(*args, surface="home")
    else:
        names = ("userid", "user_items", "N", "filter_already_liked_items", "filter_items")
        names += ("recalculate_user", "items")
        ids, scores = guard.recommend(**dict(zip(names, args, strict=True)), surface="home")
    r = guard.recommend_detailed(*args, surface="home")
    assert np.array_equal(ids, r.ids) and np.allclose(scores, r.scores)
    assert not np.isin(ids, [1, 2, 3]).any()
