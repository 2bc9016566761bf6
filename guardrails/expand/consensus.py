"""Risk that several independent signals agree on, with thresholds read off the data.

One propagated signal separates a camouflaged network from ordinary accounts only in
part: camouflage follows pull benign accounts up, noise follows and hubs dilute network
accounts down, and *which* benign accounts a signal pulls up differs between signals. The
follow graph (:func:`~guardrails.expand.propagate`), co-engagement over the recommender's
own interactions (:func:`~guardrails.expand.coengagement_risk`) and proximity in the
model's factor space (:func:`~guardrails.expand.embedding_risk`) make different mistakes,
so :func:`consensus_risk` takes their **geometric mean**: an account is risky when the
signals agree, and one signal's false positive is damped by the others.

Thresholds are not constants: :func:`calibrate` reads them off the catalogue's own risk
distribution, in log space, from its median ``m`` and its upper spread ``s`` (the
distance from the median to the 75th percentile). Most of a catalogue is benign, so
``m`` and ``s`` describe the benign bulk on any platform, whatever its size, density or
amount of seed evidence; ``m + k s`` then means "k spreads above the typical account".
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_csr, check_float, fail

__all__ = ["consensus_risk", "calibrate", "DEFAULT_TERM_WEIGHT"]

#: Weight of an account that uses flagged terms, as a soft seed (times its term risk).
DEFAULT_TERM_WEIGHT = 0.5
_TERM_DIRECT = 0.5
_FLOOR = 1e-9


def consensus_risk(
    seeds,
    *,
    graph=None,
    interactions=None,
    item_factors=None,
    account_terms=None,
    seed_terms=None,
    term_weight: float = DEFAULT_TERM_WEIGHT,
) -> tuple[np.ndarray, dict]:
    """Geometric mean of the risk from every signal given, seeds at 1.

    Parameters
    ----------
    seeds : array-like of int or bool
        Flagged accounts.
    graph : sparse matrix, shape (n, n), optional, keyword-only
        Follow graph; risk propagates both ways.
    interactions : sparse matrix, shape (n_users, n), optional, keyword-only
        The model's interaction matrix (co-engagement).
    item_factors : array-like, shape (n, f), optional, keyword-only
        The model's item factors (proximity to the seeds, cosine above 0).
    account_terms : sparse matrix, shape (n, n_terms), optional, keyword-only
    seed_terms : array-like of int, optional, keyword-only
        Flagged terms: accounts using them are soft seeds of weight ``term_weight``
        times their term risk, and their own term weight is taken off their risk (an
        account is never risky for its own hashtags alone).
    term_weight : float, keyword-only

    Returns
    -------
    risk : ndarray of float32, shape (n,), in [0, 1]
    parts : dict of str to ndarray of float32
        Each signal's own risk (``"graph"``, ``"coengagement"``, ``"embedding"``).
    """
    from .bipartite import coengagement_risk, term_risk
    from .propagate import propagate
    from .proximity import embedding_risk

    where = "consensus_risk"
    term_weight = check_float(term_weight, "term_weight", where, low=0.0, high=1.0)
    n = None
    if graph is not None:
        graph = check_csr(graph, "graph", where)
        n = graph.shape[0]
    if interactions is not None:
        interactions = check_csr(interactions, "interactions", where)
        n = interactions.shape[1] if n is None else n
    if item_factors is not None:
        item_factors = np.asarray(item_factors, dtype=np.float32)
        n = item_factors.shape[0] if n is None else n
    if n is None:
        raise fail("graph", where, "given, or interactions or item_factors given", None)
    for name, size in (
        ("interactions", None if interactions is None else interactions.shape[1]),
        ("item_factors", None if item_factors is None else item_factors.shape[0]),
    ):
        if size is not None and size != n:
            raise fail(name, where, f"sized for {n} accounts", f"{size} accounts", describe=False)
    s = np.asarray(seeds)
    mask = np.zeros(n, dtype=bool)
    if s.dtype == bool:
        if s.shape != (n,):
            raise fail("seeds", where, f"a bool mask of length {n} or indices", seeds)
        mask = s.copy()
    elif s.size:
        if not np.issubdtype(s.dtype, np.integer) or s.min() < 0 or s.max() >= n:
            raise fail("seeds", where, f"indices in [0, {n})", seeds)
        mask[s.astype(np.int64)] = True
    w = mask.astype(np.float32)
    soft = np.zeros(n, dtype=np.float32)
    if account_terms is not None and seed_terms is not None and np.size(seed_terms):
        at = check_csr(account_terms, "account_terms", where)
        acc, _ = term_risk(abs(at), seed_terms=np.asarray(seed_terms, dtype=np.int64))
        acc = np.asarray(acc, dtype=np.float32)
        soft = np.where(acc >= _TERM_DIRECT, term_weight * acc, 0.0)
        soft = np.where(mask, 0.0, soft).astype(np.float32)
        w = np.maximum(w, soft)
    parts: dict[str, np.ndarray] = {}
    idx = np.flatnonzero(w > 0)
    if idx.size == 0:
        return np.zeros(n, dtype=np.float32), parts
    if graph is not None:
        parts["graph"] = np.asarray(
            propagate(abs(graph), idx, weights=w[idx], direction="both"), np.float32
        )
    if interactions is not None:
        parts["coengagement"] = np.asarray(
            coengagement_risk(abs(interactions), idx, weights=w[idx])[0], np.float32
        )
    if item_factors is not None:
        parts["embedding"] = np.asarray(
            embedding_risk(item_factors, idx, weights=w[idx], radius=0.0), np.float32
        )
    logs = [np.log(np.maximum(np.clip(p - soft, 0.0, 1.0), _FLOOR)) for p in parts.values()]
    risk = np.exp(np.mean(logs, axis=0)).astype(np.float32)
    risk[mask] = 1.0
    return np.clip(risk, 0.0, 1.0), parts


def calibrate(
    risk,
    *,
    exclude=None,
    k: float,
    cap: float | None = None,
) -> float:
    """The threshold ``k`` upper spreads above the catalogue's median, in log space.

    Parameters
    ----------
    risk : array-like of float, shape (n,)
    exclude : array-like of bool, shape (n,), optional, keyword-only
        Accounts left out of the distribution (the seeds).
    k : float, keyword-only
        Spreads above the median (``0`` gives the median itself).
    cap : float, optional, keyword-only
        At most this share of the (non-excluded) accounts may lie at or above the
        threshold: it is raised to that quantile when needed (a collateral cap).

    Returns
    -------
    float
        In (0, 1].
    """
    where = "calibrate"
    r = np.asarray(risk, dtype=np.float64)
    if exclude is not None:
        r = r[~np.asarray(exclude, dtype=bool)]
    k = check_float(k, "k", where, low=0.0)
    if r.size == 0:
        return 1.0
    lr = np.log(np.maximum(r, _FLOOR))
    m = float(np.median(lr))
    spread = max(float(np.quantile(lr, 0.75)) - m, 1e-3)
    t = math.exp(min(0.0, m + k * spread))
    if cap is not None:
        cap = check_float(cap, "cap", where, low=0.0, high=1.0, low_open=True)
        t = max(t, float(np.quantile(r, 1.0 - cap)) + 1e-7)
    return float(min(1.0, max(t, _FLOOR)))
