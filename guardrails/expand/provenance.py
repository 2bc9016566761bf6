"""Provenance: why an account has its risk, by path kind and by seed.

:class:`RiskExpansion` gathers the sources of one expansion (follow graph, co-engagement,
embedding proximity, term co-use) over one catalogue of ``n_accounts`` accounts (the
recommender's items), computes their risks, combines them
(:func:`~guardrails.expand.combine_risk`), and explains any account:

- *path kinds*: each source's calibrated risk for the account, the largest first;
- *seeds*: the seeds (and, for term co-use, flagged terms; for co-engagement, flagged
  users) that contributed most. Graph risk is linear in the seed weights, so a seed's
  contribution is exact: one propagation with the transposed walk from the account
  (:meth:`RiskGraph.contributions`). For embedding proximity it is the seed's own
  ``w_s * (cos - radius) / (1 - radius)`` (:func:`nearest_seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import check_choice, check_float, check_ids, check_int, fail
from ._seeds import seed_matrix
from .bipartite import BipartiteRiskGraph
from .combine import METHODS, calibrated, combine_risk
from .propagate import DEFAULT_DAMPING, RiskGraph
from .proximity import DEFAULT_RADIUS, embedding_risk, nearest_seeds

__all__ = ["RiskExpansion", "Explanation", "Contribution"]


@dataclass(frozen=True)
class Contribution:
    """One seed's share of an account's risk through one source."""

    #: Name of the source (``'graph'``, ``'coengagement'``, ...).
    source: str
    #: ``'account'`` (a flagged account), ``'user'`` (a flagged viewer, co-engagement)
    #: or ``'term'`` (a flagged term, term co-use).
    kind: str
    #: Index of the seed among accounts, users or terms.
    index: int
    #: Its contribution, calibrated by the source's weight (unclipped).
    value: float


@dataclass(frozen=True)
class Explanation:
    """Why one account has its risk."""

    #: The account explained (its index among the accounts).
    account: int
    #: The seed category (column) whose risk is explained: the riskiest one.
    category: int
    #: Combined risk of the account in that category.
    risk: float
    #: Calibrated risk from each source, by source name, largest first.
    by_source: dict[str, float] = field(default_factory=dict)
    #: The largest seed contributions over all sources, largest first.
    seeds: tuple[Contribution, ...] = ()

    @property
    def top_source(self) -> str | None:
        """The path kind that contributed most, or None when the risk is 0."""
        for name, value in self.by_source.items():
            return name if value > 0 else None
        return None


class RiskExpansion:
    """Seeds plus the sources to expand them over; combined risk with provenance.

    Parameters
    ----------
    n_accounts : int
        Size of the account catalogue (the recommender's items).
    seeds : array-like of int, sequence or mapping of them, or (n_accounts, c) matrix
        Flagged accounts; one category per column.
    weights : array-like of float in [0, 1], optional
        Seed weights (severity times confidence).
    method : {'max', 'noisy_or', 'weighted_sum'}, keyword-only
        How sources are combined (see :func:`combine_risk`).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from guardrails.expand import RiskExpansion, DEFAULT_THRESHOLD
    >>> from guardrails.filters import SuppressRisk
    >>> follows = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 1, 3], [1, 2, 4])), shape=(5, 5))
    >>> user_items = sp.csr_matrix(([1.0] * 4, ([0, 0, 1, 1], [0, 3, 2, 4])), shape=(2, 5))
    >>> exp = RiskExpansion(5, [0]).add_graph(follows).add_coengagement(user_items, weight=0.8)
    >>> risk = exp.risk()
    >>> keep_out = SuppressRisk(risk, threshold=DEFAULT_THRESHOLD)
    >>> why = exp.explain([1, 3])
    >>> why[0].top_source, why[1].top_source
    ('graph', 'coengagement')
    >>> top = why[1].seeds[0]  # the flagged account 0, through the users they share
    >>> top.source, top.kind, top.index
    ('coengagement', 'account', 0)
    """

    def __init__(self, n_accounts: int, seeds, *, weights=None, method: str = "max"):
        where = "RiskExpansion"
        self.n_accounts = check_int(n_accounts, "n_accounts", where, low=1)
        self.method = check_choice(method, "method", where, METHODS)
        self.W, self._squeeze, self.category_names = seed_matrix(
            seeds, weights, self.n_accounts, where
        )
        self._sources: dict[str, dict] = {}
        self._risks: dict[str, np.ndarray] | None = None

    # -- building -----------------------------------------------------------------------
    def _add(self, name: str, weight: float, spec: dict) -> RiskExpansion:
        where = "RiskExpansion.add"
        if not isinstance(name, str) or not name or name in self._sources:
            raise fail(
                "name", where, f"a new, non-empty source name (have {sorted(self._sources)})", name
            )
        spec["weight"] = check_float(weight, "weight", where, low=0.0)
        self._sources[name] = spec
        self._risks = None
        return self

    def add_graph(
        self,
        adjacency,
        *,
        name: str = "graph",
        weight: float = 1.0,
        direction: str = "both",
        normalization: str = "degree",
        damping: float = DEFAULT_DAMPING,
        method: str = "auto",
        num_threads: int = 0,
    ) -> RiskExpansion:
        """Add an account graph (n_accounts x n_accounts), for example who follows whom."""
        g = RiskGraph(
            adjacency,
            direction=direction,
            normalization=normalization,
            damping=damping,
            num_threads=num_threads,
        )
        if g.n_nodes != self.n_accounts:
            raise fail(
                "adjacency",
                "RiskExpansion.add_graph",
                f"a graph over the {self.n_accounts} accounts",
                adjacency,
            )
        return self._add(name, weight, {"kind": "graph", "graph": g, "method": method})

    def add_coengagement(
        self,
        user_items,
        *,
        name: str = "coengagement",
        weight: float = 1.0,
        seed_users=None,
        user_weights=None,
        damping: float = DEFAULT_DAMPING,
        binary: bool = True,
        num_threads: int = 0,
    ) -> RiskExpansion:
        """Add the recommender's interaction matrix (n_users x n_accounts)."""
        return self._add_bipartite(
            "coengagement",
            user_items,
            "user_items",
            name,
            weight,
            seed_users,
            user_weights,
            damping=damping,
            binary=binary,
            num_threads=num_threads,
        )

    def add_embedding(
        self,
        item_factors,
        *,
        name: str = "embedding",
        weight: float = 1.0,
        radius: float = DEFAULT_RADIUS,
        top_m: int | None = None,
        num_threads: int = 0,
    ) -> RiskExpansion:
        """Add the model's item factors (n_accounts x n_factors)."""
        V = np.asarray(item_factors)
        if V.ndim != 2 or V.shape[0] != self.n_accounts:
            raise fail(
                "item_factors",
                "RiskExpansion.add_embedding",
                f"a 2-d array with {self.n_accounts} rows",
                item_factors,
            )
        return self._add(
            name,
            weight,
            {
                "kind": "embedding",
                "factors": V,
                "radius": radius,
                "top_m": top_m,
                "num_threads": num_threads,
            },
        )

    def add_terms(
        self,
        account_terms,
        *,
        name: str = "terms",
        weight: float = 1.0,
        seed_terms=None,
        term_weights=None,
        damping: float = DEFAULT_DAMPING,
        binary: bool = True,
        num_threads: int = 0,
    ) -> RiskExpansion:
        """Add an account x term (hashtag, link domain) matrix (n_accounts x n_terms)."""
        return self._add_bipartite(
            "terms",
            account_terms,
            "account_terms",
            name,
            weight,
            seed_terms,
            term_weights,
            damping=damping,
            binary=binary,
            num_threads=num_threads,
        )

    def _add_bipartite(
        self, kind, matrix, arg, name, weight, side_seeds, side_weights, **graph
    ) -> RiskExpansion:
        """A bipartite source: accounts are the columns of a co-engagement matrix (users
        the other side) and the rows of a term matrix (terms the other side)."""
        where = f"RiskExpansion.add_{kind}"
        g = BipartiteRiskGraph(matrix, **graph)
        accounts, other, what = (
            (g.n_cols, g.n_rows, "item columns")
            if kind == "coengagement"
            else (g.n_rows, g.n_cols, "account rows")
        )
        if accounts != self.n_accounts:
            raise fail(arg, where, f"a matrix with {self.n_accounts} {what}", matrix)
        Ws = None
        if side_seeds is not None:
            Ws = self._side_seeds(side_seeds, side_weights, other, where)
        return self._add(name, weight, {"kind": kind, "graph": g, "side_seeds": Ws})

    def _side_seeds(self, seeds, weights, n, where):
        W, _, _ = seed_matrix(seeds, weights, n, where)
        c = self.W.shape[1]
        if W.shape[1] != c:
            if W.shape[1] == 1:
                return np.repeat(W, c, axis=1)
            raise fail(
                "seeds",
                where,
                f"{c} categories like the account seeds",
                f"{W.shape[1]} categories",
                describe=False,
            )
        return W

    # -- risk -----------------------------------------------------------------------------
    def source_risks(self, *, progress: bool = False) -> dict[str, np.ndarray]:
        """Uncalibrated risk per source, each float32 of shape (n_accounts,) or (n_accounts, c)."""
        if not self._sources:
            raise fail(
                "sources",
                "RiskExpansion.risk",
                "at least one source (add_graph, add_coengagement, ...)",
                "none",
                describe=False,
            )
        if self._risks is None:
            risks = {}
            for name, s in self._sources.items():
                kind = s["kind"]
                if kind == "graph":
                    r = s["graph"].propagate(self.W, method=s["method"], progress=progress)
                elif kind == "coengagement":
                    _, r = s["graph"].propagate(
                        row_seeds=s["side_seeds"], col_seeds=self.W, progress=progress
                    )
                elif kind == "terms":
                    r, _ = s["graph"].propagate(
                        row_seeds=self.W, col_seeds=s["side_seeds"], progress=progress
                    )
                else:
                    r = embedding_risk(
                        s["factors"],
                        self.W,
                        radius=s["radius"],
                        top_m=s["top_m"],
                        num_threads=s["num_threads"],
                    )
                risks[name] = r[:, 0] if self._squeeze else r
            self._risks = risks
        return dict(self._risks)

    def risk(self, *, progress: bool = False) -> np.ndarray:
        """Combined risk, float32 in [0, 1], shape (n_accounts,) or (n_accounts, c)."""
        risks = self.source_risks(progress=progress)
        return combine_risk(
            risks, weights={k: s["weight"] for k, s in self._sources.items()}, method=self.method
        )

    # -- provenance -------------------------------------------------------------------------
    def explain(self, accounts, *, top: int = 5) -> list[Explanation]:
        """Why each account has its risk: contributions by path kind and by seed.

        Parameters
        ----------
        accounts : array-like of int, shape (m,)
        top : int
            Seed contributions kept per account.

        Returns
        -------
        list of Explanation, one per account, in order
        """
        where = "RiskExpansion.explain"
        idx, _ = check_ids(accounts, "accounts", where, self.n_accounts)
        top = check_int(top, "top", where, low=1)
        risk = self.risk()
        risk2 = risk[:, None] if risk.ndim == 1 else risk
        weights = {k: s["weight"] for k, s in self._sources.items()}
        cal = calibrated(self.source_risks(), weights, where=where)
        cal2 = {k: (v[:, None] if v.ndim == 1 else v) for k, v in cal.items()}
        cats = risk2[idx].argmax(axis=1) if idx.size else np.zeros(0, dtype=np.int64)
        per_seed: list[list[Contribution]] = [[] for _ in range(idx.size)]
        for name, s in self._sources.items():
            lam = s["weight"]
            if lam == 0 or idx.size == 0:
                continue
            for j, c in self._seed_contributions(name, s, idx, cats, top):
                per_seed[j].append(Contribution(name, c[0], int(c[1]), float(lam * c[2])))
        out = []
        for j, a in enumerate(idx):
            k = int(cats[j])
            by = {name: float(v[a, k]) for name, v in cal2.items()}
            by = dict(sorted(by.items(), key=lambda kv: -kv[1]))
            seeds = tuple(sorted(per_seed[j], key=lambda c: -c.value)[:top])
            out.append(Explanation(int(a), k, float(risk2[a, k]), by, seeds))
        return out

    def _seed_contributions(self, name, s, idx, cats, top):
        kind = s["kind"]
        if kind == "embedding":
            for j, a in enumerate(idx):
                col = self.W[:, cats[j]]
                seed_ids = np.flatnonzero(col > 0)
                if seed_ids.size == 0:
                    continue
                ids, vals = nearest_seeds(
                    s["factors"],
                    [a],
                    seed_ids,
                    weights=col[seed_ids],
                    radius=s["radius"],
                    top=top,
                    num_threads=s["num_threads"],
                )
                for sid, v in zip(ids[0], vals[0], strict=True):
                    if sid >= 0 and v > 0:
                        yield j, ("account", sid, v)
            return
        if kind == "graph":
            seed_ids, C = s["graph"].contributions(idx, self.W, method=s["method"])
            labels = [("account", int(t)) for t in seed_ids]
        else:
            g = s["graph"]
            if kind == "coengagement":
                seed_ids, C = g.contributions(
                    col_nodes=idx, row_seeds=s["side_seeds"], col_seeds=self.W
                )
                labels = [
                    ("user", int(t)) if t < g.n_rows else ("account", int(t - g.n_rows))
                    for t in seed_ids
                ]
            else:
                seed_ids, C = g.contributions(
                    row_nodes=idx, row_seeds=self.W, col_seeds=s["side_seeds"]
                )
                labels = [
                    ("account", int(t)) if t < g.n_rows else ("term", int(t - g.n_rows))
                    for t in seed_ids
                ]
        for j in range(idx.size):
            vals = C[j, :, cats[j]]
            best = np.argsort(-vals, kind="stable")[:top]
            for t in best:
                if vals[t] > 0:
                    yield j, (labels[t][0], labels[t][1], float(vals[t]))
