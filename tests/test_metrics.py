"""The optional Prometheus collector: decision counters and ServingGuard health."""

from __future__ import annotations

import numpy as np
import pytest

import guardrails as gr
from guardrails.core.plan import PlanPart
from guardrails.filters import BlockItems, Filter

prometheus_client = pytest.importorskip("prometheus_client")

from guardrails.metrics import GuardCollector, register_metrics  # noqa: E402


class BlockFlagged(Filter):
    name = "block_flagged"
    reason = "labelled"

    def params(self):
        return ()

    def compile_global(self, catalog):
        snap = catalog.snapshot
        return None if snap is None else PlanPart(self.name, self.reason, hard_mask=snap.blocked)


class _Snap:
    def __init__(self, version, at, blocked):
        self.version, self.at, self.blocked = version, at, blocked


def _value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_decision_counters_and_health_are_exported():
    rng = np.random.default_rng(0)
    model = gr.FactorModel(rng.normal(size=(10, 4)), rng.normal(size=(30, 4)))
    now = [1000.0]
    blocked = np.zeros(30, bool)
    blocked[:3] = True
    guard = gr.Guard(model, [BlockItems([5]), BlockFlagged()], snapshot=_Snap("v1", 990.0, blocked))
    serving = gr.ServingGuard(guard, max_snapshot_age=60, clock=lambda: now[0])
    registry = prometheus_client.CollectorRegistry()
    collector = register_metrics(guard, serving=serving, registry=registry)
    assert isinstance(collector, GuardCollector)

    serving.recommend(np.arange(10), None, N=5, filter_already_liked_items=False)
    assert _value(registry, "guardrails_decisions_total", counter="calls") == 1
    assert _value(registry, "guardrails_decisions_total", counter="rows") == 10
    assert _value(registry, "guardrails_serving_events_total", event="served") == 1
    assert _value(registry, "guardrails_serving_healthy") == 1
    assert _value(registry, "guardrails_snapshot_age_seconds") == 10
    info = dict(policy_version=guard.policy_version, snapshot_version="v1", model="FactorModel")
    assert _value(registry, "guardrails_guard_info", **info) == 1

    # The snapshot ages out: the service fails closed and the metrics say so.
    now[0] = 2000.0
    with pytest.raises(gr.FailClosedError):
        serving.recommend(0, None, N=5, filter_already_liked_items=False)
    assert _value(registry, "guardrails_serving_healthy") == 0
    assert _value(registry, "guardrails_serving_events_total", event="stale") == 1
    assert _value(registry, "guardrails_serving_events_total", event="refused") == 1
    text = prometheus_client.generate_latest(registry).decode()
    assert "# TYPE guardrails_decisions_total counter" in text

    # A Guard alone (no ServingGuard) exports its counters only.
    alone = prometheus_client.CollectorRegistry()
    register_metrics(guard, registry=alone, namespace="recs")
    assert _value(alone, "recs_decisions_total", counter="calls") == 1
    assert _value(alone, "recs_serving_healthy") is None


def test_collector_needs_a_guard():
    with pytest.raises(gr.ValidationError, match="guard"):
        GuardCollector()
