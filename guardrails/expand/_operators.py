"""Sparse operators for the propagation solvers: one float32 CSR matrix, threaded.

An :class:`Operator` holds one float32 CSR matrix split into row blocks of about equal
non-zeros, one thread per block, each block walked in row chunks;
:meth:`Operator.matmul` multiplies it by a dense block of columns and can run an
epilogue on each chunk right after the chunk is written. The products are the compiled
loops of ``guardrails.expand._spmm`` (built with the package where a C compiler was
available; see that file for why) or scipy's; both release the GIL, so the blocks run in
parallel. :class:`TransposeOperator` applies ``(diag(scale) A)^T`` from ``A``'s own rows,
for a graph used once. Arrays only; the solvers are in ``_engine``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..core.threads import default_num_threads, shared_pool

__all__ = [
    "BACKENDS",
    "Operator",
    "TransposeOperator",
    "compiled_available",
    "transpose_scaled",
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
        matrix = _same_index_dtype(sp.csr_matrix(matrix, dtype=np.float32))
        self.matrix = matrix
        self.shape = matrix.shape
        self.nnz = int(matrix.nnz)
        self.backend = "scipy" if backend == "scipy" or _spmm is None else "compiled"
        # Row ranges of about equal non-zeros, one per thread.
        self.bounds = _row_blocks(matrix, num_threads, min_parallel_nnz)
        self.num_threads = max(1, len(self.bounds))
        self.chunk_values = max(1, int(chunk_values))
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

        results = _on_threads(self.plan(c), run)
        return out if epilogue is None else results

    def map_rows(self, fn, n_columns: int) -> list:
        """Call ``fn(lo, hi)`` over the row chunks of :meth:`plan`, on the threads."""
        return _on_threads(self.plan(n_columns), lambda ch: [fn(lo, hi) for lo, hi, _ in ch])


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
        m = _same_index_dtype(matrix, copy=True)
        self.matrix = m
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.shape = (m.shape[1], m.shape[0])
        self.nnz = int(m.nnz)
        self.backend = "scatter"
        self.blocks = _row_blocks(m, num_threads, min_parallel_nnz)
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
        # Chunks are dealt round-robin to the threads: results back in row order, as
        # Operator.map_rows returns them.
        out = _on_threads(self.plan(n_columns), lambda ch: [(lo, fn(lo, hi)) for lo, hi, _ in ch])
        return [r for _, r in sorted(out, key=lambda t: t[0])]

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


def _same_index_dtype(m: sp.csr_matrix, copy: bool = False) -> sp.csr_matrix:
    """``m`` with ``indptr`` and ``indices`` of one integer type (the compiled loops take
    one); with ``copy``, a new matrix object, leaving the caller's untouched."""
    if m.indptr.dtype == m.indices.dtype:
        return m
    dtype = np.promote_types(m.indptr.dtype, m.indices.dtype)
    if copy:
        return sp.csr_matrix(
            (m.data, m.indices.astype(dtype), m.indptr.astype(dtype)), shape=m.shape, copy=False
        )
    m.indptr = m.indptr.astype(dtype)
    m.indices = m.indices.astype(dtype)
    return m


def _row_blocks(m: sp.csr_matrix, num_threads: int, min_parallel_nnz: int) -> list:
    """Row ranges ``(lo, hi)`` of about equal non-zeros, one per thread (one range for a
    matrix under ``min_parallel_nnz`` non-zeros: not worth a thread hand-off)."""
    threads = default_num_threads() if num_threads <= 0 else int(num_threads)
    n, nnz = m.shape[0], int(m.nnz)
    if nnz < min_parallel_nnz:
        threads = 1
    if threads == 1 or n == 0:
        cuts = [0, n]
    else:
        inner = np.searchsorted(m.indptr, np.linspace(0, nnz, threads + 1)[1:-1])
        cuts = [0, *np.unique(inner).tolist(), n]
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]


def _on_threads(plan: list, run) -> list:
    """``run(chunks)`` for each thread's list of chunks, on the shared pool (on the
    calling thread when there is one list), and the concatenated results in plan order."""
    if len(plan) <= 1:  # one thread, or no rows at all
        return run(plan[0]) if plan else []
    pool = shared_pool(len(plan))
    futures = [pool.submit(run, chunks) for chunks in plan]
    return [r for f in futures for r in f.result()]
