"""The conformance suite runs over every built-in filter and catches broken plug-ins."""

import numpy as np
import pytest
import scipy.sparse as sp

import guardrails as gr
from guardrails.core.plan import PlanPart
from guardrails.exceptions import PluginError
from guardrails.filters import (
    BlockItems,
    BlockLabeled,
    CohortRule,
    ContextRisk,
    DemoteRisk,
    ExcludePairs,
    Filter,
    RelationshipRule,
    RequireTie,
    ShareCap,
    SuppressNeighborhood,
    SuppressRisk,
    ViewerCircuitBreaker,
    register_filter,
    registered_filters,
)
from guardrails.filters.base import Catalog
from guardrails.testing import ConformanceError, FilterConformance, check_filter


def _rng(seed):
    return np.random.default_rng(seed)


def _risk(n, seed):
    return (_rng(seed).random(n) ** 2).astype(np.float32)


class _Base(FilterConformance):
    n_candidates = 30
    n_users = 15
    max_examples = 8


class TestBlockItems(_Base):
    def make_filter(self, n, nu, seed):
        return BlockItems(_rng(seed).choice(n, size=5, replace=False))


class TestExcludePairs(_Base):
    def make_filter(self, n, nu, seed):
        return ExcludePairs(sp.random(nu, n, density=0.2, format="csr", random_state=seed % 1000))


class TestSuppressRisk(_Base):
    def make_filter(self, n, nu, seed):
        return SuppressRisk(_risk(n, seed), threshold=0.4)


class TestDemoteRisk(_Base):
    def make_filter(self, n, nu, seed):
        return DemoteRisk(_risk(n, seed), weight=0.7, curve=DemoteRisk.CURVES[seed % 4])


class TestBlockLabeled(_Base):
    def make_filter(self, n, nu, seed):
        return BlockLabeled(
            ["csam"],
            labels={"csam": _rng(seed).random(n) < 0.2},
            action=("drop", "demote")[seed % 2],
        )


class TestSuppressNeighborhood(_Base):
    def make_filter(self, n, nu, seed):
        return SuppressNeighborhood(_risk(n, seed), threshold=0.5, demote_threshold=0.2)


class TestCohortRule(_Base):
    def make_filter(self, n, nu, seed):
        r = _rng(seed)
        return CohortRule(
            r.integers(-1, 2, nu), r.integers(-1, 2, n), [["allow", "drop"], ["drop", "demote"]]
        )


class TestViewerCircuitBreaker(_Base):
    def make_filter(self, n, nu, seed):
        return ViewerCircuitBreaker(_risk(n, seed), item_threshold=0.2, trip=0.2)


class TestShareCapRisk(_Base):
    def make_filter(self, n, nu, seed):
        return ShareCap(max_share=0.2, risk=_risk(n, seed), threshold=0.1)


class TestShareCapCommunities(_Base):
    def make_filter(self, n, nu, seed):
        return ShareCap(max_share=0.25, communities=_rng(seed).integers(-1, 3, n))


class TestRelationshipRule(_Base):
    def make_filter(self, n, nu, seed):
        return RelationshipRule(
            _rng(seed).random(n) < 0.3,
            follows=sp.random(nu, n, density=0.2, format="csr", random_state=seed % 1000),
            action=("drop", "demote")[seed % 2],
        )


class TestRequireTie(_Base):
    def make_filter(self, n, nu, seed):
        r = _rng(seed)
        g = sp.random(n, n, density=0.15, format="csr", random_state=seed % 1000)
        return RequireTie(
            r.random(n) < 0.3,
            graph=g,
            follows=sp.random(nu, n, density=0.2, format="csr", random_state=seed % 997),
            min_shared=1 + seed % 2,
            through=("followees", "followers", "both")[seed % 3],
            max_followers=(None, 4)[seed % 2],
            exempt_viewers=r.random(nu) < 0.3,
            action=("drop", "demote")[seed % 2],
        )


class TestContextRisk(_Base):
    def make_filter(self, n, nu, seed):
        r = _rng(seed).random(n).astype(np.float32)
        return ContextRisk(
            r,
            threshold=0.7,
            pool=r < 0.4,
            new_viewer_interactions=seed % 4,
            exclude_viewed=seed % 2 == 0,
            strip_context=seed % 3 == 0,
        )


def test_suite_covers_every_builtin():
    covered = {cls().make_filter(30, 15, 0).name for cls in _Base.__subclasses__()}
    assert set(registered_filters()) <= covered


# ---------------------------------------------------------------------------- broken filters
class _Plug(Filter):
    name = "plug"

    def __init__(self, n=20):
        self.n = n


class WrongShape(_Plug):
    def compile_global(self, catalog):
        return PlanPart(self.name, "r", hard_mask=np.zeros(catalog.n + 1, bool))


class NegativePenalty(_Plug):
    def compile_global(self, catalog):
        return PlanPart(self.name, "r", penalty=-np.ones(catalog.n, np.float32))


class BatchDependent(_Plug):
    def compile_viewers(self, catalog, viewers):
        # Masks depend on the batch size: batch calls would differ from single calls.
        m = viewers.size
        cols = np.full(m, m % catalog.n)
        return PlanPart(
            self.name,
            "r",
            viewer_mask=sp.csr_matrix((np.ones(m), (np.arange(m), cols)), shape=(m, catalog.n)),
        )


class NonDeterministic(_Plug):
    def compile_global(self, catalog):
        return PlanPart(self.name, "r", hard_mask=np.random.default_rng().random(catalog.n) < 0.5)


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (WrongShape, "compile_global"),
        (NegativePenalty, "compile_global"),
        (BatchDependent, "batch consistency"),
        (NonDeterministic, "determinism"),
    ],
)
def test_conformance_catches_broken_filters(cls, check):
    with pytest.raises(ConformanceError, match=check):
        check_filter(cls(), Catalog("items", 20))


def test_register_filter_checks_and_names_the_plugin():
    class Good(Filter):
        name = "third_party_good"

        def __init__(self, risk, *, threshold=0.5):
            self.risk = np.asarray(risk, dtype=np.float32)
            self.threshold = threshold

        def params(self):
            return (self.risk, self.threshold)

        def compile_global(self, catalog):
            return PlanPart(self.name, "tp", hard_mask=self.risk >= self.threshold)

        @classmethod
        def example(cls):
            return cls(np.linspace(0, 1, 20)), Catalog("items", 20)

    register_filter(Good, config={"risk": "vector", "threshold": "float"})
    assert registered_filters()["third_party_good"] is Good
    doc = {
        "schema_version": 1,
        "filters": [{"type": "third_party_good", "risk": "r", "threshold": 0.7}],
    }
    pol = gr.policy.policy_from_dict(doc, data={"r": np.linspace(0, 1, 20)})
    assert isinstance(pol.filters[0], Good)

    class Bad(Good):
        name = "third_party_bad"

        def compile_global(self, catalog):
            return PlanPart(self.name, "tp", penalty=-np.ones(catalog.n, np.float32))

    with pytest.raises(PluginError, match="Bad.*conformance"):
        register_filter(Bad)

    class Taken(Good):
        name = "suppress_risk"

    with pytest.raises(PluginError, match="already taken"):
        register_filter(Taken)

    class NoMethods:
        name = "no_methods"

    with pytest.raises(PluginError, match="no_methods|NoMethods"):
        register_filter(NoMethods)
    with pytest.raises(PluginError, match="unknown kind"):
        register_filter(Good, config={"risk": "pickle"})


def test_entry_point_plugins_are_loaded_only_on_request(monkeypatch):
    import importlib.metadata as md

    class EP:
        def __init__(self, name, value, obj=None, exc=None):
            self.name, self.value, self._obj, self._exc = name, value, obj, exc

        def load(self):
            if self._exc:
                raise self._exc
            return self._obj

    class Plugged(Filter):
        name = "ep_plugged"
        config_spec = {}

    eps = [
        EP("plugged", "pkg.mod:Plugged", Plugged),
        EP("broken", "pkg.broken:Thing", exc=ImportError("no module")),
    ]
    monkeypatch.setattr(
        md, "entry_points", lambda group=None: eps if group == "guardrails.filters" else []
    )
    with pytest.raises(PluginError, match="broken = pkg.broken:Thing"):
        gr.filters.load_plugins()
    eps.pop()
    assert gr.filters.load_plugins() == ["ep_plugged"]
