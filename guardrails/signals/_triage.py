"""Triage of pending reports: the priority formula, its weights, and the ranking.

The formula is documented on :class:`TriageWeights`; :func:`rank` scores the reports a
:class:`~guardrails.signals.ReportQueue` reads as pending, inside the queue's read or
write transaction (the reporter counts and label risks come from the same state).
"""

from __future__ import annotations

import math
import numbers
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._validation import check_float, check_int, fail
from .store import effective_risk

if TYPE_CHECKING:
    from .reports import Report

__all__ = ["DEFAULT_CATEGORY_WEIGHTS", "TriageWeights", "TriageEntry", "rank"]


#: Report categories weighted 1.0 by default triage; any other category gets
#: ``TriageWeights.default_category_weight``. Platforms should set their own.
DEFAULT_CATEGORY_WEIGHTS: Mapping[str, float] = {
    "csam": 1.0,
    "child_sexual_exploitation": 1.0,
    "child_safety": 1.0,
    "sexualised_minor": 1.0,
    "csam_seller": 1.0,
    "csam_buyer": 1.0,
    "grooming": 1.0,
    "trafficking": 1.0,
    "violent_threat": 0.8,
    "self_harm": 0.8,
    "harassment": 0.5,
    "spam": 0.1,
}


@dataclass(frozen=True)
class TriageWeights:
    """Weights of the triage priority (see :meth:`ReportQueue.triage`).

    ``priority = risk * r + reporters * min(1, log1p(n) / log1p(reporters_saturation))
    + category * w(c) + age * min(1, age_s / age_saturation_s)``, where ``r`` is the
    reported subject's risk in [0, 1], ``n`` the number of distinct reporters of the
    subject among unresolved reports, ``w(c)`` the weight of the report's category and
    ``age_s`` the report's age.
    """

    risk: float = 4.0
    reporters: float = 2.0
    category: float = 2.0
    age: float = 1.0
    reporters_saturation: int = 10
    age_saturation_s: float = 72 * 3600.0
    category_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_CATEGORY_WEIGHTS)
    )
    default_category_weight: float = 0.5

    def __post_init__(self) -> None:
        where = "TriageWeights"
        for name in ("risk", "reporters", "category", "age"):
            check_float(getattr(self, name), name, where, low=0.0)
        check_int(self.reporters_saturation, "reporters_saturation", where, low=1)
        check_float(self.age_saturation_s, "age_saturation_s", where, low=0.0, low_open=True)
        check_float(
            self.default_category_weight, "default_category_weight", where, low=0.0, high=1.0
        )
        for k, v in dict(self.category_weights).items():
            if not isinstance(k, str):
                raise fail("category_weights", where, "a mapping of str to floats in [0, 1]", k)
            check_float(v, "category_weights", where, low=0.0, high=1.0)


@dataclass(frozen=True)
class TriageEntry:
    """One pending report with its priority and the parts it was computed from."""

    report: Report
    priority: float
    risk: float
    label_risk: float
    neighbourhood_risk: float
    reporters: int
    category_weight: float
    age_s: float


def rank(
    conn: sqlite3.Connection,
    reports: list[Report],
    t: float,
    w: TriageWeights,
    nrisk: Any,
    limit: int | None,
) -> list[TriageEntry]:
    """Triage entries of ``reports`` as of ``t``, most dangerous first.

    Sorted by priority (descending), then age (oldest first), then arrival; at most
    ``limit`` entries.
    """
    counts = {
        (kind, type(s) is str, s): int(n)
        for kind, s, n in conn.execute(
            "SELECT kind, subject, count(DISTINCT reporter) FROM reports "
            "WHERE state IN ('pending', 'claimed', 'dead') GROUP BY kind, subject"
        )
    }
    label_risk: dict = {}
    for kind in {r.kind for r in reports}:
        subjects = list({r.subject: None for r in reports if r.kind == kind})
        for key, v in effective_risk(conn, kind, subjects, t).items():
            label_risk[(kind, *key)] = v
    cw = dict(w.category_weights)
    sat = math.log1p(w.reporters_saturation)
    out = []
    for rep in reports:
        skey = (rep.kind, type(rep.subject) is str, rep.subject)
        lr = label_risk.get(skey, 0.0)
        nr = _neighbourhood(nrisk, rep.subject)
        risk = max(lr, nr)
        n_rep = counts.get(skey, 1)
        cat_w = cw.get(rep.category, w.default_category_weight)
        age = max(0.0, t - rep.created_at)
        prio = (
            w.risk * risk
            + w.reporters * min(1.0, math.log1p(n_rep) / sat)
            + w.category * cat_w
            + w.age * min(1.0, age / w.age_saturation_s)
        )
        out.append(TriageEntry(rep, prio, risk, lr, nr, n_rep, cat_w, age))
    out.sort(key=lambda e: (-e.priority, e.report.created_at, e.report.seq))
    return out if limit is None else out[:limit]


def _neighbourhood(nrisk, subject) -> float:
    if nrisk is None:
        return 0.0
    v = nrisk(subject) if callable(nrisk) else nrisk.get(subject, 0.0)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) <= 1.0):
        raise fail(
            "neighbourhood_risk",
            "ReportQueue.triage",
            "risks in [0, 1]",
            f"{v!r} for {subject!r}",
            describe=False,
        )
    return float(v)
