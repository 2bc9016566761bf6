"""Risk helpers shared by the safety filters and :func:`guardrails.default_policy`.

:func:`propagate_seed_risk` is the one place where seed accounts become neighbourhood
risk. It calls :func:`guardrails.expand.propagate` when that module is available and
falls back to a small personalised PageRank otherwise, so the filters work either way.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_csr, check_float, check_int, fail

__all__ = ["propagate_seed_risk", "seed_mask", "viewer_share"]


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
    alpha: float = 0.5,
    n_iter: int = 30,
    where: str = "propagate_seed_risk",
) -> np.ndarray:
    """Risk in [0, 1] of every node of ``graph`` from flagged ``seeds``.

    Parameters
    ----------
    seeds : array-like of bool, shape (n,), or of int
        Flagged accounts.
    graph : sparse matrix, shape (n, n)
        Follow (or interaction) graph; treated as undirected, weights ignored in sign.
    alpha, n_iter : float, int
        Parameters of the fallback propagation only (used when
        :mod:`guardrails.expand` cannot be imported).

    Returns
    -------
    risk : ndarray of float32, shape (n,)
        ``1`` on seeds; elsewhere the risk of :func:`guardrails.expand.propagate`
        (personalised PageRank from the seeds, walking edges both ways, on its documented
        scale). The fallback is the share of a node's neighbours that are flagged, with
        each further hop discounted by ``alpha``.
    """
    g = check_csr(graph, "graph", where)
    if g.shape[0] != g.shape[1]:
        raise fail("graph", where, "a square sparse matrix (n, n)", g)
    n = g.shape[0]
    alpha = check_float(alpha, "alpha", where, low=0.0, high=1.0, low_open=True)
    n_iter = check_int(n_iter, "n_iter", where)
    s = seed_mask(seeds, n, "seeds", where)
    if not s.any():
        return np.zeros(n, dtype=np.float32)
    try:
        from ..expand import propagate
    except ImportError:  # pragma: no cover - expand ships with the package
        propagate = None
    if propagate is not None:
        risk = np.asarray(propagate(abs(g), np.flatnonzero(s), direction="both"), dtype=np.float32)
        risk = np.clip(risk, 0.0, 1.0)
        risk[s] = 1.0
        return risk
    return _mean_walk_risk(g, s, alpha, n_iter)


def _mean_walk_risk(g: sp.csr_matrix, s: np.ndarray, alpha: float, n_iter: int) -> np.ndarray:
    """Fallback propagation: mean of what neighbours emit, seeds clamped at 1."""
    n = g.shape[0]
    a = abs(g).astype(np.float64)
    a = ((a + a.T) > 0).astype(np.float64).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    mean = (sp.diags(inv) @ a).tocsr()
    # A seed emits 1, any other node emits alpha times its own risk; a node's risk is the
    # mean of what its neighbours emit. One hop is the undiscounted share of flagged
    # neighbours, each further hop is discounted by alpha; seeds are clamped at 1.
    sf = s.astype(np.float64)
    x = np.zeros(n, dtype=np.float64)
    for _ in range(n_iter):
        x = mean @ (sf + alpha * (1.0 - sf) * x)
    risk = np.clip(x, 0.0, 1.0)
    risk[s] = 1.0
    return risk.astype(np.float32)


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
