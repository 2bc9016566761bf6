"""Graph propagation: from flagged seeds to a risk score for every node.

The risk scale
--------------
For seed weights ``w`` in [0, 1] (one column per seed category), :func:`propagate`
returns, for every node ``i`` and category,

.. math::  \\mathrm{risk}_i = \\min\\Bigl(1,\\ \\sum_{k \\ge 0} a^k (T^k w)_i\\Bigr)

with ``a`` the damping (continuation probability) and ``T`` one step of a random walk
over the graph, in the direction the caller chose. Read it as *the expected number of
seed visits, each counted with its seed's weight, of a walk that continues with
probability ``a`` at every step*; it is personalised PageRank with restart, scaled so
that the restart term of a seed is its own weight. Consequences:

- a seed has risk at least its weight (a weight-1 seed has risk 1);
- risk decays with graph distance, by a factor ``a`` per hop times the share of the
  walk that takes that hop: with ``normalization="degree"`` (the default) a node whose
  ``k`` of ``d`` neighbours are weight-1 seeds has risk about ``a * k / d``, so a hub with
  a single flagged neighbour stays near zero, while an account that mostly links to
  seeds is close to 1;
- walks that return count again, so inside a densely flagged cluster (the network
  itself) risk saturates at 1, and on very small graphs many nodes do; rank with
  ``raw=True`` when an order among saturated nodes is needed;
- the background level is the seeds' share of the graph: on an undirected graph the
  degree-weighted mean of the (unclipped) risk is exactly
  ``sum_s d_s w_s / ((1 - a) * sum_i d_i)``, so a threshold carries over between graphs
  as long as it stays well above that (about 0.003 for 500 seeds of average degree among
  a million accounts, 0.03 among 100,000, and 0.1 for 3 seeds among 200).

``normalization="degree"`` walks *from* each node (``T = D^-1 A``, row-stochastic): the
risk of ``i`` is where a walk starting at ``i`` ends up, which is where the recommender
and the user's own browsing would lead a viewer of ``i``. ``normalization="none"``
walks *from the seeds* (``T = A^T D^-1``): classic, unnormalised personalised PageRank,
which favours hubs near the seeds; it is kept for comparison. For an undirected graph
the two differ by degree factors only (``pi_s(i) / d_i = pi_i(s) / d_s``).

``method="sybilrank"`` is the early-stopped variant: ``n_steps`` (default
``ceil(log2 n)``) steps of a walk without restart, ``T^n_steps w``, scaled per category
to a maximum of 1 (a *relative* scale: use :func:`neighbourhood` with ``top_k`` or
``quantile`` on it, not a fixed threshold).

Choosing the method
-------------------
No fixed scorer wins on every graph, so ``method="auto"`` (the default) lets the seeds
choose, per category: it splits the category's seeds into ``n_folds`` folds (one seed per
fold up to 10 seeds; folds drawn from ``random_state``), scores the graph with each
candidate of :meth:`RiskGraph.candidates` from the other folds, and measures how highly
each candidate ranks the held-out seeds among all other nodes (the area under the ROC
curve: the share of nodes ranked below a held-out seed; average precision was noisier,
as unlabelled members of the group compete with the one held-out seed). All folds of all
categories are columns of one solve per candidate, on the operators the graph already
holds. The prior (``degree@0.95``; ``degree@0.5`` on a bipartite graph) is kept unless
another candidate's paired per-fold gain over it is significant (Student's t at 0.5%
one-sided, Bonferroni-corrected over the alternatives: the best of eight noisy means is
biased upwards, and a few seeds share traits by chance). A category with fewer than 5
seeds is not validated: it gets the prior (the documented fallback). Whatever ranks
the nodes, the values are those of the graph's own personalised PageRank
(``normalization``, ``damping``; ``method="ppr"``) for the same seeds, placed rank for
rank in the chosen order (tied scores share the mean of their values; per side of a
bipartite graph; seeds keep at least their weight): a threshold set on that scale
(:data:`DEFAULT_THRESHOLD`) keeps selecting as many nodes whichever scorer the seeds
chose. The choice, the mean score of every candidate, the number of seeds and folds,
and whether the fallback was used are in
:attr:`RiskGraph.selection_` (one :class:`~guardrails.expand.Selection` per category).
Called by name, every candidate keeps the scale above in its own way: a seed has risk
at least its weight, and risk is clipped to [0, 1] (``onehop`` and ``heat`` saturate
sooner than PageRank). For a fixed
scorer -- for example where risk must never fall when a seed is added, which ``'auto'``
does not promise since another seed can change its choice -- pass its name or ``'ppr'``.

Recommended default threshold: :data:`DEFAULT_THRESHOLD` (0.1). On the planted stale-seed
scenario of ``benchmarks/bench_expand.py`` (12% of a network known) it caught 99.8% of the
unknown members and 98.8% of the re-created accounts with 0.45% of benign accounts; 0.05
caught all of them with 2.4 times the collateral, 0.2 missed a quarter of the members.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_float, check_ids, check_int, check_vector, fail
from ._engine import ConvergenceWarning
from ._graph import DEFAULT_DAMPING, RiskGraph

__all__ = [
    "RiskGraph",
    "propagate",
    "neighbourhood",
    "DEFAULT_THRESHOLD",
    "DEFAULT_DAMPING",
    "ConvergenceWarning",
]

#: Risk at or above which a node is in the neighbourhood, for policies that need one
#: number (see the module docstring for the scale).
DEFAULT_THRESHOLD = 0.1


def propagate(
    adjacency,
    seeds,
    *,
    weights=None,
    direction: str = "both",
    normalization: str = "degree",
    damping: float = DEFAULT_DAMPING,
    method: str = "auto",
    tol: float = 1e-4,
    max_iter: int = 200,
    n_steps: int | None = None,
    num_threads: int = 0,
    backend: str = "auto",
    progress: bool = False,
    n_folds: int = 5,
    random_state: int = 0,
    candidates=None,
    raw: bool = False,
) -> np.ndarray:
    """Risk of every node of a graph from flagged seeds.

    A one-call form of ``RiskGraph(adjacency, ...).propagate(seeds, ...)``; build a
    :class:`RiskGraph` once when propagating several seed sets over one graph.

    Parameters
    ----------
    adjacency : sparse matrix, shape (n, n)
        ``adjacency[u, v]``: weight of the edge from ``u`` to ``v`` (``u`` follows ``v``).
    seeds : array-like of int, a sequence or mapping of them, or an (n, c) weight matrix
        Seed nodes; several categories give one column each.
    weights : array-like of float in [0, 1], optional
        Seed weights (severity times confidence); default 1.
    direction : {'both', 'out', 'in'}
        Edges a walk may take: along them, against them, or either way.
    normalization : {'degree', 'none'}
        ``'degree'``: risk of ``i`` is where walks from ``i`` lead; ``'none'``: classic
        personalised PageRank mass from the seeds.
    damping : float in (0, 1)
        Probability that the walk continues at each step.
    method : str
        ``'auto'`` (default): the scorer that ranks held-out seeds best, chosen per
        category by ``n_folds``-fold validation; ``'ppr'``: personalised PageRank with
        ``normalization`` and ``damping``; or one candidate by name. See
        :meth:`RiskGraph.propagate`; use a :class:`RiskGraph` to read the choice
        (``selection_``) or to propagate several seed sets over one graph.
    tol, max_iter, n_steps, progress, n_folds, random_state, candidates, raw
        See :meth:`RiskGraph.propagate`.
    num_threads, backend
        See :class:`RiskGraph`.

    Returns
    -------
    risk : ndarray of float32, shape (n,) or (n, c)
        In [0, 1]; a weight-``w`` seed has risk at least ``w``; see the module docstring.

    Examples
    --------
    >>> import networkx as nx, scipy.sparse as sp, guardrails.expand as ex
    >>> tree = sp.csr_matrix(nx.to_scipy_sparse_array(nx.balanced_tree(3, 3), weight=None))
    >>> risk = ex.propagate(tree, [1])  # seed: node 1, a child of the root 0
    >>> risk[[1, 4, 16, 0, 2, 7]].round(2)  # seed, its child and grandchild, root, sibling, nephew
    array([1.  , 0.73, 0.62, 0.54, 0.16, 0.08], dtype=float32)
    """
    graph = RiskGraph(
        adjacency,
        direction=direction,
        normalization=normalization,
        damping=damping,
        num_threads=num_threads,
        backend=backend,
        _share=True,  # the graph lives for this call only
    )
    return graph.propagate(
        seeds,
        weights=weights,
        method=method,
        tol=tol,
        max_iter=max_iter,
        n_steps=n_steps,
        progress=progress,
        n_folds=n_folds,
        random_state=random_state,
        candidates=candidates,
        raw=raw,
    )


def neighbourhood(
    risk,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    quantile: float | None = None,
    exclude=None,
) -> np.ndarray:
    """Nodes in the risk neighbourhood, by a threshold, a count or a quantile.

    Parameters
    ----------
    risk : array-like of float, shape (n,)
        Risk per node, in [0, 1].
    threshold : float in (0, 1], optional
        Nodes with ``risk >= threshold``.
    top_k : int, optional
        The ``top_k`` riskiest nodes with positive risk (ties broken by lower index).
    quantile : float in (0, 1), optional
        Nodes with positive risk at or above this quantile of the risk.
    exclude : array-like of int, optional
        Nodes never returned (for example the seeds themselves).

    Exactly one of ``threshold``, ``top_k`` and ``quantile`` must be given.

    Returns
    -------
    ndarray of int64
        Node indices, riskiest first (ties by index).
    """
    where = "neighbourhood"
    r = np.asarray(risk)
    if r.ndim != 1:
        raise fail("risk", where, "a 1-d array of risks (select one category first)", risk)
    r = check_vector(r, "risk", where, low=0.0, high=1.0)
    given = [x is not None for x in (threshold, top_k, quantile)]
    if sum(given) != 1:
        raise fail(
            "threshold",
            where,
            "given alone: pass exactly one of threshold, top_k and quantile",
            f"{sum(given)} of them",
            describe=False,
        )
    keep = r > 0
    if exclude is not None:
        ex, _ = check_ids(exclude, "exclude", where, r.size)
        keep[ex] = False
    cand = np.flatnonzero(keep)
    order = cand[np.lexsort((cand, -r[cand]))]
    if threshold is not None:
        t = check_float(threshold, "threshold", where, low=0.0, high=1.0, low_open=True)
        return order[r[order] >= t]
    if top_k is not None:
        k = check_int(top_k, "top_k", where, low=0)
        return order[:k]
    q = check_float(quantile, "quantile", where, low=0.0, high=1.0)
    if q <= 0.0 or q >= 1.0:
        raise fail("quantile", where, "a finite float in (0, 1)", quantile)
    t = np.quantile(r, q)
    return order[r[order] >= max(t, np.finfo(np.float32).tiny)]
