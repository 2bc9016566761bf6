"""Every built-in filter round-trips through a policy file from its own declared spec.

Filters keep their constructor arguments as given and declare, beside ``__init__``, the
policy-file kind of each (``config_spec``); the file writer and reader use nothing else.
A spec that drifts from the constructor fails here, and so does any argument the file
loses.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from guardrails.exceptions import ValidationError
from guardrails.filters import (
    BlockItems,
    BlockLabeled,
    CohortRule,
    ContextRisk,
    DemoteRisk,
    ExcludePairs,
    RelationshipRule,
    RequireTie,
    ShareCap,
    SuppressNeighborhood,
    SuppressRisk,
    ViewerCircuitBreaker,
)
from guardrails.filters.base import Filter
from guardrails.filters.registry import BUILTINS, KINDS, filter_class
from guardrails.policy import Policy, load_policy, save_policy

NU, NI = 12, 20
COMMON = {"self", "name", "reason", "mode", "failure", "surfaces"}


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_spec_is_the_constructor(cls):
    params = set(inspect.signature(cls.__init__).parameters) - COMMON
    assert set(cls.config_spec) == params
    assert set(cls.config_spec.values()) <= set(KINDS)
    assert filter_class(cls.name) == (cls, cls.config_spec)
    # Every built-in takes the common settings itself: the loader never sets attributes.
    assert COMMON - {"self"} <= set(inspect.signature(cls.__init__).parameters)


#: Common settings whose default a built-in derives from its other arguments (``None`` in
#: the signature): BlockLabeled fails closed only for child-safety categories.
DERIVED = {"block_labeled": {"failure", "reason"}}


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_common_settings_are_keyword_only_with_the_base_defaults(cls):
    """Each built-in spells the common settings out in its signature (help() and type
    checkers show them, defaults included); the defaults are the base class's, or derived
    where :data:`DERIVED` says, so none can drift."""
    params = inspect.signature(cls.__init__).parameters
    derived = DERIVED.get(cls.name, set())
    for key, default in (
        ("mode", Filter.mode),
        ("failure", Filter.failure),
        ("surfaces", Filter.surfaces),
        ("name", None),
        ("reason", None),
    ):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, key
        if key in derived:
            assert params[key].default is None, key
        elif key == "reason":  # each filter's own reason code
            assert isinstance(params[key].default, str) and params[key].default
        else:
            assert params[key].default == default, key


# ---------------------------------------------------------------------------- strategies
seeds = st.integers(0, 2**31 - 1)
unit = st.sampled_from([0.05, 0.2, 0.5, 0.8, 1.0])
weights = st.sampled_from([0.0, 0.25, 1.0, 2.5])


def _rng(s):
    return np.random.default_rng(s)


def _vec(n):
    return seeds.map(lambda s: (_rng(s).random(n) ** 2).astype(np.float32))


def _mask(n, p=0.2):
    return seeds.map(lambda s: _rng(s).random(n) < p)


def _indices(n):
    return st.one_of(
        _mask(n), seeds.map(lambda s: _rng(s).choice(n, size=3, replace=False).astype(np.int64))
    )


def _csr(m, n):
    return seeds.map(
        lambda s: sp.random(m, n, density=0.15, format="csr", random_state=s % 1000).astype(
            np.float32
        )
    )


def _opt(strategy):
    return st.one_of(st.none(), strategy)


def _common():
    return st.fixed_dictionaries(
        {},
        optional={
            "mode": st.sampled_from(["enforce", "shadow", "off"]),
            "surfaces": st.sampled_from([("feed",), ("feed", "search")]),
            "name": st.sampled_from(["custom_a", "custom-b"]),
            "reason": st.sampled_from(["why_not", "policy:x"]),
        },
    )


def _build(cls, *args, **kw):
    return st.tuples(*args, st.fixed_dictionaries(kw), _common()).map(
        lambda t: (cls, t[:-2], {**t[-2], **t[-1]})
    )


def _block_labeled():
    def make(cats, labels2d, s, mode_sev, sev, action, weight):
        rng = _rng(s)
        kw = {"action": action, "weight": weight}
        if labels2d:
            kw["labels"] = rng.random((NI, len(cats) or 1)) < 0.2
            kw["label_names"] = list(cats) or ["csam"]
        else:
            kw["labels"] = {c: rng.random(NI) < 0.2 for c in cats or ["csam"]}
        if mode_sev or not cats:
            kw["min_severity"] = 0.7
            kw["severity"] = rng.random(NI).astype(np.float32)
        elif sev:
            kw["severity"] = rng.random(NI).astype(np.float32)
        return (BlockLabeled, (list(cats),), kw)

    return st.builds(
        make,
        st.lists(st.sampled_from(["csam", "spam", "age"]), max_size=2, unique=True),
        st.booleans(),
        seeds,
        st.booleans(),
        st.booleans(),
        st.sampled_from(["drop", "demote"]),
        weights,
    ).flatmap(lambda t: _common().map(lambda c: (t[0], t[1], {**t[2], **c})))


def _suppress_neighborhood():
    def make(source, s, thr, dthr, dweight, alpha, dreason, seeds_kind):
        rng = _rng(s)
        kw = {"threshold": thr, "demote_weight": dweight}
        if alpha is not None:
            kw["alpha"] = alpha
        if dthr is not None:
            kw["demote_threshold"] = min(dthr, thr)
        if dreason:
            kw["demote_reason"] = dreason
        seed_arg = (
            rng.random(NI) < 0.1 if seeds_kind == "mask" else np.array([1, 4], dtype=np.int64)
        )
        args = ()
        if source == "risk":
            args = ((rng.random(NI) ** 2).astype(np.float32),)
            if seeds_kind != "none":
                kw["seeds"] = seed_arg
        elif source == "graph":
            kw["graph"] = sp.random(NI, NI, density=0.15, format="csr", random_state=s % 1000)
            kw["seeds"] = seed_arg
        return (SuppressNeighborhood, args, kw)

    return st.builds(
        make,
        st.sampled_from(["risk", "graph", "snapshot"]),
        seeds,
        unit,
        _opt(st.sampled_from([0.0, 0.1, 0.4])),
        weights,
        _opt(st.sampled_from([0.3, 0.5, 0.9])),
        _opt(st.just("neighbourhood_demoted")),
        st.sampled_from(["none", "mask", "ints"]),
    ).flatmap(lambda t: _common().map(lambda c: (t[0], t[1], {**t[2], **c})))


def _cohort_rule():
    def make(s, nv, nc, labels, unknown, weight, protected):
        rng = _rng(s)
        acts = np.array(["allow", "demote", "drop"])
        matrix = acts[rng.integers(0, 3, (nv, nc))].tolist()
        kw = {"weight": weight, "protected": protected}
        vl = [f"v{i}" for i in range(nv)]
        if labels:
            kw["viewer_labels"] = vl
            kw["candidate_labels"] = [f"c{i}" for i in range(nc)]
        if unknown == "label" and labels:
            kw["unknown_viewer"] = vl[-1]
        elif unknown == "index":
            kw["unknown_viewer"] = nv - 1
        return (
            CohortRule,
            (rng.integers(-1, nv, NU), rng.integers(-1, nc, NI), matrix),
            kw,
        )

    return st.builds(
        make,
        seeds,
        st.integers(1, 3),
        st.integers(1, 3),
        st.booleans(),
        st.sampled_from(["strictest", "label", "index"]),
        weights,
        st.booleans(),
    ).flatmap(lambda t: _common().map(lambda c: (t[0], t[1], {**t[2], **c})))


def _share_cap():
    return st.one_of(
        _build(ShareCap, max_share=unit, risk=_vec(NI), threshold=unit),
        _build(
            ShareCap,
            max_share=st.sampled_from([0.0, 0.3]),
            communities=seeds.map(lambda s: _rng(s).integers(-1, 4, NI)),
            min_count=st.integers(0, 2),
        ),
    )


#: One strategy per built-in filter: constructor arguments, optional ones included.
STRATEGIES = {
    BlockItems: st.one_of(
        _build(BlockItems, seeds.map(lambda s: _rng(s).choice(NI, size=4, replace=False))),
        _build(BlockItems, st.just([0, 3, 3, 7])),
    ),
    ExcludePairs: _build(ExcludePairs, _csr(NU, NI)),
    SuppressRisk: _build(SuppressRisk, _vec(NI), threshold=unit),
    DemoteRisk: st.one_of(
        _build(
            DemoteRisk,
            _vec(NI),
            weight=weights,
            curve=st.sampled_from(DemoteRisk.CURVES),
            floor=st.sampled_from([0.0, 0.1]),
        ),
        _build(
            DemoteRisk, _vec(NI), weight=weights, knots=st.just([(0.1, 0.0), (0.5, 0.4), (1, 1)])
        ),
    ),
    BlockLabeled: _block_labeled(),
    SuppressNeighborhood: _suppress_neighborhood(),
    CohortRule: _cohort_rule(),
    ViewerCircuitBreaker: _build(
        ViewerCircuitBreaker,
        _vec(NI),
        item_threshold=unit,
        trip=unit,
        pool_threshold=_opt(st.sampled_from([0.05, 0.2])),
        pool=_opt(_mask(NI, 0.6)),
        viewer_risk=_opt(_vec(NU)),
        min_interactions=st.integers(1, 3),
        strip_interactions=st.booleans(),
        protected=st.booleans(),
    ),
    ContextRisk: _build(
        ContextRisk,
        _vec(NI),
        threshold=st.sampled_from([0.2, 0.5, 1.0]),
        pool=_mask(NI, 0.6),
        new_viewer_interactions=st.integers(0, 12),
        new_viewer_share=st.sampled_from([0.0, 0.25, 1.0]),
        known_viewers=_opt(st.integers(0, NU)),
        strip_interactions=st.booleans(),
        exclude_viewed=st.booleans(),
        sticky=st.booleans(),
        strip_context=st.booleans(),
        protected=st.booleans(),
    ),
    ShareCap: _share_cap(),
    RelationshipRule: _build(
        RelationshipRule,
        _indices(NI),
        follows=_opt(_csr(NU, NI)),
        use_call_interactions=st.booleans(),
        action=st.sampled_from(["drop", "demote"]),
        weight=weights,
    ),
    RequireTie: _build(
        RequireTie,
        _indices(NI),
        graph=_csr(NI, NI),
        follows=_opt(_csr(NU, NI)),
        use_call_interactions=st.booleans(),
        min_shared=st.integers(1, 3),
        through=st.sampled_from(["followees", "followers", "both"]),
        max_followers=_opt(st.integers(0, 5)),
        through_targets=st.sampled_from([True, False, "anchored"]),
        exempt_viewers=_opt(_indices(NU)),
        action=st.sampled_from(["drop", "demote"]),
        weight=weights,
        protected=st.booleans(),
    ),
}


def test_every_builtin_has_a_strategy():
    assert set(STRATEGIES) == set(BUILTINS)


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_every_strategy_draws_every_spec_key(cls):
    """The round trip below is only as good as what its strategies draw: every argument
    of a filter's ``config_spec`` is drawn by its strategy (positionally or by keyword)."""
    seen: set[str] = set()
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @settings(max_examples=30, deadline=None, database=None)
    @given(spec=STRATEGIES[cls])
    def draw(spec):
        _, args, kw = spec
        seen.update(names[: len(args)])
        seen.update(kw)

    draw()
    assert set(cls.config_spec) <= seen, set(cls.config_spec) - seen


# ---------------------------------------------------------------------------- comparison
def _same(kind: str, a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if kind == "csr":
        return (sp.csr_matrix(a) != sp.csr_matrix(b)).nnz == 0
    if kind == "labels":
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        return np.array_equal(np.asarray(a), np.asarray(b))
    if kind in ("vector", "ints", "mask", "indices", "knots"):
        return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    if kind == "strs":
        return ([a] if isinstance(a, str) else list(a)) == list(b)
    if kind == "matrix":
        return [list(r) for r in a] == [list(r) for r in b]
    return a == b and type(a) is type(b) or (kind == "float" and float(a) == float(b))


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_every_builtin_round_trips_through_a_policy_file(cls, tmp_path_factory):
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(spec=STRATEGIES[cls])
    def round_trip(spec):
        _round_trip(spec, tmp_path_factory)

    round_trip()


def _round_trip(spec, tmp_path_factory):
    cls, args, kw = spec
    try:
        f = cls(*args, **kw)
    except ValidationError:
        assume(False)  # a combination the constructor rejects is not a filter
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    pol = Policy([f], name="round_trip")
    save_policy(pol, path)
    back = load_policy(path)
    g = back.filters[0]
    assert type(g) is cls
    assert g.fingerprint() == f.fingerprint()
    assert back.version == pol.version
    for key, kind in cls.config_spec.items():
        assert _same(kind, getattr(f, key), getattr(g, key)), key
    for key in ("name", "reason", "mode", "failure", "surfaces", "protected"):
        assert getattr(g, key) == getattr(f, key), key
