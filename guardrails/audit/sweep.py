"""Trade-off sweep: exposure to the network against recommendation quality, over policy knobs.

Each point of the sweep is one guard configuration evaluated on the same platform and
model: *exposure* is the mean share of network accounts over every step of the
follow-a-handful and search-start walks (and the view-one slates), *quality* is benign
recall@10 relative to the unguarded recommender. :func:`pareto_front` keeps the points no
other point beats on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .guards import (
    audit_guard,
    default_guard_policy,
    default_policy_available,
    primitive_policy,
)
from .metrics import ranking_quality
from .platform import Platform
from .walks import follow_handful, search_start, view_one

__all__ = [
    "SweepPoint",
    "exposure",
    "run_sweep",
    "pareto_front",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_WEIGHTS",
]

#: Risk thresholds of ``SuppressRisk`` swept by default (1.0 suppresses only the seeds).
DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 1.0)
#: Demotion weights of ``DemoteRisk`` swept by default.
DEFAULT_WEIGHTS = (0.0, 4.0)


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of the sweep."""

    #: What the point guards with: ``"unguarded"``, ``"primitive"`` (the primitive
    #: filters) or ``"default_policy"``.
    name: str
    #: The policy knobs of this point.
    knobs: dict = field(default_factory=dict)
    #: Mean network share over all walk steps, in [0, 1].
    exposure: float = 0.0
    #: Mean share of minors' accounts over the follow and search walks, in [0, 1].
    vulnerable_exposure: float = 0.0
    #: Benign recall@10.
    recall: float = 0.0
    #: ``recall`` over the unguarded recall.
    recall_ratio: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "knobs": self.knobs,
            "exposure": self.exposure,
            "vulnerable_exposure": self.vulnerable_exposure,
            "recall": self.recall,
            "recall_ratio": self.recall_ratio,
        }


def exposure(
    guard, platform: Platform, *, n_walkers: int = 10, n_steps: int = 4, seed: int = 0
) -> tuple[float, float]:
    """Mean network share and mean minors' share over short walks of every kind.

    Returns
    -------
    (network_exposure, vulnerable_exposure) : tuple of float
    """
    walks = [
        view_one(guard, platform, n_views=n_walkers, seed=seed),
        follow_handful(guard, platform, n_walkers=n_walkers, n_steps=n_steps, seed=seed),
    ]
    if getattr(platform, "has_search", True):  # own data without flagged terms: no search
        walks.append(search_start(guard, platform, n_walkers=n_walkers, n_steps=n_steps, seed=seed))
    net = float(np.mean([w.network_share.mean() for w in walks]))
    vul = float(np.mean([w.vulnerable_share.mean() for w in walks[1:]]))
    return net, vul


def run_sweep(
    model,
    platform: Platform,
    risk: np.ndarray,
    users: np.ndarray,
    *,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    weights: Iterable[float] = DEFAULT_WEIGHTS,
    strictness: Iterable[str] = ("strict", "balanced"),
    n_walkers: int = 10,
    n_steps: int = 4,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> list[SweepPoint]:
    """Evaluate the unguarded model, a grid of primitive policies and ``default_policy`` levels.

    Parameters
    ----------
    model : fitted implicit model
    platform : Platform
    risk : ndarray of float32, shape (n_accounts,)
        Risk for the primitive policies (:func:`~guardrails.audit.guards.seed_risk`).
    users : ndarray of int64
        Benign evaluation users (held-out follows).
    thresholds, weights : iterables of float, keyword-only
        Grid of ``SuppressRisk`` thresholds and ``DemoteRisk`` weights.
    strictness : iterable of str, keyword-only
        ``default_policy`` levels (skipped when the library has no ``default_policy``).
    n_walkers, n_steps, seed : keyword-only
        Size of the walks per point.
    progress : callable, optional, keyword-only
        Called once per finished point.

    Returns
    -------
    list of SweepPoint
        The unguarded point first.
    """
    configs: list[tuple[str, dict, object]] = [("unguarded", {}, None)]
    for t in thresholds:
        for w in weights:
            configs.append(
                ("primitive", {"threshold": float(t), "weight": float(w)}, ("primitive", t, w))
            )
    if default_policy_available():
        for s in strictness:
            configs.append(("default_policy", {"strictness": s}, ("default", s)))
    base_recall = None
    points = []
    for name, knobs, spec in configs:
        if spec is None:
            policy = None
        elif spec[0] == "primitive":
            policy = primitive_policy(platform, risk, threshold=spec[1], weight=spec[2])
        else:
            policy = default_guard_policy(platform, strictness=spec[1])
        guard = audit_guard(model, policy, platform)
        net, vul = exposure(guard, platform, n_walkers=n_walkers, n_steps=n_steps, seed=seed)
        q = ranking_quality(guard, platform, users)
        if base_recall is None:
            base_recall = q["recall"]
        ratio = q["recall"] / base_recall if base_recall else float("nan")
        points.append(SweepPoint(name, knobs, net, vul, q["recall"], ratio))
        if progress is not None:
            progress()
    return points


def pareto_front(points: list[SweepPoint]) -> list[SweepPoint]:
    """Points not dominated in (lower exposure, higher recall), sorted by exposure.

    A point is dominated when another has exposure no higher and recall no lower, and is
    strictly better in one of them.
    """
    front = []
    for p in points:
        dominated = any(
            (q.exposure <= p.exposure and q.recall >= p.recall)
            and (q.exposure < p.exposure or q.recall > p.recall)
            for q in points
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.exposure, -p.recall))
