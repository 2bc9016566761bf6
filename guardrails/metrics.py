"""Prometheus metrics for a Guard and a ServingGuard (optional extra ``metrics``).

:class:`GuardCollector` is a prometheus-client collector: it reads the Guard's decision
counters and the ServingGuard's health when Prometheus scrapes, so serving pays nothing
per call for it. Register it once and expose the registry the usual way::

    from prometheus_client import start_http_server
    from guardrails.metrics import register_metrics

    register_metrics(guard, serving=serving)   # the default registry
    start_http_server(9100)

Metrics (``namespace`` defaults to ``guardrails``):

``guardrails_decisions_total{counter}``
    Counter. Every entry of :meth:`Guard.decision_counters`: ``calls``, ``rows``,
    ``padded`` and ``<filter>/<what>`` (see :class:`~guardrails.DecisionCounters`).
``guardrails_serving_events_total{event}``
    Counter. ServingGuard outcomes: ``served``, ``fallback``, ``refused``,
    ``load_failures`` and the fail-closed reasons ``missing``, ``unreadable``, ``stale``,
    ``unstable``.
``guardrails_serving_healthy``
    Gauge, 1 while the held snapshot may be served (``ServingGuard.check()``), else 0.
``guardrails_snapshot_age_seconds``
    Gauge, age of the held snapshot (absent when there is none or it has no time).
``guardrails_guard_info{policy_version, snapshot_version, model}``
    Gauge, always 1: what the Guard is serving now.

Counters restart from zero when the Guard is rebuilt or its counters are reset with
``decision_counters(reset=True)``; Prometheus' ``rate`` handles such resets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from .exceptions import missing_extra

__all__ = ["GuardCollector", "register_metrics"]


def _prometheus() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:
        raise missing_extra("prometheus_client", "metrics", "guardrails.metrics") from exc
    return core


class GuardCollector:
    """Collects a Guard's decision counters and, optionally, a ServingGuard's health.

    Parameters
    ----------
    guard : Guard
        The Guard whose counters are exported (``serving.guard`` when omitted).
    serving : ServingGuard, optional, keyword-only
        Its ``stats``, ``check()`` and snapshot age are exported too.
    namespace : str, keyword-only
        Prefix of every metric name.

    Raises
    ------
    MissingDependencyError
        When prometheus-client is not installed (``pip install 'recsys-guardrails[metrics]'``).
    """

    def __init__(self, guard=None, *, serving=None, namespace: str = "guardrails"):
        self._core = _prometheus()
        if guard is None and serving is None:
            from ._validation import fail

            raise fail("guard", "GuardCollector", "a Guard (or a ServingGuard as serving)", None)
        self.guard = guard if guard is not None else serving.guard
        self.serving = serving
        self.namespace = namespace

    def describe(self) -> list:
        # Metric names are fixed, but describing them would collect once at registration;
        # an empty description registers the collector without that extra read.
        return []

    def collect(self) -> Iterator[Any]:
        core, ns = self._core, self.namespace
        decisions = core.CounterMetricFamily(
            f"{ns}_decisions", "What the Guard's policy did, by counter name.", labels=["counter"]
        )
        for name, value in self.guard.decision_counters().items():
            decisions.add_metric([name], float(value))
        yield decisions

        snap = self.guard.snapshot
        info = core.GaugeMetricFamily(
            f"{ns}_guard_info",
            "What the Guard serves now (always 1).",
            labels=["policy_version", "snapshot_version", "model"],
        )
        snap_version = getattr(snap, "version", None) if snap is not None else None
        model = type(self.guard.model).__name__
        info.add_metric(
            [self.guard.policy_version, "" if snap_version is None else str(snap_version), model],
            1.0,
        )
        yield info

        if self.serving is None:
            return
        events = core.CounterMetricFamily(
            f"{ns}_serving_events",
            "ServingGuard outcomes and fail-closed reasons.",
            labels=["event"],
        )
        for name, value in dict(self.serving.stats).items():
            events.add_metric([name], float(value))
        yield events
        ok, _, _ = self.serving.check()
        yield core.GaugeMetricFamily(
            f"{ns}_serving_healthy",
            "1 while the held snapshot may be served, else 0.",
            value=1.0 if ok else 0.0,
        )
        at = getattr(snap, "at", None) if snap is not None else None
        try:
            age = math.nan if at is None else self.serving.clock() - float(at)
        except (TypeError, ValueError):
            age = math.nan
        if math.isfinite(age):
            yield core.GaugeMetricFamily(
                f"{ns}_snapshot_age_seconds", "Age of the held snapshot.", value=age
            )


def register_metrics(guard=None, *, serving=None, registry=None, namespace: str = "guardrails"):
    """Register a :class:`GuardCollector` with a prometheus-client registry.

    Parameters
    ----------
    guard : Guard, optional
    serving : ServingGuard, optional, keyword-only
    registry : CollectorRegistry, optional, keyword-only
        prometheus-client's default ``REGISTRY`` when omitted.
    namespace : str, keyword-only

    Returns
    -------
    GuardCollector
        The registered collector (``registry.unregister(collector)`` removes it).
    """
    collector = GuardCollector(guard, serving=serving, namespace=namespace)
    if registry is None:
        from prometheus_client import REGISTRY as registry
    registry.register(collector)
    return collector
