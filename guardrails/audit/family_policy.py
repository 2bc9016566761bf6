"""Candidate defaults evaluated on the platform family: multi-signal risk, data-calibrated
thresholds and viewing-context risk.

:func:`calibrated_policy` has :func:`guardrails.default_policy`'s filters in its order, with
three changes, each aimed at a way the current defaults fail on platforms they were not
tuned on (issue 12):

1. risk is the consensus (geometric mean) of graph propagation, co-engagement and, when
   the model's item factors are given, embedding proximity to the seeds
   (:func:`guardrails.expand.consensus.consensus_risk`), instead of their maximum;
2. thresholds are read off the catalogue's own risk distribution
   (:func:`guardrails.expand.consensus.calibrate`): drop at ``DROP_K`` upper spreads above
   the median, demote from ``DEMOTE_K``; the low-risk pool is the less risky half;
3. :class:`guardrails.filters.ContextRisk`: the profile being viewed, or a new
   account's first follows, in the demotion band or above, gets the low-risk pool only,
   and the viewed account is outside that pool, so a risky but unflagged profile never
   suggests its neighbourhood or itself.

The constants were chosen on the family's *tuning* seeds only
(:func:`guardrails.audit.family.family_seeds` with ``split="tuning"``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import guardrails as gr

from ..expand.consensus import calibrate, consensus_risk
from ..filters import (
    CohortRule,
    ContextRisk,
    DemoteRisk,
    ShareCap,
    SuppressNeighborhood,
    ViewerCircuitBreaker,
)
from .platform import Platform

__all__ = [
    "calibrated_policy",
    "calibrated_guard_policy",
    "default_with_context",
    "DROP_K",
    "DEMOTE_K",
    "DROP_CAP",
]

#: Drop at this many upper spreads (median to 75th percentile, log risk) above the median.
DROP_K = 4.5
#: Demote (and treat as a risky context) from this many spreads above the median.
DEMOTE_K = 2.0
#: At most this share of the catalogue dropped for its neighbourhood.
DROP_CAP = 0.02
#: A viewed profile (or a new account's follow) at this many spreads is a risky context.
CONTEXT_K = 2.0
#: Accounts the model does not know with at most this many follows are new accounts.
NEW_VIEWER = 10
#: Add embedding proximity to the consensus when the model is known (off: on the tuning
#: seeds it lowered the risk of sub-networks with no known seed, which have no seed
#: nearby in factor space).
USE_EMBEDDING = False
#: Share cap (at most 10% of a slate) on accounts this many spreads above the median.
CAP_K: float | None = None
#: Minors' protection: share of a viewer's interactions in the flagged band that trips it
#: (one follow of a dropped account always does).
MINOR_TRIP = 0.1
#: Viewer circuit breaker: share of interactions on dropped accounts that trips it.
TRIP = 0.3


def calibrated_policy(
    *,
    seeds,
    graph=None,
    interactions=None,
    item_factors=None,
    account_terms=None,
    seed_terms=None,
    minors=None,
    minor_viewers=None,
    name: str = "calibrated",
) -> gr.Policy:
    """The candidate default policy (see the module docstring).

    Parameters are those of :func:`guardrails.default_policy`, plus ``item_factors``
    (the model's item factors, for the embedding signal).

    Returns
    -------
    guardrails.Policy
    """
    risk, _ = consensus_risk(
        seeds,
        graph=graph,
        interactions=interactions,
        item_factors=item_factors,
        account_terms=account_terms,
        seed_terms=seed_terms,
    )
    n = risk.shape[0]
    seed_arg = np.zeros(n, dtype=bool)
    seed_arg[np.asarray(seeds, dtype=np.int64)] = True
    minor_mask = None
    if minors is not None:
        minor_mask = np.asarray(minors, dtype=bool)
        # Minors' accounts are the network's targets: protected by viewer rules, not
        # dropped for the risk that buyers' follows give them.
        risk = np.where(minor_mask & ~seed_arg, 0.0, risk).astype(np.float32)
    drop_t = calibrate(risk, exclude=seed_arg, k=DROP_K, cap=DROP_CAP)
    demote_t = min(drop_t, calibrate(risk, exclude=seed_arg, k=DEMOTE_K))
    cap_t = min(drop_t, calibrate(risk, exclude=seed_arg, k=CAP_K or 0.0))
    context_t = min(demote_t, calibrate(risk, exclude=seed_arg, k=CONTEXT_K))
    pool_t = min(context_t, calibrate(risk, exclude=seed_arg, k=0.0))
    risky = (risk >= drop_t) | seed_arg
    viewer_risk = None
    if interactions is not None and interactions.shape[1] == n:
        ui = abs(sp.csr_matrix(interactions))
        total = np.asarray(ui.sum(axis=1)).ravel()
        on_risky = ui @ risky.astype(np.float64)
        viewer_risk = np.where(total > 0, on_risky / np.maximum(total, 1e-12), 0.0)
        viewer_risk = np.clip(viewer_risk, 0.0, 1.0).astype(np.float32)
    pool = (risk <= pool_t) & ~seed_arg
    if minor_mask is not None:
        pool &= ~minor_mask
    breaker_risk = np.where(risky, np.float32(1.0), risk).astype(np.float32)
    filters: list = [
        SuppressNeighborhood(risk, threshold=drop_t, seeds=seed_arg),
        DemoteRisk(risk, weight=0.5, curve="sqrt", floor=demote_t),
        ViewerCircuitBreaker(
            breaker_risk, item_threshold=drop_t, trip=TRIP, pool=pool, viewer_risk=viewer_risk
        ),
        ContextRisk(
            breaker_risk,
            threshold=context_t,
            pool=pool,
            new_viewer_interactions=NEW_VIEWER,
            known_viewers=None if interactions is None else interactions.shape[0],
        ),
    ]
    if minor_mask is not None and minor_mask.any():
        # Any interaction (or viewed profile) in the flagged band, not only on dropped
        # accounts: minors' accounts are what buyers look for.
        stored = None
        if interactions is not None and interactions.shape[1] == n:
            # Stored: any follow of a dropped account, or MINOR_TRIP of them in the band.
            ui = abs(sp.csr_matrix(interactions))
            total = np.maximum(np.asarray(ui.sum(axis=1)).ravel(), 1e-12)
            band = ((risk >= demote_t) | seed_arg).astype(np.float64)
            on_band = (ui @ band) / total
            on_drop = ui @ risky.astype(np.float64)
            stored = ((on_band >= MINOR_TRIP) | (on_drop > 0)).astype(np.float32)
        filters.append(
            ViewerCircuitBreaker(
                breaker_risk,
                item_threshold=demote_t,
                trip=MINOR_TRIP,
                pool=~minor_mask,
                viewer_risk=stored,
                strip_interactions=False,
                reason="minors_protected",
                name="protect_minors",
            )
        )
    if minor_viewers is not None:
        mv = np.asarray(minor_viewers, dtype=bool)
        cand = np.where((risk >= demote_t) | seed_arg, 0, -1).astype(np.int64)
        filters.append(
            CohortRule(
                mv.astype(np.int64),
                cand,
                [["allow"], ["drop"]],
                viewer_labels=("adult", "minor"),
                candidate_labels=("flagged_band",),
                reason="minor_viewer_protected",
                name="minor_viewers",
            )
        )
    if CAP_K is not None:
        filters.append(ShareCap(max_share=0.1, risk=risk, threshold=cap_t, name="share_cap_risky"))
    return gr.Policy(filters, name=name)


def calibrated_guard_policy(platform: Platform, model=None) -> gr.Policy:
    """:func:`calibrated_policy` from what the platform knows (no ground truth).

    The same signals as :func:`guardrails.audit.guards.default_guard_policy`, plus the
    model's item factors when ``model`` is a factor model.
    """
    factors = getattr(model, "item_factors", None) if model is not None else None
    if factors is not None and not isinstance(factors, np.ndarray):
        factors = None
    return calibrated_policy(
        seeds=platform.known_seeds,
        graph=platform.train,
        interactions=platform.train,
        item_factors=factors if USE_EMBEDDING else None,
        account_terms=platform.hashtags,
        seed_terms=platform.flagged_tags,
        minors=platform.vulnerable,
        minor_viewers=platform.vulnerable,
    )


def default_with_context(platform: Platform, model=None) -> gr.Policy:
    """``default_policy`` as shipped, plus :class:`~guardrails.filters.ContextRisk` on its
    own demotion band (the smallest change that closes the "view one" hole).

    The context filter reads the shipped policy's risk, demotion floor and low-risk pool
    from its filters, so the thresholds are exactly those of ``default_policy``.
    """
    from .guards import default_guard_policy

    base = default_guard_policy(platform)
    by_name = {f.name: f for f in base.filters}
    breaker = by_name["viewer_circuit_breaker"]
    demote_t = by_name["demote_risk"].floor
    ctx = ContextRisk(
        breaker.risk,
        threshold=max(demote_t, 1e-6),
        pool=breaker.low_risk_pool(),
        new_viewer_interactions=NEW_VIEWER,
        known_viewers=platform.n_accounts,
    )
    filters = list(base.filters)
    at = next((i for i, f in enumerate(filters) if f.name == "share_cap_risky"), len(filters))
    filters.insert(at, ctx)
    return gr.Policy(filters, name="default+context")
