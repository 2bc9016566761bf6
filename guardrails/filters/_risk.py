"""Risk helpers shared by the safety filters and :func:`guardrails.default_policy`.

:func:`propagate_seed_risk` is where a filter turns seed accounts into neighbourhood
risk; the propagation itself is :func:`guardrails.expand.propagate`, the library's one
implementation.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_csr, check_float, fail
from ..expand import DEFAULT_DAMPING, propagate

__all__ = ["propagate_seed_risk", "check_damping", "seed_mask", "viewer_share"]


def seed_mask(seeds, n: int, name: str, where: str) -> np.ndarray:
    """Seeds given as a bool mask of length ``n`` or as indices in ``[0, n)``."""
    arr = np.asarray(seeds)
    if arr.dtype == bool:
        if arr.ndim != 1 or arr.shape[0] != n:
            raise fail(
                name, where, f"a bool mask of length {n} or an array of indices in [0, {n})", seeds
            )
        return arr.copy()
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise fail(
            name, where, f"a bool mask of length {n} or an array of indices in [0, {n})", seeds
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise fail(
            name,
            where,
            f"indices in [0, {n})",
            f"indices in [{arr.min()}, {arr.max()}]",
            describe=False,
        )
    out = np.zeros(n, dtype=bool)
    out[arr.astype(np.int64)] = True
    return out


def propagate_seed_risk(
    seeds,
    graph,
    *,
    alpha: float | None = None,
    where: str = "propagate_seed_risk",
) -> np.ndarray:
    """Risk in [0, 1] of every node of ``graph`` from flagged ``seeds``.

    Parameters
    ----------
    seeds : array-like of bool, shape (n,), or of int
        Flagged accounts.
    graph : sparse matrix, shape (n, n)
        Follow (or interaction) graph; treated as undirected, weights ignored in sign.
    alpha : float in (0, 1), optional
        Damping of the propagation (the weight of each further hop); ``None`` uses
        :data:`guardrails.expand.DEFAULT_DAMPING`.

    Returns
    -------
    risk : ndarray of float32, shape (n,)
        ``1`` on seeds; elsewhere the risk of :func:`guardrails.expand.propagate`
        (personalised PageRank from the seeds, walking edges both ways, on its documented
        scale).
    """
    g = check_csr(graph, "graph", where)
    if g.shape[0] != g.shape[1]:
        raise fail("graph", where, "a square sparse matrix (n, n)", g)
    n = g.shape[0]
    damping = DEFAULT_DAMPING if alpha is None else check_damping(alpha, "alpha", where)
    s = seed_mask(seeds, n, "seeds", where)
    if not s.any():
        return np.zeros(n, dtype=np.float32)
    # Thresholds of the risk filters are set on personalised PageRank's scale and order.
    risk = propagate(abs(g), np.flatnonzero(s), direction="both", damping=damping, method="ppr")
    risk = np.clip(np.asarray(risk, dtype=np.float32), 0.0, 1.0)
    risk[s] = 1.0
    return risk


def check_damping(value, name: str, where: str) -> float:
    """A damping (continuation probability) in the open interval (0, 1)."""
    d = check_float(value, name, where, low=0.0, high=1.0, low_open=True)
    if d >= 1.0:
        raise fail(name, where, "a float in (0.0, 1.0)", value)
    return d


def viewer_share(user_items: sp.csr_matrix, risky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted share of each row's interactions that fall on ``risky`` columns.

    One sparse mat-vec per batch.

    Returns
    -------
    share : ndarray of float64, shape (m,)
        ``sum(|w| on risky) / sum(|w|)`` per row, 0 for rows without interactions.
    count : ndarray of int64, shape (m,)
        Number of interactions per row.
    """
    w = abs(user_items)
    total = np.asarray(w.sum(axis=1)).ravel()
    on_risky = w @ risky.astype(np.float64)
    share = np.divide(on_risky, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)
    return share, np.diff(user_items.indptr).astype(np.int64)
