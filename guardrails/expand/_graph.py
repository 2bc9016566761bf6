"""The prepared graph behind :func:`~guardrails.expand.propagate`: :class:`RiskGraph`.

The risk scale, the walks and how ``method="auto"`` chooses are described in
:mod:`guardrails.expand.propagate` (the public module, which re-exports this class). A
:class:`RiskGraph` holds the graph, builds its normalised operators lazily and keeps
them, with the solver's memory, for every later call.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_float, check_ids, check_int, fail
from ..exceptions import ConvergenceWarning, MissingDependencyError
from ._auto import Selection, auto_risk
from ._engine import (
    BACKENDS,
    Operator,
    Solve,
    TransposeOperator,
    compiled_available,
    solve_bicgstab,
    solve_power,
    solve_symmetric,
    transpose_scaled,
    walk,
)
from ._seeds import seed_matrix, weighted_csr

__all__ = ["RiskGraph", "DEFAULT_DAMPING", "BIPARTITE_PRIOR"]

#: Probability that the walk continues at each step.
DEFAULT_DAMPING = 0.85

_DIRECTIONS = ("out", "in", "both")
_NORMALIZATIONS = ("degree", "none")
_METHODS = ("auto", "cg", "bicgstab", "power", "sybilrank")
# Restart dampings tried by method="auto" (with the graph's own), and the heat kernel's time.
_AUTO_DAMPINGS = (0.5, 0.85, 0.95)
_HEAT_T = 2.0
# The candidate auto keeps unless another is clearly better, and uses unvalidated (see
# RiskGraph.candidates): on one-mode graphs, and on the two-sided graph of a bipartite
# matrix (BipartiteRiskGraph), each the best fixed candidate on the tuning draws.
_PRIOR = "degree@0.95"
BIPARTITE_PRIOR = "degree@0.5"
# Working memory per column of each solver, in float32 vectors of length n (the seeds
# and the result included).
_VECTORS_PER_COLUMN = {"cg": 6, "bicgstab": 9, "power": 3, "sybilrank": 3}


class RiskGraph:
    """A graph prepared once for many propagations.

    Parameters
    ----------
    adjacency : sparse matrix, shape (n, n)
        ``adjacency[u, v] > 0``: an edge from ``u`` to ``v`` with that weight (for a
        follow graph, ``u`` follows ``v``). Weights must be non-negative.
    direction : {'both', 'out', 'in'}, keyword-only
        Which edges a walk may take from a node: ``'out'`` follows the edges (from an
        account to the accounts it follows), ``'in'`` goes against them (to its
        followers), ``'both'`` ignores direction (``adjacency + adjacency.T``).
    normalization : {'degree', 'none'}, keyword-only
        ``'degree'``: walks start at each node (risk of ``i`` = where a walk from ``i``
        leads); ``'none'``: walks start at the seeds (unnormalised personalised
        PageRank). See :mod:`guardrails.expand.propagate`.
    damping : float in (0, 1), keyword-only
        Probability that the walk continues at each step.
    num_threads : int, keyword-only
        Threads for the sparse products; 0 uses every available core.
    backend : {'auto', 'compiled', 'scipy'}, keyword-only
        Who computes the sparse products: the compiled loops built with the package
        (``'auto'`` uses them when they were built), or scipy. Results agree to float32
        rounding; the compiled loops are 2-3 times faster with 8 categories.

    Attributes
    ----------
    n_nodes : int
    symmetric : bool
        True when the walk's graph is undirected; propagation then uses conjugate
        gradients, otherwise BiCGSTAB.
    degree : ndarray of float32, shape (n,)
        Total edge weight a walk can leave each node by (0 for dead ends, where walks
        stop).
    n_iter_ : int
        Sparse products of the last solve.
    """

    def __init__(
        self,
        adjacency,
        *,
        direction: str = "both",
        normalization: str = "degree",
        damping: float = DEFAULT_DAMPING,
        num_threads: int = 0,
        backend: str = "auto",
        _symmetric: bool | None = None,
        _share: bool = False,
    ):
        where = "RiskGraph"
        n = adjacency.shape[0] if sp.issparse(adjacency) else None
        A = weighted_csr(adjacency, "adjacency", where, shape=(n, n))
        self.direction = check_choice(direction, "direction", where, _DIRECTIONS)
        self.normalization = check_choice(normalization, "normalization", where, _NORMALIZATIONS)
        self.damping = check_float(damping, "damping", where, low=0.0, high=1.0, low_open=True)
        if self.damping >= 1.0:
            raise fail("damping", where, "a finite float in (0.0, 1.0)", damping)
        self.num_threads = check_int(num_threads, "num_threads", where, low=0)
        self.backend = check_choice(backend, "backend", where, BACKENDS)
        if self.backend == "compiled" and not compiled_available():
            raise MissingDependencyError(
                "RiskGraph(backend='compiled'): the compiled loops (guardrails.expand._spmm) "
                "were not built with this installation; reinstall with a C compiler, or use "
                "backend='auto' or 'scipy'"
            )
        # One call (propagate()) reads the caller's float32 arrays in place; a RiskGraph
        # kept for many calls holds its own copy, so later edits of the caller's matrix
        # cannot change it.
        A = A.astype(np.float32, copy=not _share)
        if A.nnz and not A.data.all():
            if _share:
                A = A.copy()
            A.eliminate_zeros()
        col_counts = None
        if self.direction == "in":
            A = transpose_scaled(A, np.ones(A.shape[0], np.float32))
        elif self.direction == "both":
            # An undirected graph given as a symmetric matrix (the common case) walks the
            # same with A as with A + A^T = 2A: keep A and build no sum. The transpose
            # that decides it (one compiled pass) is reused for the sum otherwise.
            counts_match = np.array_equal(
                np.bincount(A.indices, minlength=A.shape[1]), np.diff(A.indptr)
            )
            T = transpose_scaled(A, np.ones(A.shape[0], np.float32)) if counts_match else None
            if T is None or not _same_csr(A, T):
                if T is None:
                    T = transpose_scaled(A, np.ones(A.shape[0], np.float32))
                A = (A + T).tocsr()
                A.sort_indices()
            del T
            _symmetric = True
        if _symmetric is None:
            # In- and out-degree counts differ on almost every directed graph: then no
            # transposed copy is needed to know it is not symmetric.
            col_counts = np.bincount(A.indices, minlength=A.shape[1])
            same = np.array_equal(col_counts, np.diff(A.indptr))
            _symmetric = same and _is_symmetric(A)
        self.symmetric = bool(_symmetric)
        self.n_nodes = int(A.shape[0])
        self.degree = np.asarray(A.sum(axis=1), dtype=np.float32).ravel()
        self._A = A
        self._share = bool(_share)
        self._col_counts = col_counts
        self._ops: dict[str, Operator] = {}
        self._far: dict[float, np.ndarray] = {}  # see _far_shape
        self._prior = _PRIOR  # see candidates(); a BipartiteRiskGraph sets its own
        safe = np.where(self.degree > 0, self.degree, 1.0).astype(np.float64)
        self._sqrt_deg = np.sqrt(safe).astype(np.float32)

    # -- operators, built lazily and kept ---------------------------------------------
    def _operator(self, kind: str) -> Operator:
        op = self._ops.get(kind)
        if op is not None:
            return op
        A = self._A
        counts = np.diff(A.indptr)
        safe = np.where(self.degree > 0, self.degree, 1.0).astype(np.float64)
        if kind == "adj":  # A itself (the one-hop count)
            op = Operator(A, num_threads=self.num_threads, backend=self.backend)
            self._ops[kind] = op
            return op
        if kind == "sym":  # N = D^-1/2 A D^-1/2
            scale = (1.0 / np.sqrt(safe)).astype(np.float32)
            data = A.data * np.repeat(scale, counts)
            data *= scale[A.indices]
            M = sp.csr_matrix((data, A.indices, A.indptr), shape=A.shape)
        else:
            inv = (1.0 / safe).astype(np.float32)
            # 'row': Q = D^-1 A (from a node to its neighbours); 'col': Q^T (from the
            # seeds), scaled and transposed in one pass, without Q itself.
            if kind == "row":
                M = sp.csr_matrix(
                    (A.data * np.repeat(inv, counts), A.indices, A.indptr), shape=A.shape
                )
            else:
                M = transpose_scaled(A, inv, self._col_counts)
        op = Operator(M, num_threads=self.num_threads, backend=self.backend)
        self._ops[kind] = op
        return op

    def _scatter_ok(self) -> bool:
        return self.backend != "scipy" and compiled_available()

    def _walk_kind(self, transpose: bool, normalization: str | None = None) -> str:
        forward = (normalization or self.normalization) == "degree"
        return "row" if forward != transpose else "col"

    def _solve(
        self,
        W,
        *,
        method,
        tol,
        max_iter,
        n_steps,
        progress,
        transpose,
        max_columns,
        normalization=None,
        damping=None,
    ):
        n, c = W.shape
        self._chose_solver = method in ("auto", "ppr")
        if self._chose_solver:
            method = "cg" if self.symmetric else "bicgstab"
        if max_columns is None:
            # Bound the working set at about 1 GiB of float32 vectors.
            per = _VECTORS_PER_COLUMN[method]
            max_columns = max(1, (1 << 30) // (4 * per * max(1, n)))

        def block(lo):
            return self._solve_block(
                np.ascontiguousarray(W[:, lo : lo + max_columns]),
                method=method,
                tol=tol,
                max_iter=max_iter,
                n_steps=n_steps,
                progress=progress,
                transpose=transpose,
                normalization=normalization or self.normalization,
                damping=self.damping if damping is None else damping,
            )

        if c <= max_columns:
            return block(0)  # the solver's own array: no copy
        out = np.empty((n, c), dtype=np.float32)
        for lo in range(0, c, max_columns):
            out[:, lo : lo + max_columns] = block(lo)
        return out

    def _solve_block(
        self, W, *, method, tol, max_iter, n_steps, progress, transpose, normalization, damping
    ):
        if method == "sybilrank":
            op = self._operator(self._walk_kind(transpose, normalization))
            return walk(op, W, n_steps, progress=progress)
        how = Solve(damping, tol, max_iter, progress)
        if method == "cg":
            if not self.symmetric:
                raise fail(
                    "method",
                    "RiskGraph.propagate",
                    "'bicgstab', 'power' or 'auto' for a directed graph ('cg' needs a "
                    "symmetric walk)",
                    method,
                )
            # T = S^-1 N S with S = D^(1/2) for walks from each node, D^(-1/2) from seeds.
            forward = (normalization == "degree") != transpose
            scale = self._sqrt_deg if forward else 1.0 / self._sqrt_deg
            Y, self.n_iter_ = solve_symmetric(self._operator("sym"), W, scale, how)
            return Y
        kind = self._walk_kind(transpose, normalization)
        if kind == "col" and self._chose_solver:
            # A walk from the seeds keeps its mass (but at dead ends): the solution's
            # total is about sum(w) / (1 - a), spread far from the seeds. Power iteration
            # started there, instead of at the seeds, has an error of nearly zero total
            # mass, which the walk damps by a * |lambda_2| per step rather than a: on the
            # directed benchmark graph 17 fused products reached an L1 error of 4e-5
            # where BiCGSTAB took 52 and power iteration from the seeds stopped at 3e-4.
            n = W.shape[0]
            one_call = self._share and "col" not in self._ops and self._scatter_ok()
            if one_call:
                # One call: the walk from the seeds read from A's own rows (no transpose
                # built for a graph that is used once), the far mass spread evenly.
                safe = np.where(self.degree > 0, self.degree, 1.0).astype(np.float64)
                op = TransposeOperator(
                    self._A, (1.0 / safe).astype(np.float32), num_threads=self.num_threads
                )
                shape = np.full((n, 1), 1.0 / max(n, 1), dtype=np.float32)
            else:
                op = self._operator(kind)
                shape = self._far_shape(op, damping, max_iter)
            far = (damping / (1.0 - damping)) * W.sum(axis=0, dtype=np.float64)
            start = W + shape * far.astype(np.float32)[None, :]
            Y, self.n_iter_ = solve_power(op, W, how, start=start)
            return Y
        solve = solve_bicgstab if method == "bicgstab" else solve_power
        Y, self.n_iter_ = solve(self._operator(kind), W, how)
        return Y

    def _far_shape(self, op, damping: float, max_iter: int) -> np.ndarray:
        """Where a long walk from the seeds ends up, for the start of power iteration on a
        prepared graph: this graph's PageRank with uniform restart (sum 1, shape (n, 1)),
        solved once per damping (at ``tol=1e-3``: it only shapes the start) and kept.

        Far from the seeds, ``a^k T^k w`` tends to ``a^k sum(w)`` times the walk's
        stationary distribution, which a uniform spread only approximates: on the
        directed 1M-node benchmark graph this start took 15 products for an L1 error of
        8e-5 where the uniform one took 18 (6e-5), at tol=1e-4.
        """
        shape = self._far.get(damping)
        if shape is None:
            n = self.n_nodes
            U = np.full((n, 1), 1.0 / max(n, 1), dtype=np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                P, _ = solve_power(op, U, Solve(damping, 1e-3, max_iter), start=U / (1 - damping))
            total = float(P.sum(dtype=np.float64))
            shape = (P / total if total > 0 else U).astype(np.float32)
            self._far[damping] = shape
        return shape

    def _check_candidates(self, candidates, where, extra=()):
        if candidates is None:
            return self.candidates(extra=extra)
        if isinstance(candidates, str) or not hasattr(candidates, "__iter__"):
            raise fail("candidates", where, "a non-empty sequence of method names", candidates)
        names = []
        for nm in candidates:
            if nm in extra:
                names.append(nm)
                continue
            nm = _check_method(nm, "candidates", where)
            if nm in ("auto", "sybilrank", "cg", "bicgstab", "power", "ppr"):
                if nm == "ppr":
                    nm = _ppr_name(self.normalization, self.damping)
                else:
                    raise fail("candidates", where, "scorer names (not solvers or 'auto')", nm)
            if nm not in names:
                names.append(nm)
        if not names:
            raise fail("candidates", where, "a non-empty sequence of method names", candidates)
        return tuple(names)

    def _check_solver_args(self, where, method, tol, max_iter, n_steps):
        method = _check_method(method, "method", where)
        tol = check_float(tol, "tol", where, low=0.0, high=1.0, low_open=True)
        max_iter = check_int(max_iter, "max_iter", where, low=1)
        if n_steps is None:
            n_steps = max(1, math.ceil(math.log2(max(2, self.n_nodes))))
        n_steps = check_int(n_steps, "n_steps", where, low=1)
        return method, tol, max_iter, n_steps

    # -- candidate scorers (method="auto") ------------------------------------------------
    def candidates(self, *, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The scorers ``method="auto"`` chooses among, in tie-break order.

        ``degree@a`` and ``plain@a``: personalised PageRank walking from each node
        (``normalization="degree"``) or from the seeds (``"none"``), continuing with
        probability ``a`` in 0.5, 0.85, 0.95 (and this graph's ``damping`` when it differs);
        ``onehop``: the seed itself plus ``damping`` times its weighted count of flagged
        neighbours; ``heat``: the heat kernel ``sum_k t^k / k! (D^-1 A)^k w`` with
        ``t = 2``. The first is the prior: another candidate replaces it only when it
        ranks held-out seeds significantly better over the folds (see
        ``_auto.choose``), and a category with under 5 seeds gets it unvalidated. It
        is ``degree@0.95`` on a one-mode graph, the best fixed candidate on the tuning
        draws of the LFR and block-model graphs, and ``degree@0.5`` on the two-sided
        graph of a :class:`~guardrails.expand.BipartiteRiskGraph`, the best on the
        tuning draws of MovieLens (docs/expand.md); then this graph's own PageRank.
        """
        own = _ppr_name(self.normalization, self.damping)
        names = list(dict.fromkeys([self._prior, own]))
        for a in sorted({*_AUTO_DAMPINGS, self.damping}):
            for kind in ("degree", "plain"):
                nm = f"{kind}@{a:g}"
                if nm not in names:
                    names.append(nm)
        names += ["onehop", "heat"]
        return tuple(names) + tuple(extra)

    def _apply_walk(self, X: np.ndarray, normalization: str) -> np.ndarray:
        """One step of the walk, ``T X``, with the operator this graph already holds."""
        if self.symmetric:
            # T = S^-1 N S (degree) or S N S^-1 (none), S = D^1/2: one operator for both.
            s = self._sqrt_deg[:, None]
            forward = normalization == "degree"
            Z = np.ascontiguousarray(X * s if forward else X / s, dtype=np.float32)
            out = self._operator("sym").matmul(Z)
            out = out / s if forward else out * s
            return np.ascontiguousarray(out, dtype=np.float32)
        return self._operator(self._walk_kind(False, normalization)).matmul(
            np.ascontiguousarray(X, dtype=np.float32)
        )

    def _scores(self, name, W, *, tol, max_iter, progress, max_columns=None):
        """Unclipped scores of candidate ``name`` for the columns of ``W`` (float32)."""
        kind, _, param = name.partition("@")
        if kind in ("degree", "plain"):
            return self._solve(
                W,
                method="ppr",
                tol=tol,
                max_iter=max_iter,
                n_steps=1,
                progress=progress,
                transpose=False,
                max_columns=max_columns,
                normalization="degree" if kind == "degree" else "none",
                damping=float(param),
            )
        W = np.ascontiguousarray(W, dtype=np.float32)
        if kind == "onehop":
            Y = self._operator("adj").matmul(W)
            Y *= np.float32(self.damping)
            Y += W
            return Y
        if kind == "heat":
            # sum_k t^k/k! T^k W, truncated once a term's coefficient is below tol/100 of
            # the sum (t = 2: 12 products at tol=1e-4).
            t, coef, total = _HEAT_T, 1.0, 1.0
            Y = W.copy()
            X = W
            k = 0
            while True:
                k += 1
                coef *= t / k
                if coef < tol * 1e-2 * total or k > max_iter:
                    break
                total += coef
                X = self._apply_walk(X, "degree")
                Y += np.float32(coef) * X
            return Y
        raise AssertionError(name)  # pragma: no cover - names are checked at the boundary

    def _propagate_auto(
        self, W, where, *, n_folds, random_state, candidates, raw, mask=None, extra=None, **solve
    ):
        """``method='auto'`` for the columns of ``W`` (see ``_auto.auto_risk``): checks
        its arguments, keeps the choice in :attr:`selection_`, clips unless ``raw``.
        ``extra``: scorers beyond the graph's own (``{name: fn(W)}``, the bipartite
        graph's co-engagement); ``solve``: ``tol``, ``max_iter``, ``progress``."""
        n_folds = check_int(n_folds, "n_folds", where, low=2)
        random_state = check_int(random_state, "random_state", where, low=0)
        extra = extra or {}
        names = self._check_candidates(candidates, where, extra=tuple(extra))
        max_iter = solve["max_iter"]

        def score(name, X, tol, progress):
            if name in extra:
                return extra[name](X)
            return self._scores(name, X, tol=tol, max_iter=max_iter, progress=progress)

        Y, self.selection_ = auto_risk(
            W,
            names,
            score,
            own=_ppr_name(self.normalization, self.damping),
            n_folds=n_folds,
            random_state=random_state,
            tol=solve["tol"],
            progress=solve["progress"],
            mask=mask,
        )
        if not raw:
            np.clip(Y, 0.0, 1.0, out=Y)
        return Y

    # -- public -----------------------------------------------------------------------
    def propagate(
        self,
        seeds,
        *,
        weights=None,
        method: str = "auto",
        tol: float = 1e-4,
        max_iter: int = 200,
        n_steps: int | None = None,
        max_columns: int | None = None,
        progress: bool = False,
        raw: bool = False,
        n_folds: int = 5,
        random_state: int = 0,
        candidates=None,
    ) -> np.ndarray:
        """Risk of every node from the seeds, on the scale of :mod:`guardrails.expand.propagate`.

        Parameters
        ----------
        seeds : array-like of int, sequence or mapping of them, or (n, c) weight matrix
            Seed nodes; several categories give one output column each (see
            ``guardrails.expand._seeds.seed_matrix`` for the accepted forms).
        weights : array-like of float in [0, 1], optional
            Seed weights (severity, confidence), matching ``seeds``; default 1.
        method : str
            ``'auto'`` (default): choose, per category, among :meth:`candidates` by
            ``n_folds``-fold validation on the seeds (see :mod:`guardrails.expand.propagate`,
            "Choosing the method"); the choice and its scores are kept in
            :attr:`selection_`. ``'ppr'``: this graph's personalised PageRank (its
            ``normalization`` and ``damping``; conjugate gradients on undirected walks,
            BiCGSTAB on directed ones). A candidate name (``'degree@0.5'``,
            ``'plain@0.85'``, ``'onehop'``, ``'heat'``, ...): that scorer alone.
            ``'cg'``, ``'bicgstab'``, ``'power'``: ``'ppr'`` with that solver;
            ``'sybilrank'``: the early-stopped walk without restart.
        tol : float
            Stop when the L1 size of the last update of every category is at most
            ``tol`` times the L1 norm of its current solution. For conjugate gradients
            the remaining L1 error is then usually well below ``tol`` (relative).
        max_iter : int
            Iteration cap; reaching it issues a :class:`ConvergenceWarning`.
        n_steps : int, optional
            Steps of the ``'sybilrank'`` walk; default ``ceil(log2 n)``.
        max_columns : int, optional
            Categories solved together; default keeps the working set near 1 GiB.
        progress : bool
            Show a tqdm progress bar.
        raw : bool
            Return the unclipped series (expected weighted seed visits) instead of risk.
        n_folds : int
            Folds of the validation behind ``method='auto'`` (fewer when a category has
            fewer seeds; categories with under 5 seeds fall back to ``'ppr'``).
        random_state : int
            Seeds the fold assignment: the same call gives the same choice.
        candidates : sequence of str, optional
            Restrict ``'auto'`` to these scorers (default :meth:`candidates`).

        Returns
        -------
        risk : ndarray of float32, shape (n,) for one 1-d seed array, else (n, c)
            In [0, 1] (unless ``raw``).
        """
        where = "RiskGraph.propagate"
        method, tol, max_iter, n_steps = self._check_solver_args(
            where, method, tol, max_iter, n_steps
        )
        W, squeeze, _ = seed_matrix(seeds, weights, self.n_nodes, where)
        if method == "auto":
            Y = self._propagate_auto(
                W,
                where,
                tol=tol,
                max_iter=max_iter,
                progress=progress,
                n_folds=n_folds,
                random_state=random_state,
                candidates=candidates,
                raw=raw,
            )
            return Y[:, 0] if squeeze else Y
        if method in ("onehop", "heat") or "@" in method:
            Y = self._scores(
                method, W, tol=tol, max_iter=max_iter, progress=progress, max_columns=max_columns
            )
            self.selection_ = [Selection(category=j, method=method) for j in range(W.shape[1])]
            if not raw:
                np.clip(Y, 0.0, 1.0, out=Y)
            return Y[:, 0] if squeeze else Y
        self.selection_ = [
            Selection(category=j, method=_ppr_name(self.normalization, self.damping))
            if method != "sybilrank"
            else Selection(category=j, method="sybilrank")
            for j in range(W.shape[1])
        ]
        Y = self._solve(
            W,
            method=method,
            tol=tol,
            max_iter=max_iter,
            n_steps=n_steps,
            progress=progress,
            transpose=False,
            max_columns=max_columns,
        )
        if method == "sybilrank":
            top = Y.max(axis=0, initial=0.0)
            Y = Y / np.where(top > 0, top, 1.0)
        if not raw:
            np.clip(Y, 0.0, 1.0, out=Y)
        return Y[:, 0] if squeeze else Y

    def contributions(
        self,
        nodes,
        seeds,
        *,
        weights=None,
        method: str = "auto",
        tol: float = 1e-6,
        max_iter: int = 200,
        n_steps: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """How much each seed contributed to the (unclipped) risk of some nodes.

        The risk is linear in the seed weights, ``Y = M W`` with
        ``M = sum_k a^k T^k``; row ``i`` of ``M`` is one propagation with the transposed
        walk started at ``i``, so this costs one propagation per batch of nodes.

        ``'ppr'`` (and the solver names) decompose this graph's own PageRank, a
        PageRank candidate name (``'degree@0.5'``) that candidate, exactly. With
        ``method='auto'`` (the default) this runs :meth:`propagate` with ``'auto'`` for
        the same seeds (default ``n_folds`` and ``random_state``, so the choice is the one
        a default call makes; it is in :attr:`selection_`): each category's seeds are
        weighed by the PageRank candidate auto chose for it (this graph's own where it
        chose ``onehop`` or ``heat``), and each node's contributions are scaled to add
        up to the unclipped risk auto returned (whose values are the graph's own
        PageRank's, placed in the chosen order: not linear in the seeds).

        Parameters
        ----------
        nodes : array-like of int, shape (m,)
        seeds, weights
            As in :meth:`propagate`.

        Returns
        -------
        seed_ids : ndarray of int64, shape (S,)
            Nodes with a positive weight in some category.
        C : ndarray of float32, shape (m, S, c)
            ``C[j, t, k]``: contribution of seed ``seed_ids[t]`` in category ``k`` to the
            unclipped risk of ``nodes[j]``; ``C[j].sum(axis=0)`` is that risk (up to the
            solver tolerance).
        """
        where = "RiskGraph.contributions"
        method, tol, max_iter, n_steps = self._check_solver_args(
            where, method, tol, max_iter, n_steps
        )
        idx, _ = check_ids(nodes, "nodes", where, self.n_nodes)
        W, _, _ = seed_matrix(seeds, weights, self.n_nodes, where)
        raw, selections = None, None
        if method == "auto":
            raw = self.propagate(W, method="auto", tol=tol, max_iter=max_iter, raw=True)
            selections = self.selection_
        elif "@" in method:
            selections = [Selection(category=j, method=method) for j in range(W.shape[1])]
        return self._contributions(
            idx,
            W,
            selections,
            raw,
            method=method,
            tol=tol,
            max_iter=max_iter,
            progress=progress,
            n_steps=n_steps,
        )

    def _contributions(self, idx, W, selections, raw, *, method, tol, max_iter, progress, n_steps):
        """Seed contributions to the nodes ``idx`` under the PageRank candidate of each
        category's selection (this graph's own for ``onehop``, ``heat`` or none), scaled
        per node to add up to ``raw[idx]`` when ``raw`` is given (see contributions)."""
        seed_ids = np.flatnonzero(W.max(axis=1) > 0).astype(np.int64)
        c = W.shape[1]
        specs = [(self.normalization, self.damping)] * c
        for j, sel in enumerate(selections or ()):
            kind, _, p = sel.method.partition("@")
            if kind in ("degree", "plain"):
                specs[j] = ("degree" if kind == "degree" else "none", float(p))
        solver = "ppr" if method == "auto" or "@" in method else method
        E = np.zeros((self.n_nodes, idx.size), dtype=np.float32)
        E[idx, np.arange(idx.size)] = 1.0
        C = np.zeros((idx.size, seed_ids.size, c), dtype=np.float32)
        for spec in dict.fromkeys(specs):
            cols = [j for j in range(c) if specs[j] == spec]
            Mrows = self._solve(
                E,
                method=solver,
                tol=tol,
                max_iter=max_iter,
                n_steps=n_steps,
                progress=progress,
                transpose=True,
                max_columns=None,
                normalization=spec[0],
                damping=spec[1],
            )
            # C[j, t, k] = M[nodes[j], seed_ids[t]] * W[seed_ids[t], k]
            Ms = Mrows[seed_ids].T  # (m, S)
            C[:, :, cols] = np.maximum(Ms[:, :, None] * W[seed_ids][:, cols][None, :, :], 0.0)
        if raw is not None:
            # Shares under the chosen scorer, scaled to the risk auto returned.
            total = C.sum(axis=1)  # (m, c)
            want = raw[idx]
            C *= np.where(total > 0, want / np.where(total > 0, total, 1.0), 0.0)[:, None, :]
        return seed_ids, C


def _ppr_name(normalization: str, damping: float) -> str:
    return f"{'degree' if normalization == 'degree' else 'plain'}@{damping:g}"


def _check_method(method, name: str, where: str) -> str:
    what = (
        f"one of {list(_METHODS)}, 'ppr', 'onehop', 'heat', or 'degree@a' / 'plain@a' "
        "with a in (0, 1)"
    )
    if not isinstance(method, str):
        raise fail(name, where, what, method)
    if method in _METHODS or method in ("ppr", "onehop", "heat"):
        return method
    kind, at, p = method.partition("@")
    if at and kind in ("degree", "plain"):
        try:
            a = float(p)
        except ValueError:
            a = -1.0
        if 0.0 < a < 1.0:
            return method
    raise fail(name, where, what, method)


def _same_csr(A: sp.csr_matrix, T: sp.csr_matrix) -> bool:
    return bool(
        np.array_equal(A.indptr, T.indptr)
        and np.array_equal(A.indices, T.indices)
        and np.allclose(A.data, T.data, rtol=1e-6, atol=0.0)
    )


def _is_symmetric(A: sp.csr_matrix) -> bool:
    if A.shape[0] != A.shape[1]:
        return False
    return _same_csr(A, transpose_scaled(A, np.ones(A.shape[0], np.float32)))
