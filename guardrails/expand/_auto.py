"""``method="auto"``: choose a scorer per seed category by cross-validation on the seeds.

No fixed propagation wins on every graph: degree-normalised personalised PageRank is
best on sparse graphs with hubs, plain PageRank or a one-hop count on small dense ones.
The seeds themselves say which: hide part of them, score with the rest, and see which
candidate ranks the hidden seeds highest. Everything here is arrays only; the
candidates' scores come from :class:`~guardrails.expand.RiskGraph`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import ConvergenceWarning

__all__ = [
    "Selection",
    "Folds",
    "make_folds",
    "average_precision",
    "choose",
    "auto_risk",
    "rank_map",
]

#: Fewer seeds than this in a category: no validation, the prior (the documented fallback).
MIN_SEEDS = 5
#: Up to this many seeds in a category, validation leaves one seed out per fold.
LOO_SEEDS = 10
#: Validation metric: "auc" or "ap" (see ``choose``).
METRIC = "auc"
#: One-sided level of the test by which another candidate replaces the prior, before
#: the Bonferroni correction over the alternatives (see ``choose``).
ALPHA = 0.005


@dataclass(frozen=True)
class Selection:
    """What ``method="auto"`` chose for one seed category, and why.

    Attributes
    ----------
    category : int
        Column of the seed matrix.
    method : str
        The candidate used for this category's risk (for example ``"degree@0.85"``).
    scores : dict of str to float
        Mean validation score (ROC AUC) of the held-out seeds per candidate, over the
        folds (empty when ``fallback``).
    n_seeds : int
        Seeds (positive weights) in the category.
    n_folds : int
        Folds used (0 when ``fallback``).
    fallback : bool
        True when the category had fewer than ``MIN_SEEDS`` seeds and got the prior
        (the first candidate) without validation.
    """

    category: int
    method: str
    scores: dict = field(default_factory=dict)
    n_seeds: int = 0
    n_folds: int = 0
    fallback: bool = False


@dataclass
class Folds:
    """Training columns for every validated category, and what each column hides."""

    W: np.ndarray  # (n, m) float32: one column per (category, fold), held-out seeds zeroed
    columns: list  # per column: (category, held-out ids, training ids)
    validated: list  # categories validated, in order
    counts: dict  # category -> number of seeds


def make_folds(W: np.ndarray, n_folds: int, random_state: int, min_seeds: int = MIN_SEEDS):
    """Split each category's seeds into ``min(n_folds, n_seeds)`` folds, deterministically.

    The permutation of a category's seeds comes from ``random_state`` and the category's
    index only, so a category's choice does not depend on the other categories.
    """
    n, c = W.shape
    cols, meta, validated, counts = [], [], [], {}
    for j in range(c):
        ids = np.flatnonzero(W[:, j] > 0)
        counts[j] = int(ids.size)
        if ids.size < min_seeds:
            continue
        validated.append(j)
        rng = np.random.default_rng([int(random_state), j])
        perm = ids[rng.permutation(ids.size)]
        # Up to LOO_SEEDS seeds, leave one out: every fold keeps as many training seeds
        # as possible, and each seed is held out once.
        k = ids.size if ids.size <= LOO_SEEDS else min(n_folds, ids.size)
        for held in np.array_split(perm, k):
            held = np.sort(held)
            col = W[:, j].copy()
            col[held] = 0.0
            cols.append(col)
            meta.append((j, held, np.setdiff1d(ids, held)))
    Wt = np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=np.float32)
    return Folds(np.ascontiguousarray(Wt, dtype=np.float32), meta, validated, counts)


def average_precision(
    scores: np.ndarray, positives: np.ndarray, exclude: np.ndarray, mask=None, *, auc=False
):
    """Average precision of ``positives`` when ranking every node not in ``exclude``
    (with ``auc``: the area under the ROC curve instead, the mean share of the other
    eligible nodes each positive ranks above).

    Ties count half (a positive tied with ``t`` other nodes ranks ``t / 2`` below the
    nodes strictly above it), so a constant score has the precision of a random order
    and no candidate gains from the order of node ids. Only nodes scoring at least the
    lowest positive are sorted.

    Parameters
    ----------
    scores : ndarray, shape (n,)
    positives, exclude : ndarray of int
        Held-out seeds, and the training seeds (never ranked).
    mask : ndarray of bool, shape (n,), optional
        Nodes eligible for the ranking (for a bipartite graph, the seeds' side).
    """
    if positives.size == 0:
        return float("nan")
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    if mask is not None:
        ok &= mask
    ok[exclude] = False
    s = np.where(ok, s, -np.inf)
    pos = np.sort(s[positives])
    low = pos[0]
    pool = np.sort(s[s >= low]) if np.isfinite(low) else np.sort(s[ok])
    # For each positive: nodes strictly above and nodes tied (itself included).
    above = pool.size - np.searchsorted(pool, pos, side="right")
    tied = np.searchsorted(pool, pos, side="right") - np.searchsorted(pool, pos, side="left")
    if not np.isfinite(low):
        # Positives outside the ranking (not eligible): they rank after everything.
        n_ok = int(ok.sum())
        out = ~np.isfinite(pos)
        above = np.where(out, n_ok, above)
        tied = np.where(out, 1, tied)
    rank = above + 1.0 + (tied - 1) / 2.0
    if auc:
        n_ok = int(ok.sum()) - positives.size + 1
        # Each positive against the other eligible nodes: the positives themselves do
        # not count against one another.
        rank = rank - (np.searchsorted(np.sort(rank), rank, side="left"))
        return float(np.mean(1.0 - (rank - 1.0) / max(n_ok - 1, 1)))
    rank = np.sort(rank)
    hits = np.arange(1, rank.size + 1, dtype=np.float64)
    return float(np.mean(hits / np.maximum(rank, hits)))


def choose(names, fold_scores, folds: Folds, *, mask=None):
    """Mean held-out score (ROC AUC) per category and candidate, and the choice.

    ``fold_scores[name]`` is an (n, m) array of scores for the training columns.
    Returns ``{category: (chosen name, {name: mean AUC})}``: the best mean, when its
    gain over the prior ``names[0]`` is significant (``_significant``), else the prior.
    Ties (within 1e-9) go to the earlier candidate in ``names``, so the choice is
    deterministic.
    """
    per: dict[int, dict[str, list[float]]] = {j: {nm: [] for nm in names} for j in folds.validated}
    for col, (j, held, train) in enumerate(folds.columns):
        for nm in names:
            per[j][nm].append(
                average_precision(fold_scores[nm][:, col], held, train, mask, auc=METRIC == "auc")
            )
    out = {}
    for j in folds.validated:
        ap = {nm: np.asarray(v) for nm, v in per[j].items()}
        means = {nm: float(v.mean()) for nm, v in ap.items()}
        best = names[0]
        for nm in names[1:]:
            if means[nm] > means[best] + 1e-9:
                best = nm
        if best != names[0] and not _significant(ap[best] - ap[names[0]], len(names) - 1):
            best = names[0]
        out[j] = (best, means)
    return out


def _significant(d: np.ndarray, n_alternatives: int) -> bool:
    """Whether the paired per-fold gains ``d`` of the best alternative over the prior
    are significant: Student's t on the folds at one-sided level ``ALPHA``, Bonferroni-
    corrected over the ``n_alternatives`` candidates it was picked from.

    Why this strict: the best of several noisy validation means is biased upwards, and
    the validation AUC of held-out seeds also rewards whatever the few seeds share by
    chance (on a planted partition whose seeds happened to have 1.5 times the members'
    degree, plain PageRank, which favours hubs, led the prior by 0.19 AUC on all 8
    folds while ranking the unseen members worse). Folds cannot see such chance in the
    sample, so the level is strict: on 401 planted partitions (2-4 blocks of 20-60,
    p_in 0.2-0.6) a two-standard-error margin left the prior 26 times to fall more than
    0.01 below the best fixed candidate (by up to 0.36 average precision), this test at
    2.5% 4 times, at 0.5% never (the one miss left there is a sparse draw where the
    prior itself is 0.125 below), and once in 600 further draws; a clear failure of
    the prior (a dense core every account links to) still passes.
    """
    from scipy.stats import t as student_t

    k = d.size
    if k < 2:
        return False
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / np.sqrt(k)
    crit = float(student_t.ppf(1.0 - ALPHA / max(n_alternatives, 1), k - 1))
    return mean > 0 and (se == 0 or mean > crit * se)


def auto_risk(W, names, score, *, own, n_folds, random_state, tol, progress=False, mask=None):
    """Cross-validate the candidates ``names`` on the seeds of each column of ``W``;
    return the unclipped risk and one :class:`Selection` per column.

    Parameters
    ----------
    W : ndarray of float32, shape (n, c)
        Seed weights, one column per category.
    names : tuple of str
        Candidates, the prior first: ties and unclear gains go to it, and so do
        categories with fewer than ``MIN_SEEDS`` seeds (not validated).
    score : callable
        ``score(name, X, tol, progress)``: candidate ``name``'s unclipped scores for the
        columns of ``X`` (float32, shape of ``X``).
    own : str
        The graph's own personalised PageRank: the scale every choice is mapped onto.
    mask : ndarray of bool, shape (n,), optional
        The seeds' side of a bipartite graph (validation ranks only that side, and the
        scale is mapped per side).
    """
    folds = make_folds(W, n_folds, random_state)
    names = tuple(names)
    chosen = {}
    if folds.columns:
        # The ranking only needs a few digits: validate at a looser tolerance.
        vtol = max(tol, 1e-3)
        with warnings.catch_warnings():
            # A candidate that stops at its cap still ranks: only the final solve warns.
            warnings.simplefilter("ignore", ConvergenceWarning)
            fold_scores = {nm: score(nm, folds.W, vtol, False) for nm in names}
        chosen = choose(names, fold_scores, folds, mask=mask)
    n, c = W.shape
    selections = []
    for j in range(c):
        if j in chosen:
            best, means = chosen[j]
            n_folds_j = sum(1 for m in folds.columns if m[0] == j)
            selections.append(Selection(j, best, means, folds.counts[j], n_folds_j))
        else:
            # Too few seeds to tell candidates apart: the prior (names[0]), the best
            # fixed candidate on the tuning graphs. Validating 2 to 4 seeds by leaving
            # one out lost more than it gained on those graphs' draws.
            selections.append(Selection(j, names[0], n_seeds=folds.counts[j], fallback=True))
    Y = np.empty((n, c), dtype=np.float32)
    for nm in dict.fromkeys(s.method for s in selections):
        cols = [s.category for s in selections if s.method == nm]
        Y[:, cols] = score(nm, np.ascontiguousarray(W[:, cols]), tol, progress)
    # The chosen scorer decides the order; the graph's own PageRank keeps the scale.
    # Each category's scores are replaced, rank for rank, by the values of the graph's
    # own PageRank for the same seeds (per side of a bipartite graph; tied scores share
    # the mean of their values), so a threshold set on that scale (DEFAULT_THRESHOLD,
    # SuppressRisk) keeps catching as many nodes whatever scorer the seeds chose; seeds
    # keep at least their weight.
    recal = [s.category for s in selections if s.method != own]
    if recal:
        ref = score(own, np.ascontiguousarray(W[:, recal]), tol, progress)
        sides = [np.ones(n, dtype=bool)] if mask is None else [mask, ~mask]
        for k, j in enumerate(recal):
            for side in sides:
                idx = np.flatnonzero(side)
                if idx.size:
                    Y[idx, j] = rank_map(Y[idx, j], ref[idx, k])
            np.maximum(Y[:, j], W[:, j], out=Y[:, j])
    return Y, selections


def rank_map(order_by: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values``, sorted, placed in the order of ``order_by`` (ties get their mean)."""
    key = np.asarray(order_by, dtype=np.float64)
    srt = np.argsort(key, kind="stable")
    v = np.sort(np.asarray(values, dtype=np.float64))
    ks = key[srt]
    # Mean of the values over each run of tied keys.
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    sums = np.add.reduceat(v, starts)
    lens = np.diff(np.r_[starts, ks.size])
    out = np.empty(key.size, dtype=np.float32)
    out[srt] = np.repeat(sums / lens, lens)
    return out
