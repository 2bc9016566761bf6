"""Risk helpers shared by the safety filters and :func:`guardrails.default_policy`.

:func:`propagate_seed_risk` is where a filter turns seed accounts into neighbourhood
risk; the propagation itself is :func:`guardrails.expand.propagate`, the library's one
implementation.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_csr, check_factors, check_float, fail
from ..expand import DEFAULT_DAMPING, propagate

__all__ = [
    "propagate_seed_risk",
    "check_damping",
    "seed_mask",
    "viewer_share",
    "nearest_items",
    "neighbour_risk",
]


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


def nearest_items(
    *,
    item_factors=None,
    item_similarity=None,
    k: int = 10,
    num_threads: int = 0,
    where: str = "nearest_items",
) -> np.ndarray:
    """The ``k`` nearest other items of every item, in the model's own item space.

    Parameters
    ----------
    item_factors : array-like of float, shape (n_items, n_factors), optional
        A factor model's item factors: neighbours by cosine (one exact top-k query on
        the Guard's kernel, :func:`guardrails.core.kernel.guarded_topk`).
    item_similarity : sparse matrix, shape (n_items, n_items), optional
        An item-item model's similarity (for implicit: ``model.similarity``): the
        largest entries of each row. Exactly one of the two is given.
    k : int
        Neighbours per item.

    Returns
    -------
    ndarray of int64, shape (n_items, k)
        Neighbour indices, nearest first, padded with ``-1`` (an item with fewer
        neighbours, or none); an item is never its own neighbour.
    """
    from ..core.kernel import FactorSpace, guarded_topk

    if (item_factors is None) == (item_similarity is None):
        raise fail(
            "item_factors",
            where,
            "given alone or with item_similarity left out (exactly one of them)",
            "both or neither",
            describe=False,
        )
    if item_similarity is not None:
        s = check_csr(item_similarity, "item_similarity", where)
        if s.shape[0] != s.shape[1]:
            raise fail("item_similarity", where, "a square sparse matrix (n, n)", s)
        s = s.tocoo()
        keep = (s.row != s.col) & (s.data > 0)
        row, col, val = s.row[keep], s.col[keep], s.data[keep]
        order = np.lexsort((-val, row))
        row, col = row[order], col[order]
        start = np.searchsorted(row, np.arange(s.shape[0]), side="left")
        rank = np.arange(row.size) - start[row]
        ok = rank < k
        out = np.full((s.shape[0], k), -1, dtype=np.int64)
        out[row[ok], rank[ok]] = col[ok]
        return out
    V = check_factors(item_factors, "item_factors", where)
    norms = np.sqrt((V.astype(np.float64) ** 2).sum(axis=1))
    U = np.where(norms[:, None] > 0, V / np.maximum(norms, 1e-30)[:, None], 0.0)
    U = np.ascontiguousarray(U, dtype=np.float32)
    n = U.shape[0]
    ids, _ = guarded_topk(FactorSpace.build(U), U, min(n, k + 1), num_threads=num_threads)
    out = np.full((n, k), -1, dtype=np.int64)
    for r in range(n):
        row = ids[r][(ids[r] >= 0) & (ids[r] != r)][:k]
        out[r, : row.size] = row
    return out


def neighbour_risk(risk: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Mean risk of each item's neighbours (:func:`nearest_items`), 0 without any.

    The model places accounts that the same users engage with next to each other, so a
    network account's neighbours are network accounts even when its own follows are
    camouflaged by many ordinary ones: their mean risk says what its own may not.
    """
    valid = neighbours >= 0
    vals = np.where(valid, risk[np.maximum(neighbours, 0)], 0.0).sum(axis=1)
    count = valid.sum(axis=1)
    return np.divide(vals, count, out=np.zeros(vals.shape, np.float64), where=count > 0).astype(
        np.float32
    )
