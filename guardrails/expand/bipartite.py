"""Propagation over bipartite matrices: co-engagement and term co-use.

Both are walks over a bipartite graph whose two sides are joined by a matrix ``B``
(users x items for co-engagement, accounts x terms for term co-use): the graph
``[[0, B], [B^T, 0]]``, propagated with :class:`~guardrails.expand.RiskGraph` and the
same risk scale (expected weighted seed visits, clipped at 1). One hop across the
matrix costs a factor ``damping``, so an item co-engaged with a flagged item (item ->
user -> item) sits two hops away: about ``damping**2`` times the share of the item's
engagement that comes from users of the flagged item.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_ids, fail
from ._auto import Selection
from ._graph import BIPARTITE_PRIOR, DEFAULT_DAMPING, RiskGraph
from ._seeds import seed_matrix, weighted_csr

__all__ = ["BipartiteRiskGraph", "coengagement_risk", "term_risk"]


class BipartiteRiskGraph:
    """A bipartite matrix prepared for propagation from seeds on either side.

    Parameters
    ----------
    biadjacency : sparse matrix, shape (n_rows, n_cols)
        Non-negative weights (interaction counts or confidences, term counts).
    damping : float in (0, 1), keyword-only
    binary : bool, keyword-only
        Treat every non-zero as 1 (so heavy users do not dominate).
    num_threads : int, keyword-only
    """

    def __init__(
        self,
        biadjacency,
        *,
        damping: float = DEFAULT_DAMPING,
        binary: bool = False,
        num_threads: int = 0,
    ):
        where = "BipartiteRiskGraph"
        B = weighted_csr(biadjacency, "biadjacency", where).astype(np.float32)
        if binary:
            B.data[:] = 1.0
        B.eliminate_zeros()
        self.n_rows, self.n_cols = (int(x) for x in B.shape)
        full = sp.bmat([[None, B], [B.T, None]], format="csr", dtype=np.float32)
        self.graph = RiskGraph(
            full, direction="out", damping=damping, num_threads=num_threads, _symmetric=True
        )
        # A walk over the two-sided graph alternates sides: 'auto' starts from the prior
        # that ranked best on bipartite data (see RiskGraph.candidates).
        self.graph._prior = BIPARTITE_PRIOR

    def _seeds(self, row_seeds, col_seeds, row_weights, col_weights, where):
        if row_seeds is None and col_seeds is None:
            raise fail("row_seeds", where, "given (or 'col_seeds' given)", None)
        parts = []
        if row_seeds is not None:
            Wr, sq_r, _ = seed_matrix(row_seeds, row_weights, self.n_rows, where)
            parts.append(("r", Wr, sq_r))
        if col_seeds is not None:
            Wc, sq_c, _ = seed_matrix(col_seeds, col_weights, self.n_cols, where)
            parts.append(("c", Wc, sq_c))
        ncat = {p[1].shape[1] for p in parts}
        if len(ncat) != 1:
            raise fail(
                "col_seeds",
                where,
                "the same number of categories as 'row_seeds'",
                f"{sorted(ncat)} categories",
                describe=False,
            )
        c = ncat.pop()
        W = np.zeros((self.n_rows + self.n_cols, c), dtype=np.float32)
        for side, Ws, _ in parts:
            if side == "r":
                W[: self.n_rows] = Ws
            else:
                W[self.n_rows :] = Ws
        squeeze = all(p[2] for p in parts)
        return W, squeeze

    def propagate(
        self,
        *,
        row_seeds=None,
        col_seeds=None,
        row_weights=None,
        col_weights=None,
        tol: float = 1e-4,
        max_iter: int = 200,
        progress: bool = False,
        raw: bool = False,
        method: str = "auto",
        n_folds: int = 5,
        random_state: int = 0,
        candidates=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Risk of both sides from seeds on either side.

        Parameters
        ----------
        method : str
            ``'auto'`` (default): as :meth:`RiskGraph.propagate`, with one more
            candidate, ``'coengagement'`` (a seed, plus ``damping`` on the nodes one hop
            from a seed, plus ``damping**2`` times the share of a node's neighbours that
            are one hop from a seed: for items, the share of the item's audience that
            also engaged with a flagged item); held-out seeds are ranked among the
            nodes of the seeds' own side. ``'ppr'``, ``'coengagement'`` or any
            candidate name: that scorer alone. The choice is in :attr:`selection_`.
        n_folds, random_state, candidates
            As in :meth:`RiskGraph.propagate`.

        Returns
        -------
        row_risk : ndarray of float32, shape (n_rows,) or (n_rows, c)
        col_risk : ndarray of float32, shape (n_cols,) or (n_cols, c)
        """
        where = "BipartiteRiskGraph.propagate"
        W, squeeze = self._seeds(row_seeds, col_seeds, row_weights, col_weights, where)
        opts: dict[str, Any] = {"tol": tol, "max_iter": max_iter, "progress": progress, "raw": raw}
        if method == "coengagement":
            Y = self._coengagement(W)
            self.selection_ = [Selection(category=j, method=method) for j in range(W.shape[1])]
            if not raw:
                np.clip(Y, 0.0, 1.0, out=Y)
        elif method == "auto":
            # Validation ranks the held-out seeds among the nodes of their own side.
            mask = np.zeros(self.n_rows + self.n_cols, dtype=bool)
            mask[: self.n_rows] = row_seeds is not None
            mask[self.n_rows :] = col_seeds is not None
            extra = {"coengagement": self._coengagement}
            auto = {"n_folds": n_folds, "random_state": random_state, "candidates": candidates}
            Y = self.graph._propagate_auto(W, where, mask=mask, extra=extra, **auto, **opts)
            self.selection_ = self.graph.selection_
        else:
            Y = self.graph.propagate(W, method=method, **opts)
            self.selection_ = self.graph.selection_
        if squeeze:
            Y = Y[:, 0]
        return Y[: self.n_rows], Y[self.n_rows :]

    def _coengagement(self, W: np.ndarray) -> np.ndarray:
        """Unclipped co-engagement score (see :meth:`propagate`) for the columns of ``W``."""
        g = self.graph
        F = g._operator("adj")
        a = np.float32(g.damping)
        W = np.ascontiguousarray(W, dtype=np.float32)
        hit = np.minimum(F.matmul(W), np.float32(1.0))
        two = F.matmul(hit)
        two /= np.where(g.degree > 0, g.degree, 1.0)[:, None].astype(np.float32)
        return W + a * hit + (a * a) * two

    def contributions(
        self,
        *,
        row_nodes=None,
        col_nodes=None,
        row_seeds=None,
        col_seeds=None,
        row_weights=None,
        col_weights=None,
        tol: float = 1e-6,
        max_iter: int = 200,
    ):
        """Contribution of every seed to some nodes; see :meth:`RiskGraph.contributions`.

        Returns
        -------
        seed_ids : ndarray of int64, shape (S,)
            Seeds as positions in ``[0, n_rows + n_cols)``: rows first, then columns
            (offset by ``n_rows``).
        C : ndarray of float32, shape (m, S, c)
            Nodes are ``row_nodes`` then ``col_nodes``.
        """
        where = "BipartiteRiskGraph.contributions"
        W, _ = self._seeds(row_seeds, col_seeds, row_weights, col_weights, where)
        nodes = []
        # Checked against their own side: an id past n_rows would otherwise name a column.
        if row_nodes is not None:
            nodes.append(check_ids(row_nodes, "row_nodes", where, self.n_rows)[0])
        if col_nodes is not None:
            nodes.append(check_ids(col_nodes, "col_nodes", where, self.n_cols)[0] + self.n_rows)
        idx = np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.int64)
        # The risk this graph's default propagate gives (auto, with co-engagement among
        # the candidates), and the seeds' shares of it (see RiskGraph.contributions).
        rows, cols = self.propagate(
            row_seeds=row_seeds,
            col_seeds=col_seeds,
            row_weights=row_weights,
            col_weights=col_weights,
            tol=tol,
            max_iter=max_iter,
            raw=True,
        )
        raw = np.concatenate([rows.reshape(self.n_rows, -1), cols.reshape(self.n_cols, -1)])
        return self.graph._contributions(
            idx,
            W,
            self.selection_,
            raw,
            method="auto",
            tol=tol,
            max_iter=max_iter,
            progress=False,
            n_steps=1,
        )


def coengagement_risk(
    user_items,
    seed_items,
    *,
    weights=None,
    seed_users=None,
    user_weights=None,
    damping: float = DEFAULT_DAMPING,
    binary: bool = True,
    tol: float = 1e-4,
    max_iter: int = 200,
    num_threads: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Risk of items (and users) over the recommender's own interaction matrix.

    Items engaged with by the same users as flagged items gain risk: the path along
    which a collaborative-filtering recommender leads people.

    Parameters
    ----------
    user_items : sparse matrix, shape (n_users, n_items)
        The interaction matrix the model was trained on (implicit's ``user_items``).
    seed_items : array-like of int, sequence or mapping of them, or (n_items, c) matrix
        Flagged items (accounts); one category per column.
    weights : array-like of float in [0, 1], optional
        Seed weights.
    seed_users, user_weights : optional
        Flagged users (for example known buyers), in the same categories.
    binary : bool
        Count every interaction once (default), so that heavy users do not dominate.

    Returns
    -------
    item_risk : ndarray of float32, shape (n_items,) or (n_items, c)
    user_risk : ndarray of float32, shape (n_users,) or (n_users, c)
        Both in [0, 1], on the scale of :func:`guardrails.expand.propagate`.
    """
    g = BipartiteRiskGraph(user_items, damping=damping, binary=binary, num_threads=num_threads)
    user_risk, item_risk = g.propagate(
        row_seeds=seed_users,
        col_seeds=seed_items,
        row_weights=user_weights,
        col_weights=weights,
        tol=tol,
        max_iter=max_iter,
        progress=progress,
    )
    return item_risk, user_risk


def term_risk(
    account_terms,
    *,
    seed_accounts=None,
    seed_terms=None,
    account_weights=None,
    term_weights=None,
    damping: float = DEFAULT_DAMPING,
    binary: bool = True,
    tol: float = 1e-4,
    max_iter: int = 200,
    num_threads: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Risk from term co-use: accounts using flagged terms, terms used by flagged accounts.

    Parameters
    ----------
    account_terms : sparse matrix, shape (n_accounts, n_terms)
        Uses of hashtags, terms or link domains by accounts.
    seed_accounts, seed_terms : optional
        Flagged accounts and flagged terms (at least one), same categories.
    account_weights, term_weights : optional
        Their weights in [0, 1].

    Returns
    -------
    account_risk : ndarray of float32, shape (n_accounts,) or (n_accounts, c)
    term_risk : ndarray of float32, shape (n_terms,) or (n_terms, c)
    """
    g = BipartiteRiskGraph(account_terms, damping=damping, binary=binary, num_threads=num_threads)
    return g.propagate(
        row_seeds=seed_accounts,
        col_seeds=seed_terms,
        row_weights=account_weights,
        col_weights=term_weights,
        tol=tol,
        max_iter=max_iter,
        progress=progress,
    )
