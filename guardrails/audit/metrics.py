"""Quality and collateral metrics: what a guard costs benign users and benign accounts.

- :func:`ranking_quality`: recall@k and NDCG@k on held-out follows of benign users;
- :func:`suppressed_share`: benign accounts a guard never returns to ordinary viewers
  (read off full-length slates, so demoted accounts count as served);
- :func:`reach`: how often accounts of a group appear in ordinary viewers' top-k slates,
  to compare the vulnerable community's reach with and without the guard.

Every function takes a :class:`guardrails.Guard` and uses only its public API.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_int, fail
from .platform import Platform

__all__ = [
    "recall_at_k",
    "ndcg_at_k",
    "ranking_quality",
    "evaluation_users",
    "ordinary_viewers",
    "suppressed_share",
    "reach",
    "recall_ratio_interval",
]


def hit_matrix(ids: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """``hits[r, j]``: item ``ids[r, j]`` is in row ``r`` of ``truth``; padding never hits."""
    ids = np.atleast_2d(np.asarray(ids))
    truth = sp.csr_matrix(truth)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    cols = ids.ravel()
    real = cols >= 0
    out = np.zeros(ids.size, dtype=bool)
    if not real.any():  # all padding (short item-item slates): scipy would return a matrix
        return out.reshape(ids.shape)
    vals = np.asarray(truth[rows[real], cols[real]]).ravel()
    out[real] = vals > 0
    return out.reshape(ids.shape)


def _top_k(ids, truth, k, where: str) -> tuple[int, np.ndarray, np.ndarray]:
    """``k`` checked, the hits of the top ``k`` of every slate, and held-out items per row."""
    k = check_int(k, "k", where)
    return k, hit_matrix(np.atleast_2d(ids)[:, :k], truth), np.diff(sp.csr_matrix(truth).indptr)


def recall_at_k(ids: np.ndarray, truth: sp.csr_matrix, k: int = 10) -> np.ndarray:
    """Recall@k per user: held-out items in the top ``k``, over ``min(k, |held out|)``.

    Parameters
    ----------
    ids : ndarray of int, shape (m, >= k)
        Ranked slates (``-1`` = padding).
    truth : csr_matrix, shape (m, n_items)
        Held-out interactions, one row per slate.
    k : int

    Returns
    -------
    ndarray of float64, shape (m,); NaN for users without held-out items
    """
    k, hits, n_true = _top_k(ids, truth, k, "recall_at_k")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_true > 0, hits.sum(axis=1) / np.minimum(n_true, k), np.nan)


def ndcg_at_k(ids: np.ndarray, truth: sp.csr_matrix, k: int = 10) -> np.ndarray:
    """NDCG@k per user with binary relevance; parameters and result as in
    :func:`recall_at_k`."""
    k, hits, n_true = _top_k(ids, truth, k, "ndcg_at_k")
    disc = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    dcg = (hits * disc).sum(axis=1)
    n_true = np.minimum(n_true, k)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])[n_true]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_true > 0, dcg / ideal, np.nan)


def evaluation_users(platform: Platform, *, max_users: int = 3000, seed: int = 0) -> np.ndarray:
    """Benign users with a held-out follow (a seeded sample of at most ``max_users``), sorted."""
    users = np.flatnonzero(np.diff(platform.held_out.indptr) > 0)
    users = users[platform.benign[users]]
    if users.size > max_users:
        users = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    return np.sort(users).astype(np.int64)


def ranking_quality(
    guard,
    platform: Platform,
    users: np.ndarray,
    *,
    k: int = 10,
    batch: int = 2000,
    per_user: bool = False,
) -> dict:
    """Mean recall@k and NDCG@k of ``guard`` on the held-out follows of ``users``.

    Returns
    -------
    dict with ``recall``, ``ndcg`` (floats) and ``n_users``; with ``per_user`` also
    ``recall_per_user`` (ndarray, one value per user of ``users``, for
    :func:`recall_ratio_interval`)
    """
    k = check_int(k, "k", "ranking_quality")
    rec, nd = [], []
    for lo in range(0, users.size, batch):
        u = users[lo : lo + batch]
        ids, _ = guard.recommend(u, platform.train[u], N=k)
        truth = platform.held_out[u]
        rec.append(recall_at_k(ids, truth, k))
        nd.append(ndcg_at_k(ids, truth, k))
    r = np.concatenate(rec) if rec else np.empty(0)
    d = np.concatenate(nd) if nd else np.empty(0)
    out: dict = {
        "recall": float(np.nanmean(r)) if r.size else float("nan"),
        "ndcg": float(np.nanmean(d)) if d.size else float("nan"),
        "n_users": int(users.size),
    }
    if per_user:
        out["recall_per_user"] = r
    return out


def ordinary_viewers(
    platform: Platform, *, n: int = 500, seed: int = 0, community: int | None = None
) -> np.ndarray:
    """A seeded sample of ordinary (benign adult) viewers, optionally from one community."""
    pool = np.flatnonzero(platform.ordinary & (np.diff(platform.train.indptr) > 0))
    if community is not None:
        pool = pool[platform.community[pool] == community]
    if pool.size > n:
        pool = np.random.default_rng(seed).choice(pool, size=n, replace=False)
    return np.sort(pool).astype(np.int64)


def suppressed_share(guard, platform: Platform, viewers: np.ndarray) -> dict:
    """Share of benign accounts a guard never returns to each ordinary viewer.

    Each viewer's full-length slate (``N = n_accounts``, already-followed accounts kept)
    holds every account the guard allows, demoted ones included; benign accounts missing
    from it are suppressed for that viewer.

    Returns
    -------
    dict with ``mean`` and ``max`` (share of benign accounts suppressed, over viewers),
    ``accounts_suppressed_for_all`` (count) and ``n_viewers``
    """
    n = platform.n_accounts
    benign = platform.benign
    n_benign = int(benign.sum())
    shares = []
    always = np.ones(n, dtype=bool)
    for u in viewers:
        ids, _ = guard.recommend(
            int(u), platform.train[int(u)], N=n, filter_already_liked_items=False
        )
        served = np.zeros(n, dtype=bool)
        served[ids[ids >= 0]] = True
        missing = benign & ~served
        always &= missing
        shares.append(missing.sum() / max(n_benign, 1))
    s = np.asarray(shares, dtype=np.float64)
    return {
        "mean": float(s.mean()) if s.size else 0.0,
        "max": float(s.max()) if s.size else 0.0,
        "accounts_suppressed_for_all": int(always.sum()) if s.size else 0,
        "n_viewers": int(len(viewers)),
    }


def reach(
    guard, platform: Platform, viewers: np.ndarray, group: np.ndarray, *, k: int = 10
) -> dict:
    """How many top-``k`` slots of ``viewers`` go to accounts of ``group``.

    Parameters
    ----------
    group : ndarray of bool, shape (n_accounts,)

    Returns
    -------
    dict with ``slots`` (int), ``accounts_reached`` (distinct accounts, int) and ``per_viewer``
    """
    if viewers.size == 0:
        return {"slots": 0, "accounts_reached": 0, "per_viewer": 0.0}
    ids, _ = guard.recommend(viewers, platform.train[viewers], N=k)
    ids = np.atleast_2d(ids)
    real = ids >= 0
    hit = group[np.where(real, ids, 0)] & real
    return {
        "slots": int(hit.sum()),
        "accounts_reached": int(np.unique(ids[hit]).size),
        "per_viewer": float(hit.sum() / viewers.size),
    }


def recall_ratio_interval(
    guarded, unguarded, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0xB007
) -> dict:
    """Recall kept (guarded over unguarded mean recall) with a paired bootstrap interval.

    The evaluation users are resampled with replacement ``n_boot`` times, the same users
    for both slates (paired: the interval reflects only the users on whom the two differ),
    and the ratio of the resampled means is recomputed; the interval is the central
    ``level`` percentile range of those ratios, widened where needed to contain the point
    estimate (a lopsided bootstrap distribution, with very few hits, can leave it just
    outside). Users with recall 0 on both slates change only how many draws land on the
    others, so the draws are made among the rest (their number binomial), which is the
    same resampling at a fraction of the cost.

    Parameters
    ----------
    guarded, unguarded : array-like of float, shape (m,)
        Per-user recall with and without the guard (the same users, in the same order);
        NaN (a user without held-out items) is dropped from both.
    n_boot : int, keyword-only
    level : float, keyword-only
        In (0, 1).
    seed : int, keyword-only
        Seed of the resampling (fixed: the same data give the same interval).

    Returns
    -------
    dict
        ``ratio`` (NaN when the unguarded recall is 0), ``low``, ``high``, ``level``,
        ``n_boot`` and ``n_users``.
    """
    where = "recall_ratio_interval"
    g = np.asarray(guarded, dtype=np.float64)
    b = np.asarray(unguarded, dtype=np.float64)
    if g.ndim != 1 or g.shape != b.shape:
        raise fail("unguarded", where, f"a 1-d array shaped like guarded {g.shape}", b.shape)
    n_boot = check_int(n_boot, "n_boot", where)
    if not (isinstance(level, float | int) and 0.0 < float(level) < 1.0):
        raise fail("level", where, "a number in (0, 1)", level)
    keep = ~(np.isnan(g) | np.isnan(b))
    g, b = g[keep], b[keep]
    if np.any(g < 0) or np.any(b < 0):
        raise fail("guarded", where, "recall values >= 0", "negative values")
    m = int(g.size)
    out = {"level": float(level), "n_boot": n_boot, "n_users": m}
    sb = float(b.sum())
    if m == 0 or sb == 0.0:
        return {"ratio": float("nan"), "low": float("nan"), "high": float("nan"), **out}
    ratio = float(g.sum()) / sb
    nz = np.flatnonzero((g > 0) | (b > 0))
    gz, bz = g[nz], b[nz]
    rng = np.random.default_rng(seed)
    draws = rng.binomial(m, nz.size / m, size=n_boot)
    ratios = np.full(n_boot, np.nan)
    for i, k in enumerate(draws):
        idx = rng.integers(0, nz.size, size=int(k))
        den = bz[idx].sum()
        if den > 0:
            ratios[i] = gz[idx].sum() / den
    finite = ratios[np.isfinite(ratios)]
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha]) if finite.size else (ratio, ratio)
    return {"ratio": ratio, "low": min(float(lo), ratio), "high": max(float(hi), ratio), **out}
