"""Embedding proximity: risk for items near flagged items in the model's factor space.

It catches accounts re-created with no graph history: once they gather a few
interactions, the recommender places them next to the accounts they replace.

The scale
---------
With ``cos(i, s)`` the cosine between the item factors of ``i`` and of seed ``s``, and
``radius`` the cosine at which risk starts,

.. math:: \\mathrm{risk}_i = \\max_s\\ w_s \\cdot
          \\max\\Bigl(0, \\frac{\\cos(i, s) - \\mathrm{radius}}{1 - \\mathrm{radius}}\\Bigr)

so a seed (cosine 1 with itself) has risk equal to its weight, and risk falls linearly
to 0 at the radius. With ``top_m``, only the ``top_m`` nearest items of each seed can
get risk. Both modes run on the Guard's kernel (:func:`guardrails.core.kernel.guarded_topk`):
the maximum over seeds is one top-1 query against a :class:`~guardrails.core.kernel.FactorSpace`
of the weighted seed directions with ``w_s * radius`` folded in as the kernel's penalty,
so it is exact, not sampled.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_factors, check_float, check_ids, check_int, fail
from ..core.kernel import FactorSpace, guarded_topk
from ._seeds import seed_matrix

__all__ = ["embedding_risk", "nearest_seeds", "DEFAULT_RADIUS"]

#: Cosine at which embedding risk starts.
DEFAULT_RADIUS = 0.5


def _unit(factors: np.ndarray) -> np.ndarray:
    norms = np.sqrt((factors.astype(np.float64) ** 2).sum(axis=1))
    out = np.zeros_like(factors, dtype=np.float32)
    ok = norms > 0
    out[ok] = (factors[ok] / norms[ok, None]).astype(np.float32)
    return out


def _seed_space(U: np.ndarray, idx: np.ndarray, w: np.ndarray, radius: float) -> FactorSpace:
    # score(i, s) = <u_i, w_s u_s> - w_s * radius = w_s (cos - radius)
    return FactorSpace.build(
        (U[idx] * w[:, None]).astype(np.float32), penalty=(w * radius).astype(np.float32)
    )


def embedding_risk(
    item_factors,
    seed_items,
    *,
    weights=None,
    radius: float = DEFAULT_RADIUS,
    top_m: int | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Risk of every item from its proximity to flagged items in factor space.

    Parameters
    ----------
    item_factors : array-like of float, shape (n_items, n_factors)
        The model's item factors (for implicit: ``model.item_factors``).
    seed_items : array-like of int, sequence or mapping of them, or (n_items, c) matrix
        Flagged items; one category per column.
    weights : array-like of float in [0, 1], optional
        Seed weights.
    radius : float in [-1, 1)
        Cosine at which risk starts (see the module docstring).
    top_m : int, optional
        Only the ``top_m`` nearest items of each seed (by cosine) can get risk.
    num_threads : int
        Kernel threads; 0 uses every core.

    Returns
    -------
    risk : ndarray of float32, shape (n_items,) or (n_items, c), in [0, 1]
    """
    where = "embedding_risk"
    V = check_factors(item_factors, "item_factors", where)
    radius = check_float(radius, "radius", where, low=-1.0, high=1.0)
    if radius >= 1.0:
        raise fail("radius", where, "a finite float in [-1.0, 1.0)", radius)
    if top_m is not None:
        top_m = check_int(top_m, "top_m", where, low=1)
    num_threads = check_int(num_threads, "num_threads", where, low=0)
    n = V.shape[0]
    W, squeeze, _ = seed_matrix(seed_items, weights, n, where)
    U = _unit(V)
    out = np.zeros(W.shape, dtype=np.float32)
    for c in range(W.shape[1]):
        idx = np.flatnonzero(W[:, c] > 0)
        if idx.size == 0:
            continue
        w = W[idx, c]
        if top_m is None:
            space = _seed_space(U, idx, w, radius)
            _, score = guarded_topk(space, U, 1, num_threads=num_threads, score_dtype=np.float64)
            best = np.where(np.isfinite(score[:, 0]), score[:, 0], 0.0)
            risk = np.maximum(best, 0.0) / (1.0 - radius)
        else:
            # The top_m nearest items of every seed, from a space of all items.
            space = FactorSpace.build(U)
            ids, cos = guarded_topk(
                space, U[idx], min(n, top_m + 1), num_threads=num_threads, score_dtype=np.float64
            )
            ok = ids >= 0
            contrib = w[:, None] * np.maximum(cos - radius, 0.0) / (1.0 - radius)
            risk = np.zeros(n, dtype=np.float64)
            np.maximum.at(risk, ids[ok], np.where(ok, contrib, 0.0)[ok])
        risk[idx] = np.maximum(risk[idx], w)  # a seed is its own nearest item
        out[:, c] = np.clip(risk, 0.0, 1.0)
    return out[:, 0] if squeeze else out


def nearest_seeds(
    item_factors,
    items,
    seed_items,
    *,
    weights=None,
    radius: float = DEFAULT_RADIUS,
    top: int = 5,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The seeds that give some items their embedding risk, largest first.

    Parameters
    ----------
    items : array-like of int, shape (m,)
    seed_items : array-like of int
        One category (a 1-d array).
    top : int
        Seeds returned per item.

    Returns
    -------
    seeds : ndarray of int64, shape (m, top)
        Seed item indices, padded with ``-1``.
    risk : ndarray of float32, shape (m, top)
        Each seed's contribution ``w_s * max(0, (cos - radius) / (1 - radius))``,
        padded with 0.
    """
    where = "nearest_seeds"
    V = check_factors(item_factors, "item_factors", where)
    n = V.shape[0]
    q, _ = check_ids(items, "items", where, n)
    top = check_int(top, "top", where, low=1)
    W, _, _ = seed_matrix(seed_items, weights, n, where)
    w_all = W.max(axis=1)
    idx = np.flatnonzero(w_all > 0)
    seeds = np.full((q.size, top), -1, dtype=np.int64)
    risk = np.zeros((q.size, top), dtype=np.float32)
    if idx.size == 0 or q.size == 0:
        return seeds, risk
    U = _unit(V)
    space = _seed_space(U, idx, w_all[idx], radius)
    pos, score = guarded_topk(
        space, U[q], min(top, idx.size), num_threads=num_threads, score_dtype=np.float64
    )
    ok = (pos >= 0) & (score > 0)
    k = pos.shape[1]
    seeds[:, :k] = np.where(ok, idx[np.maximum(pos, 0)], -1)
    risk[:, :k] = np.where(ok, np.minimum(score / (1.0 - radius), 1.0), 0.0)
    return seeds, risk
