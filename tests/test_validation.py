"""Bad input gets a typed error with one message shape, and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import guardrails as gr
from guardrails.filters import BlockItems, DemoteRisk, ExcludePairs, SuppressRisk

SHAPE = r"The '{}' parameter of {} must be .*\. Got .* instead\."


@pytest.fixture
def guard():
    rng = np.random.default_rng(0)
    return gr.Guard(gr.FactorModel(rng.standard_normal((6, 3)), rng.standard_normal((9, 3))))


@pytest.fixture
def rows():
    return sp.csr_matrix((2, 9), dtype=np.float32)


@pytest.mark.parametrize("N", [0, -1, 2.5, "10", True, None])
def test_bad_N(guard, rows, N):
    with pytest.raises(gr.ValidationError, match=SHAPE.format("N", "Guard.recommend")):
        guard.recommend([0, 1], rows, N=N)


@pytest.mark.parametrize("userid", [-1, 6, [0, 7], [[0, 1]], 1.5, "a", [0.0, 1.0]])
def test_bad_userid(guard, rows, userid):
    with pytest.raises(gr.ValidationError, match=SHAPE.format("userid", "Guard.recommend")):
        guard.recommend(userid, rows, N=3)


def test_mismatched_user_items(guard):
    with pytest.raises(gr.ValidationError, match=SHAPE.format("user_items", "Guard.recommend")):
        guard.recommend([0, 1, 2], sp.csr_matrix((2, 9)), N=3)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("user_items", "Guard.recommend")):
        guard.recommend([0, 1], sp.csr_matrix((2, 8)), N=3)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("user_items", "Guard.recommend")):
        guard.recommend([0, 1], np.zeros((2, 9)), N=3)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("user_items", "Guard.recommend")):
        guard.recommend([0, 1], None, N=3)
    bad = sp.csr_matrix(np.array([[np.nan] + [0] * 8, [0] * 9]))
    with pytest.raises(gr.ValidationError, match="NaN"):
        guard.recommend([0, 1], bad, N=3)


def test_filter_items_and_items_together(guard, rows):
    with pytest.raises(gr.ValidationError, match="cannot both"):
        guard.recommend([0, 1], rows, N=3, filter_items=[1], items=[2])
    with pytest.raises(gr.ValidationError, match=SHAPE.format("items", "Guard.recommend")):
        guard.recommend([0, 1], rows, N=3, items=[9])
    with pytest.raises(gr.ValidationError, match=SHAPE.format("filter_items", "Guard.recommend")):
        guard.recommend([0, 1], rows, N=3, filter_items=[-2])


@pytest.mark.parametrize(
    "factors",
    [np.array([[np.nan, 1.0]]), np.array([[np.inf, 1.0]]), np.zeros(3), np.array([["a", "b"]])],
)
def test_bad_factors(factors):
    with pytest.raises(gr.ValidationError, match="FactorModel"):
        gr.FactorModel(factors, np.ones((3, 2)))


def test_mismatched_factor_widths():
    with pytest.raises(gr.ValidationError, match="user_factors"):
        gr.FactorModel(np.ones((3, 2)), np.ones((3, 4)))


def test_scores_that_could_overflow_are_rejected():
    with pytest.raises(gr.ValidationError, match="norm product"):
        gr.FactorModel(np.full((2, 2), 1e20), np.full((2, 2), 1e20))


def test_filter_arguments():
    with pytest.raises(gr.ValidationError, match=SHAPE.format("ids", "BlockItems")):
        BlockItems([-1, 2])
    with pytest.raises(gr.ValidationError, match=SHAPE.format("risk", "SuppressRisk")):
        SuppressRisk([0.1, np.nan], threshold=0.5)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("risk", "SuppressRisk")):
        SuppressRisk([0.1, 1.5], threshold=0.5)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("threshold", "SuppressRisk")):
        SuppressRisk([0.1], threshold=0.0)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("weight", "DemoteRisk")):
        DemoteRisk([0.1], weight=-1.0)
    with pytest.raises(gr.ValidationError, match=SHAPE.format("pairs", "ExcludePairs")):
        ExcludePairs(np.eye(3))


def test_filters_sized_for_another_catalogue_are_rejected():
    rng = np.random.default_rng(0)
    model = gr.FactorModel(rng.standard_normal((6, 3)), rng.standard_normal((9, 3)))
    with pytest.raises(gr.ValidationError, match="catalogue"):
        gr.Guard(model, [SuppressRisk(np.zeros(8), threshold=0.5)])
    with pytest.raises(gr.ValidationError, match="catalogue"):
        gr.Guard(model, [BlockItems([9])])
    guard = gr.Guard(model, [ExcludePairs(sp.csr_matrix((6, 8)))])
    with pytest.raises(gr.ValidationError, match="catalogue"):
        guard.recommend([0], sp.csr_matrix((1, 9)), N=2)


def test_policy_rejects_non_filters():
    with pytest.raises(gr.ValidationError, match="filters"):
        gr.Policy([object()])


def test_errors_are_typed():
    assert issubclass(gr.ValidationError, ValueError)
    assert issubclass(gr.ValidationError, gr.GuardrailsError)
    assert issubclass(gr.FailClosedError, gr.GuardrailsError)
    assert issubclass(gr.UnsupportedModelError, TypeError)
