"""The propagation engine: a prepared sparse operator and two solvers.

Everything here is arrays only. An :class:`Operator` holds one float32 CSR matrix split
into row blocks of about equal non-zeros, one thread per block, each block walked in
row chunks; :meth:`Operator.matmul` multiplies it by a dense block of columns and can
run an epilogue on each chunk right after the chunk is written. The products are the
compiled loops of ``guardrails.expand._spmm`` (built with the package where a C compiler
was available; see that file for why) or scipy's; both release the GIL, so the blocks
run in parallel.

The solvers compute ``Y = sum_k a^k T^k W`` (the solution of ``(I - a T) Y = W``) for a
block ``W`` of seed columns:

- :func:`solve_symmetric` for ``T = D^(-s/2) N D^(s/2)`` with ``N`` symmetric (an
  undirected graph, ``N = D^-1/2 A D^-1/2``): conjugate gradients on the symmetric
  positive definite system ``(I - a N) Z = D^(s/2) W``, one column per seed category,
  with per-column step sizes. CG adapts to the spectrum of the graph; on the power-law
  graphs of the benchmark it needs about three quarters of the products of power
  iteration for the same error (9 against 11-12 for an L1 error of 1e-4).
- :func:`solve_bicgstab` for any ``T`` (directed walks): BiCGSTAB, one column per
  category, with power iteration as its fallback on a breakdown.
- :func:`solve_power` for any ``T``: power (Jacobi) iteration started at ``W``.

Both stop when the L1 size of the last update of every column, in output space, is at
most ``tol`` times the L1 norm of that column's current solution (a relative change).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import scipy.sparse as sp

from ..core.threads import blas_single_thread, default_num_threads, shared_pool
from ..exceptions import ConvergenceWarning

__all__ = [
    "BACKENDS",
    "Operator",
    "compiled_available",
    "solve_symmetric",
    "solve_power",
    "solve_bicgstab",
    "walk",
    "transpose_scaled",
    "TransposeOperator",
    "ConvergenceWarning",
]


try:  # the compiled loops, built with the package when a C compiler was available
    from . import _spmm
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    _spmm = None

#: Product backends: ``'compiled'`` (``guardrails.expand._spmm``), ``'scipy'``, or
#: ``'auto'`` (compiled when it was built, else scipy).
BACKENDS = ("auto", "compiled", "scipy")


def compiled_available() -> bool:
    """Whether the compiled sparse product was built with this installation."""
    return _spmm is not None


def transpose_scaled(
    A: sp.csr_matrix, scale: np.ndarray, col_counts: np.ndarray | None = None
) -> sp.csr_matrix:
    """``(diag(scale) A)^T`` as a float32 CSR matrix with sorted rows, in one pass.

    With the compiled loops, one scatter over ``A`` writes the transposed indices and the
    scaled values together (scipy needs a scaled copy, then a CSR -> CSC conversion, then
    a copy back to CSR). ``col_counts`` (non-zeros per column), when the caller already
    has it, saves a pass.
    """
    n, m = A.shape
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    if _spmm is None or A.dtype != np.float32:
        counts = np.diff(A.indptr)
        data = np.asarray(A.data, dtype=np.float32) * np.repeat(scale, counts)
        T = sp.csr_matrix((data, A.indices, A.indptr), shape=A.shape).T.tocsr()
        T.sort_indices()
        return T
    if col_counts is None:
        col_counts = np.bincount(A.indices, minlength=m)
    itype = A.indices.dtype if A.nnz < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(col_counts, out=indptr[1:])
    nxt = indptr[:-1].copy()
    indices = np.empty(A.nnz, dtype=itype)
    data = np.empty(A.nnz, dtype=np.float32)
    Ai = A.indptr if A.indptr.dtype == A.indices.dtype else A.indptr.astype(A.indices.dtype)
    _spmm.csr_transpose(Ai, A.indices, A.data, scale, nxt, indices, data)
    T = sp.csr_matrix((data, indices, indptr.astype(itype, copy=False)), shape=(m, n))
    T.has_sorted_indices = True
    return T


class Operator:
    """A float32 CSR matrix prepared for threaded products with fused epilogues.

    Parameters
    ----------
    matrix : csr_matrix, shape (n, m)
        Canonical CSR; converted to float32.
    num_threads : int
        Row blocks (and threads) used by the products; 0 uses every available core.
    chunk_values : int
        Rows are processed in chunks of about this many output values (rows times
        columns; 64k float32 values is 256 KiB), so that an epilogue finds the rows the
        product just wrote, and the rows of the other vectors it reads, still in cache.
    min_parallel_nnz : int
        Below this many non-zeros a product runs on the calling thread.
    backend : {'auto', 'compiled', 'scipy'}
        Who multiplies: the compiled kernel (a register-accumulated, prefetching loop;
        2 to 3 times faster than scipy with 8 columns on the benchmark graph) or scipy.
        Both sum each row in the order of its non-zeros, in float32.
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        *,
        num_threads: int = 0,
        chunk_values: int = 1 << 16,
        min_parallel_nnz: int = 200_000,
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"Operator: backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "compiled" and _spmm is None:
            raise ImportError(
                "Operator: the compiled product (guardrails.expand._spmm) was not built with "
                "this installation (no C compiler?); use backend='scipy' or 'auto'"
            )
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        if matrix.indptr.dtype != matrix.indices.dtype:
            dtype = np.promote_types(matrix.indptr.dtype, matrix.indices.dtype)
            matrix.indptr = matrix.indptr.astype(dtype)
            matrix.indices = matrix.indices.astype(dtype)
        self.matrix = matrix
        self.shape = matrix.shape
        self.nnz = int(matrix.nnz)
        self.backend = "scipy" if backend == "scipy" or _spmm is None else "compiled"
        threads = default_num_threads() if num_threads <= 0 else int(num_threads)
        # Small products are not worth a thread hand-off.
        if self.nnz < min_parallel_nnz:
            threads = 1
        self.num_threads = threads
        self.chunk_values = max(1, int(chunk_values))
        n = matrix.shape[0]
        if threads == 1 or n == 0:
            bounds = [0, n]
        else:
            cuts = np.searchsorted(matrix.indptr, np.linspace(0, self.nnz, threads + 1)[1:-1])
            bounds = [0, *np.unique(cuts).tolist(), n]
        # Row ranges of about equal non-zeros, one per thread.
        self.bounds = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
        self._plans: dict[int, list[list[tuple[int, int, sp.csr_matrix | None]]]] = {}

    def _rows(self, lo: int, hi: int) -> sp.csr_matrix:
        """Rows ``lo:hi`` as a CSR matrix sharing this operator's arrays."""
        m = self.matrix
        s, e = int(m.indptr[lo]), int(m.indptr[hi])
        indptr = m.indptr[lo : hi + 1] - m.indptr[lo]
        return sp.csr_matrix(
            (m.data[s:e], m.indices[s:e], indptr), shape=(hi - lo, m.shape[1]), copy=False
        )

    def plan(self, n_columns: int) -> list[list[tuple[int, int, sp.csr_matrix | None]]]:
        """Row chunks ``(lo, hi, rows)`` per thread for products with ``n_columns``.

        ``rows`` is the chunk's CSR slice for the scipy backend, None for the compiled one.
        """
        plan = self._plans.get(n_columns)
        if plan is None:
            step = max(256, self.chunk_values // max(1, n_columns))
            scipy_rows = self.backend == "scipy"
            plan = [
                [
                    (a, min(hi, a + step), self._rows(a, min(hi, a + step)) if scipy_rows else None)
                    for a in range(lo, hi, step)
                ]
                for lo, hi in self.bounds
            ]
            self._plans[n_columns] = plan
        return plan

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None, epilogue=None):
        """Return ``matrix @ X`` as float32; ``X`` has shape (m,) or (m, c).

        With ``epilogue``, call ``epilogue(lo, hi)`` on the same thread right after rows
        ``lo:hi`` of ``out`` are written, and return the list of its results in row
        order instead of ``out``.
        """
        if X.ndim not in (1, 2) or X.shape[0] != self.shape[1]:
            raise ValueError(f"Operator.matmul: X has shape {X.shape}, matrix {self.shape}")
        shape = (self.shape[0], *X.shape[1:])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(
                f"Operator.matmul: out must be float32 of shape {shape}, got {out.dtype} "
                f"{out.shape}"
            )
        c = 1 if X.ndim == 1 else X.shape[1]
        if c == 0:
            return out if epilogue is None else []
        compiled = (
            self.backend == "compiled"
            and X.dtype == np.float32
            and X.flags.c_contiguous
            and out.dtype == np.float32
            and out.flags.c_contiguous
        )
        if compiled:
            m = self.matrix
            args = (m.indptr, m.indices, m.data, X, out)

            def product(lo, hi, rows):
                _spmm.csr_matmul(*args, lo, hi, c)

        else:
            # scipy's single-vector product is faster than its multi-vector one.
            x = X if X.ndim == 1 else (X[:, 0] if c == 1 else X)
            o = out if out.ndim == 1 else (out[:, 0] if c == 1 else out)
            if self.backend == "compiled":  # an odd layout: scipy on CSR slices

                def product(lo, hi, rows):
                    o[lo:hi] = self._rows(lo, hi) @ x

            else:

                def product(lo, hi, rows):
                    o[lo:hi] = rows @ x

        def run(chunks):
            results = []
            for lo, hi, rows in chunks:
                product(lo, hi, rows)
                if epilogue is not None:
                    results.append(epilogue(lo, hi))
            return results

        plan = self.plan(c)
        if len(plan) <= 1:  # one thread, or no rows at all
            results = run(plan[0]) if plan else []
        else:
            pool = shared_pool(len(plan))
            futures = [pool.submit(run, chunks) for chunks in plan]
            results = [r for f in futures for r in f.result()]
        return out if epilogue is None else results

    def map_rows(self, fn, n_columns: int) -> list:
        """Call ``fn(lo, hi)`` over the row chunks of :meth:`plan`, on the threads."""
        plan = self.plan(n_columns)
        if len(plan) <= 1:
            return [fn(lo, hi) for lo, hi, _ in plan[0]] if plan else []
        pool = shared_pool(len(plan))
        futures = [pool.submit(lambda ch: [fn(lo, hi) for lo, hi, _ in ch], ch) for ch in plan]
        return [r for f in futures for r in f.result()]


class TransposeOperator:
    """``(diag(scale) A)^T`` applied from ``A``'s own CSR arrays, without a transposed copy.

    For a single propagation over a graph, where building the transpose (a pass of
    random writes over every edge, and a second copy of the graph) would cost as much
    as the solve. Each thread scatters its block of ``A``'s rows into its own output
    (the first into ``out`` itself), and the blocks are added up; epilogues then run
    over row chunks of the finished output. Offers the part of :class:`Operator`'s
    interface the solvers use; its ``backend`` is ``'scatter'``, so solvers take their
    generic (not the fused compiled) path. Needs the compiled loops.
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        scale: np.ndarray,
        *,
        num_threads: int = 0,
        min_parallel_nnz: int = 200_000,
        chunk_values: int = 1 << 16,
    ):
        if _spmm is None:  # pragma: no cover - callers check compiled_available()
            raise ImportError("TransposeOperator needs the compiled loops")
        m = matrix
        if m.indptr.dtype != m.indices.dtype:
            dtype = np.promote_types(m.indptr.dtype, m.indices.dtype)
            m = sp.csr_matrix(
                (m.data, m.indices.astype(dtype), m.indptr.astype(dtype)), shape=m.shape, copy=False
            )
        self.matrix = m
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.shape = (m.shape[1], m.shape[0])
        self.nnz = int(m.nnz)
        self.backend = "scatter"
        threads = default_num_threads() if num_threads <= 0 else int(num_threads)
        if self.nnz < min_parallel_nnz:
            threads = 1
        n = m.shape[0]
        if threads == 1 or n == 0:
            cuts = [0, n]
        else:
            inner = np.searchsorted(m.indptr, np.linspace(0, self.nnz, threads + 1)[1:-1])
            cuts = [0, *np.unique(inner).tolist(), n]
        self.blocks = [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]
        self.num_threads = max(1, len(self.blocks))
        self.chunk_values = max(1, int(chunk_values))
        self._plans: dict[int, list] = {}

    def plan(self, n_columns: int):
        """Row chunks of the output, one list per thread (as :meth:`Operator.plan`)."""
        plan = self._plans.get(n_columns)
        if plan is None:
            rows = self.shape[0]
            step = max(256, self.chunk_values // max(1, n_columns))
            chunks = [(a, min(rows, a + step), None) for a in range(0, rows, step)]
            k = self.num_threads
            plan = [chunks[i::k] for i in range(k)] if chunks else []
            plan = [p for p in plan if p]
            self._plans[n_columns] = plan
        return plan

    def map_rows(self, fn, n_columns: int) -> list:
        plan = self.plan(n_columns)
        if len(plan) <= 1:
            return [fn(lo, hi) for lo, hi, _ in plan[0]] if plan else []
        pool = shared_pool(len(plan))
        futures = [
            pool.submit(lambda ch: [(lo, fn(lo, hi)) for lo, hi, _ in ch], ch) for ch in plan
        ]
        # Results in row order, as Operator.map_rows returns them.
        return [r for _, r in sorted((x for f in futures for x in f.result()), key=lambda t: t[0])]

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None, epilogue=None):
        if X.ndim not in (1, 2) or X.shape[0] != self.shape[1]:
            raise ValueError(
                f"TransposeOperator.matmul: X has shape {X.shape}, matrix {self.shape}"
            )
        shape = (self.shape[0], *X.shape[1:])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        c = 1 if X.ndim == 1 else X.shape[1]
        X = np.ascontiguousarray(X, dtype=np.float32)
        m = self.matrix
        bufs = [out] + [np.zeros(shape, dtype=np.float32) for _ in self.blocks[1:]]
        out[...] = 0.0
        if c:

            def run(k):
                lo, hi = self.blocks[k]
                _spmm.csr_scatter(m.indptr, m.indices, m.data, self.scale, X, bufs[k], lo, hi, c)

            if len(self.blocks) <= 1:
                for k in range(len(self.blocks)):
                    run(k)
            else:
                pool = shared_pool(len(self.blocks))
                for f in [pool.submit(run, k) for k in range(len(self.blocks))]:
                    f.result()
                for b in bufs[1:]:
                    out += b
        if epilogue is None:
            return out
        return self.map_rows(epilogue, c)


class _ColumnSums:
    """Column sums of row chunks, as BLAS matrix-vector products with a vector of ones.

    numpy's ``sum(axis=0)`` over a (rows, c) array loops over the rows c values at a
    time and costs ten times more than this for c = 8. BLAS accumulates in float32
    within a chunk (at most 64k values); the chunks add up in float64.
    """

    def __init__(self, op: Operator, n_columns: int):
        rows = max((hi - lo for chunks in op.plan(n_columns) for lo, hi, _ in chunks), default=1)
        self.ones = np.ones(rows, dtype=np.float32)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (self.ones[: X.shape[0]] @ X).astype(np.float64)


def _column_scale(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeded rows of ``W``, and per-column factors ``(up, down)`` that scale each
    column to a largest absolute weight of 1 and back.

    The solution is linear in each column, so solvers work on the scaled columns: tiny
    weights (1e-25, say) then do not underflow the float32 squares of a residual and
    stop a solver early.
    """
    seeded = np.flatnonzero(W.any(axis=1))
    top = np.abs(W[seeded]).max(axis=0).astype(np.float64) if seeded.size else np.zeros(W.shape[1])
    top = np.where(top > 0, top, 1.0)
    return seeded, np.minimum(1.0 / top, 1e38).astype(np.float32), top.astype(np.float32)


def _one_blas_thread(op: Operator):
    """One BLAS thread per chunk while ``op``'s threads provide the parallelism."""
    return blas_single_thread() if op.num_threads > 1 else contextlib.nullcontext()


def _total(parts, k: int) -> np.ndarray:
    return np.sum([p[k] for p in parts], axis=0)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False)


def _tick(bar, rel: np.ndarray) -> None:
    """Advance a solver's progress bar by one iteration, showing the largest step."""
    if bar is not None:
        bar.update(1)
        bar.set_postfix(step=f"{rel.max():.2e}")


def _caller_stacklevel() -> int:
    """The stack level of the first frame outside this package (the user's call)."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root):
        frame, level = frame.f_back, level + 1
    return level


def _warn_capped(max_iter: int, tol: float) -> None:
    warnings.warn(
        f"Propagation stopped at its iteration cap ({max_iter}) before reaching tol={tol:g}.",
        ConvergenceWarning,
        stacklevel=_caller_stacklevel(),
    )


def solve_symmetric(
    N: Operator,
    W: np.ndarray,
    scale: np.ndarray,
    *,
    damping: float,
    tol: float,
    max_iter: int,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Solve ``Y = W + a T Y`` with ``T = S^-1 N S`` by conjugate gradients.

    Parameters
    ----------
    N : Operator
        Symmetric, spectrum in [-1, 1] (a symmetrically normalised adjacency).
    W : ndarray of float32, shape (n, c)
        Seed weights, one column per category.
    scale : ndarray of float32, shape (n,)
        ``S`` (diagonal): ``Z = S Y`` is the symmetric unknown.

    Returns
    -------
    Y : ndarray of float32, shape (n, c)
    n_iter : int

    Notes
    -----
    Conjugate gradients on ``M Z = B`` with ``M = I - a N`` and ``B = S W``, one column
    per category with its own step sizes, started at ``Z = B``. An iteration is two
    passes over the rows, each on the operator's threads in row chunks:

    1. the sparse product ``N P``; right after each row of it (compiled loops) or each
       cache-sized chunk (scipy), ``Q = M P`` for those rows, in place, and the column
       sums ``P.Q``, ``R.Q`` and ``Q.Q``;
    2. ``Z += alpha P``, ``R -= alpha Q``, ``P = R + beta P``, with the sums for the
       stopping test and ``R.R`` and ``R.P`` for the next iteration.

    ``alpha = R.P / P.Q`` is the exact minimiser along ``P`` (it equals the textbook
    ``R.R / P.Q`` in exact arithmetic); ``beta = |R - alpha Q|^2 / R.R`` with the
    numerator expanded as ``R.R - 2 alpha R.Q + alpha^2 Q.Q`` from sums of pass 1, so
    that the direction update joins the solution update (textbook CG needs a third
    pass, after the new ``R.R`` is known). Rounding in that expansion, large relative to
    a residual that is nearly zero, can only make the next direction less conjugate:
    each step still minimises the error along its own direction, so the iteration
    cannot diverge.
    """
    a = np.float32(damping)
    s = scale[:, None].astype(np.float32)
    inv = (1.0 / scale)[:, None].astype(np.float32)
    n, c = W.shape
    Z = np.empty((n, c), dtype=np.float32)
    R = np.empty_like(Z)
    P = np.empty_like(Z)
    Q = np.empty_like(Z)  # N P, then M P = P - a N P
    colsum = _ColumnSums(N, c)
    tiny = np.finfo(np.float32).tiny
    seeded, up, down = _column_scale(W)

    def scaled_seeds(lo, hi):
        z = Z[lo:hi]
        np.multiply(W[lo:hi], s[lo:hi], out=z)
        z *= up

    def first_residual(lo, hi):
        # Z = B, so R = B - M Z = a N B.
        r = R[lo:hi]
        r *= a
        P[lo:hi] = r
        return (colsum(np.multiply(r, r, out=Q[lo:hi])),)

    def sums(lo, hi):
        q, p, r = Q[lo:hi], P[lo:hi], R[lo:hi]
        q *= -a
        q += p
        t = np.multiply(p, q)
        pq = colsum(t)
        rq = colsum(np.multiply(r, q, out=t))
        qq = colsum(np.multiply(q, q, out=t))
        return pq, rq, qq

    def update(lo, hi, alpha, beta):
        p, q, r, z, iv = P[lo:hi], Q[lo:hi], R[lo:hi], Z[lo:hi], inv[lo:hi]
        t = np.multiply(p, iv)
        step = colsum(np.abs(t, out=t))
        z += np.multiply(p, alpha, out=t)
        r -= np.multiply(q, alpha, out=t)
        np.multiply(z, iv, out=t)
        size = colsum(np.abs(t, out=t))
        rr = colsum(np.multiply(r, r, out=t))
        p *= beta
        p += r
        return step, size, rr, colsum(np.multiply(r, p, out=t))

    if N.backend == "compiled":
        # The same two steps as compiled loops: the epilogue runs row by row inside the
        # product, and the sums accumulate in float64.
        m = N.matrix

        def product_sums():
            def chunk(lo, hi):
                out = np.zeros(3 * c)
                _spmm.cg_product(m.indptr, m.indices, m.data, P, R, Q, lo, hi, c, a, out)
                return out[:c], out[c : 2 * c], out[2 * c :]

            return N.map_rows(chunk, c)

        def update(lo, hi, alpha, beta):  # noqa: F811 - the compiled form of update
            out = np.zeros(4 * c)
            _spmm.cg_update(P, Q, R, Z, inv, alpha, beta, lo, hi, c, out)
            return out[:c], out[c : 2 * c], out[2 * c : 3 * c], out[3 * c :]

    else:

        def product_sums():
            return N.matmul(P, out=Q, epilogue=sums)

    bar = _progress(progress, max_iter, "propagate (cg)")
    it = 0
    blas = _one_blas_thread(N)
    with blas:
        N.map_rows(scaled_seeds, c)
        if seeded.size * 16 <= n:
            # Few seed rows: N B = (N[seeded])^T B[seeded] (N is symmetric) costs their
            # edges only, instead of a product over the whole graph.
            R[...] = N.matrix[seeded].T @ Z[seeded]
            rr = _total(N.map_rows(first_residual, c), 0)
        else:
            rr = _total(N.matmul(Z, out=R, epilogue=first_residual), 0)
        rp = rr  # P = R
        converged = not np.any(rr > 0)
        try:
            while not converged and it < max_iter:
                it += 1
                parts = product_sums()
                pq, rq, qq = (_total(parts, k) for k in range(3))
                ok = pq > 0
                alpha = np.where(ok, rp / np.where(ok, pq, 1.0), 0.0)
                rr_next = np.maximum(rr - 2.0 * alpha * rq + alpha * alpha * qq, 0.0)
                live = rr > 0
                beta = np.where(live, rr_next / np.where(live, rr, 1.0), 0.0)
                a32, b32 = alpha.astype(np.float32), beta.astype(np.float32)
                parts = N.map_rows(lambda lo, hi, a32=a32, b32=b32: update(lo, hi, a32, b32), c)
                step = np.abs(alpha) * _total(parts, 0)
                size = _total(parts, 1)
                rr = _total(parts, 2)
                rp = _total(parts, 3)
                rel = step / np.maximum(size, tiny)
                converged = bool(np.all(rel <= tol))
                _tick(bar, rel)
        finally:
            if bar is not None:
                bar.close()

        def unscale(lo, hi):
            z = Z[lo:hi]
            np.multiply(z, inv[lo:hi], out=z)
            z *= down

        N.map_rows(unscale, c)
    if not converged:
        _warn_capped(max_iter, tol)
    return Z, it


def solve_power(
    T: Operator,
    W: np.ndarray,
    *,
    damping: float,
    tol: float,
    max_iter: int,
    progress: bool = False,
    start: np.ndarray | None = None,
    cap: int | None = None,
) -> tuple[np.ndarray, int]:
    """Solve ``Y = W + a T Y`` by power iteration started at ``Y = W`` (or ``start``).

    ``start`` (a float32 array shaped like ``W``, not ``W`` itself) is used as working
    memory; ``cap`` is the iteration cap named in the :class:`ConvergenceWarning` when it
    differs from ``max_iter`` (a caller that spent part of its budget elsewhere).

    Each product's epilogue forms ``a T Y + W`` and the column sums of the stopping
    test for the rows it just wrote (row by row in the compiled loops, per chunk with
    scipy).

    Returns
    -------
    Y : ndarray of float32, shape (n, c)
    n_iter : int
    """
    a = np.float32(damping)
    W = np.ascontiguousarray(W, dtype=np.float32)
    n, c = W.shape
    Y = W.copy() if start is None else start
    buf = np.empty_like(W)
    colsum = _ColumnSums(T, c)
    tiny = np.finfo(np.float32).tiny
    bar = _progress(progress, max_iter, "propagate (power)")
    it = 0
    converged = not np.any(W)

    def finish(lo, hi, new, old):
        y = new[lo:hi]
        y *= a
        y += W[lo:hi]
        t = np.subtract(y, old[lo:hi])
        change = colsum(np.abs(t, out=t))
        return change, colsum(np.abs(y, out=t))

    if T.backend == "compiled":
        m = T.matrix

        def step(old, new):
            def chunk(lo, hi):
                out = np.zeros(2 * c)
                _spmm.power_product(m.indptr, m.indices, m.data, old, W, new, lo, hi, c, a, out)
                return out[:c], out[c:]

            return T.map_rows(chunk, c)

    else:

        def step(old, new):
            return T.matmul(old, out=new, epilogue=lambda lo, hi: finish(lo, hi, new, old))

    blas = _one_blas_thread(T)
    with blas:
        try:
            while not converged and it < max_iter:
                it += 1
                parts = step(Y, buf)
                rel = _total(parts, 0) / np.maximum(_total(parts, 1), tiny)
                Y, buf = buf, Y
                converged = bool(np.all(rel <= tol))
                _tick(bar, rel)
        finally:
            if bar is not None:
                bar.close()
    if not converged:
        _warn_capped(max_iter if cap is None else cap, tol)
    return Y, it


def solve_bicgstab(
    T: Operator,
    W: np.ndarray,
    *,
    damping: float,
    tol: float,
    max_iter: int,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Solve ``(I - a T) Y = W`` by BiCGSTAB, one column per category, for any ``T``.

    For directed walks, where conjugate gradients do not apply. On the benchmark's
    directed 1M-node graph it reached an L1 error of 1.7e-5 in 14-16 sparse products
    where power iteration stopped at 4.8e-4 after 46 (both at ``tol=1e-4``).

    The shadow residual is the all-ones vector, so its dot products are column sums.
    (The textbook choice, the first residual ``a T W``, is zero outside the seeds'
    neighbours: on graphs without short cycles around the seeds it is orthogonal to the
    next residual and the recurrence breaks down at once.) An iteration is two products,
    each with an epilogue on the rows it just wrote, and two passes over the rows:
    ``V = A P`` (with ``sum V``); ``S = R - alpha V``; ``Tt = A S`` (with ``Tt.S``,
    ``Tt.Tt``, ``sum Tt``); then ``Y += alpha P + omega S``, ``R = S - omega Tt`` and
    ``P = R + beta (P - omega V)`` in one pass, where ``beta`` needs ``sum R`` of the new
    residual, expanded as ``sum R - alpha sum V - omega sum Tt`` from sums already known
    (the exact value, summed in that pass, starts the next iteration, so rounding does
    not accumulate). A column stops when both its last step and its residual are at
    most ``tol`` times its solution (L1), or when the half step already solved it
    (``S = 0``). Before the solve stops, one more product checks the true residual
    ``W - A Y``: in float32 the recursive residual can drift from it, and columns whose
    true residual exceeds ``max(10 tol, 1e-5)`` times their solution restart from it (at
    most three times). Should the recurrence break down in a live column (a zero or
    non-finite denominator), the solve continues by power iteration from the current
    iterate, which converges from any start, within what is left of ``max_iter``.

    Returns
    -------
    Y : ndarray of float32, shape (n, c)
    n_iter : int
        Sparse products used (at most ``max_iter``).
    """
    a = np.float32(damping)
    W = np.ascontiguousarray(W, dtype=np.float32)
    n, c = W.shape
    colsum = _ColumnSums(T, c)
    tiny = np.finfo(np.float32).tiny
    _, up, down = _column_scale(W)
    Ws = W * up
    Y = Ws.copy()
    R = np.empty_like(Ws)
    P = np.empty_like(Ws)
    V = np.empty_like(Ws)
    S = np.empty_like(Ws)
    Tt = np.empty_like(Ws)

    def first(lo, hi):  # Y = W, so R = W - A W = a T W
        r = R[lo:hi]
        r *= a
        P[lo:hi] = r
        return (colsum(r),)

    def after_v(lo, hi):  # V = P - a T P
        v = V[lo:hi]
        v *= -a
        v += P[lo:hi]
        return (colsum(v),)

    def pass_s(lo, hi, alpha):
        np.multiply(V[lo:hi], alpha, out=S[lo:hi])
        np.subtract(R[lo:hi], S[lo:hi], out=S[lo:hi])

    def after_t(lo, hi):  # Tt = S - a T S
        t = Tt[lo:hi]
        t *= -a
        sr = S[lo:hi]
        t += sr
        w = np.multiply(t, sr)
        ts = colsum(w)
        tt = colsum(np.multiply(t, t, out=w))
        return ts, tt, colsum(t)

    def true_residual(lo, hi):  # R = W - A Y, from R = T Y
        r, y = R[lo:hi], Y[lo:hi]
        r *= a
        r += Ws[lo:hi]
        r -= y
        w = np.abs(r)
        res = colsum(w)
        return res, colsum(np.abs(y, out=w)), colsum(r)

    def pass_c(lo, hi, alpha, omega, beta):
        p, v, sr, t, y, r = P[lo:hi], V[lo:hi], S[lo:hi], Tt[lo:hi], Y[lo:hi], R[lo:hi]
        step = np.multiply(p, alpha)
        w = np.multiply(sr, omega)
        step += w
        y += step
        size = colsum(np.abs(y, out=w))
        move = colsum(np.abs(step, out=step))
        np.multiply(t, omega, out=w)
        np.subtract(sr, w, out=r)
        res = colsum(np.abs(r, out=w))
        v *= omega
        np.subtract(p, v, out=p)
        p *= beta
        p += r
        return move, size, res, colsum(r)

    bar = _progress(progress, max_iter, "propagate (bicgstab)")
    products = 0
    broke = False
    blas = _one_blas_thread(T)
    with blas:
        rho = _total(T.matmul(Ws, out=R, epilogue=first), 0)
        products += 1
        live = rho != 0  # R >= 0 at the start: a zero sum is a zero residual
        res0, res = rho.copy(), rho.copy()  # |R|_1 at the start (R >= 0) and now
        restarts = 0
        try:
            while True:
                while live.any() and products + 2 <= max_iter:
                    rhv = _total(T.matmul(P, out=V, epilogue=after_v), 0)
                    products += 1
                    ok = (rhv != 0) & np.isfinite(rhv) & (rho != 0) & np.isfinite(rho)
                    if (live & ~ok).any():
                        broke = True
                        break
                    alpha = np.where(live, rho / np.where(ok, rhv, 1.0), 0.0)
                    a32 = alpha.astype(np.float32)
                    T.map_rows(lambda lo, hi, a32=a32: pass_s(lo, hi, a32), c)
                    parts = T.matmul(S, out=Tt, epilogue=after_t)
                    products += 1
                    ts, tt, rht = (_total(parts, k) for k in range(3))
                    # tt = 0: S = 0, the half step solved the column; Y += alpha P ends it.
                    solved = live & (tt == 0)
                    ok = np.isfinite(tt) & np.isfinite(ts) & ((tt > 0) | solved)
                    omega = np.where(live & ~solved & ok, ts / np.where(tt > 0, tt, 1.0), 0.0)
                    if (live & ~ok).any() or (live & ~solved & (omega == 0)).any():
                        broke = True
                        Y += a32 * P  # the half step still makes progress
                        break
                    rho_next = rho - alpha * rhv - omega * rht
                    den = np.where(live & ~solved, rho * omega, 1.0)
                    beta = np.where(live & ~solved, rho_next * alpha / den, 0.0)
                    o32, b32 = omega.astype(np.float32), beta.astype(np.float32)
                    parts = T.map_rows(
                        lambda lo, hi, a32=a32, o32=o32, b32=b32: pass_c(lo, hi, a32, o32, b32), c
                    )
                    move, size, res, rho = (_total(parts, k) for k in range(4))
                    if not (np.isfinite(move).all() and np.isfinite(res).all()):
                        broke = True
                        break
                    scale = np.maximum(size, tiny)
                    done = solved | ((move / scale <= tol) & (res / scale <= tol))
                    live &= ~done
                    if bar is not None:
                        bar.update(2)
                        bar.set_postfix(step=f"{(move / scale).max():.2e}")
                if broke or live.any() or products + 1 > max_iter:
                    break
                # The recursive residual can drift from the true one in float32: check
                # it with one more product, and restart the columns it fails from there.
                parts = T.matmul(Y, out=R, epilogue=true_residual)
                products += 1
                res, size, rho = (_total(parts, k) for k in range(3))
                bad = res > max(10.0 * tol, 1e-5) * np.maximum(size, tiny)
                if not bad.any():
                    break
                restarts += 1
                live = bad
                if restarts > 3 or (bad & (rho == 0)).any():
                    broke = True
                    break
                T.map_rows(lambda lo, hi: np.copyto(P[lo:hi], R[lo:hi]), c)
        finally:
            if bar is not None:
                bar.close()
    if broke or live.any():
        left = max_iter - products
        if not np.isfinite(Y).all():
            Y = Ws.copy()
        elif restarts == 0:
            # BiCGSTAB's residual is not monotone: a column stopped while its residual is
            # above its start goes back to the start (Y = W) before power iteration.
            worse = np.flatnonzero(live & ~(res <= res0))
            if worse.size:
                Y[:, worse] = Ws[:, worse]
        if left <= 0:
            _warn_capped(max_iter, tol)
        else:
            Y, more = solve_power(
                T,
                Ws,
                damping=damping,
                tol=tol,
                max_iter=left,
                progress=progress,
                start=Y,
                cap=max_iter,
            )
            products += more
    Y *= down
    return Y, products


def walk(T: Operator, W: np.ndarray, n_steps: int, *, progress: bool = False) -> np.ndarray:
    """Return ``T^n_steps W`` (a walk without restart, stopped early)."""
    Y = W.copy()
    buf = np.empty_like(W)
    bar = _progress(progress, n_steps, "propagate (early-stopped walk)")
    try:
        for _ in range(n_steps):
            T.matmul(Y, out=buf)
            Y, buf = buf, Y
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return Y
