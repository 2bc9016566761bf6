"""The propagation engine: a prepared sparse operator and two solvers.

Everything here is arrays only. A :class:`Operator` holds one float32 CSR matrix split
into row blocks of about equal non-zeros; :meth:`Operator.matmul` multiplies it by a
dense block of columns with one thread per row block (scipy's sparse products release
the GIL, so the blocks run in parallel).

The solvers compute ``Y = sum_k a^k T^k W`` (the solution of ``(I - a T) Y = W``) for a
block ``W`` of seed columns:

- :func:`solve_symmetric` for ``T = D^(-s/2) N D^(s/2)`` with ``N`` symmetric (an
  undirected graph, ``N = D^-1/2 A D^-1/2``): conjugate gradients on the symmetric
  positive definite system ``(I - a N) Z = D^(s/2) W``, one column per seed category,
  with per-column step sizes. CG adapts to the spectrum of the graph; on the power-law
  graphs of the benchmark it needs about three quarters of the products of power
  iteration for the same error (9 against 11-12 for an L1 error of 1e-4).
- :func:`solve_power` for any ``T``: power (Jacobi) iteration started at ``W``.

Both stop when the L1 size of the last update of every column, in output space, is at
most ``tol`` times the L1 norm of that column's current solution (a relative change).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from ..core.kernel import _pool, default_num_threads
from ..exceptions import ConvergenceWarning

__all__ = ["Operator", "solve_symmetric", "solve_power", "walk", "ConvergenceWarning"]


class Operator:
    """A float32 CSR matrix split into row blocks for threaded products.

    Parameters
    ----------
    matrix : csr_matrix, shape (n, n)
        Canonical CSR; converted to float32.
    num_threads : int
        Row blocks (and threads) used by :meth:`matmul`; 0 uses every available core.
    """

    def __init__(self, matrix: sp.csr_matrix, *, num_threads: int = 0):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self.shape = matrix.shape
        self.nnz = int(matrix.nnz)
        threads = default_num_threads() if num_threads <= 0 else int(num_threads)
        # Small products are not worth a thread hand-off.
        if self.nnz < 200_000:
            threads = 1
        self.num_threads = threads
        if threads == 1:
            self.blocks = [(0, matrix.shape[0], matrix)]
        else:
            cuts = np.searchsorted(matrix.indptr, np.linspace(0, self.nnz, threads + 1)[1:-1])
            bounds = [0, *np.unique(cuts).tolist(), matrix.shape[0]]
            self.blocks = [
                (lo, hi, matrix[lo:hi])
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
                if hi > lo
            ]

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``matrix @ X`` as float32; ``X`` has shape (n,) or (n, c)."""
        if out is None:
            out = np.empty((self.shape[0], *X.shape[1:]), dtype=np.float32)
        if X.ndim == 2 and X.shape[1] == 1:
            # scipy's single-vector product is faster than its multi-vector one.
            self.matmul(X[:, 0], out=out[:, 0])
            return out
        if len(self.blocks) == 1:
            out[...] = self.blocks[0][2] @ X
            return out

        def part(block):
            lo, hi, m = block
            out[lo:hi] = m @ X

        futures = [_pool(len(self.blocks)).submit(part, b) for b in self.blocks]
        for f in futures:
            f.result()
        return out


def _row_chunks(n: int, c: int) -> list[tuple[int, int]]:
    """Row ranges of about 256 KiB of one ``(n, c)`` float32 array each."""
    rows = max(1024, (1 << 16) // max(1, c))
    return [(lo, min(n, lo + rows)) for lo in range(0, n, rows)]


def _colsum_abs(X: np.ndarray) -> np.ndarray:
    return np.abs(X).sum(axis=0, dtype=np.float64)


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


def _warn_capped(max_iter: int, tol: float) -> None:
    # stacklevel 4: this helper, the solver, the propagate call, then the user's call.
    warnings.warn(
        f"Propagation stopped at its iteration cap ({max_iter}) before reaching tol={tol:g}.",
        ConvergenceWarning,
        stacklevel=4,
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
    """
    a = np.float32(damping)
    s = scale[:, None].astype(np.float32)
    inv = (1.0 / scale)[:, None].astype(np.float32)
    n, c = W.shape
    B = W * s
    Z = B.copy()  # warm start at Y = W, the first term of the series
    NP = N.matmul(Z)
    R = a * NP  # B - (Z - a N Z) with Z = B
    P = R.copy()
    rr = (R * R).sum(axis=0, dtype=np.float64)
    tiny = np.finfo(np.float32).tiny
    # The dense vector updates of an iteration run fused over row chunks that stay in
    # cache, on the operator's threads: with several categories they otherwise cost more
    # than the sparse product itself (a dozen passes over n x c arrays, with temporaries).
    chunks = _row_chunks(n, c)
    threads = max(1, min(N.num_threads, len(chunks)))
    groups = [chunks[i::threads] for i in range(threads)]

    def run_group(fn, group):
        return [fn(lo, hi) for lo, hi in group]

    def par(fn):
        if threads == 1:
            return run_group(fn, chunks)
        pool = _pool(threads)
        futures = [pool.submit(run_group, fn, g) for g in groups]
        return [x for f in futures for x in f.result()]

    def dot_pmp(lo, hi):
        mp = P[lo:hi] - a * NP[lo:hi]
        return (P[lo:hi] * mp).sum(axis=0, dtype=np.float64)

    def update(lo, hi, alpha):
        p, iv = P[lo:hi], inv[lo:hi]
        mp = p - a * NP[lo:hi]
        z = Z[lo:hi]
        z += alpha * p
        r = R[lo:hi]
        r -= alpha * mp
        step = np.abs(p * iv).sum(axis=0, dtype=np.float64)
        size = np.abs(z * iv).sum(axis=0, dtype=np.float64)
        return step, size, (r * r).sum(axis=0, dtype=np.float64)

    def direction(lo, hi, beta):
        p = P[lo:hi]
        p *= beta
        p += R[lo:hi]

    bar = _progress(progress, max_iter, "propagate (cg)")
    it = 0
    converged = not np.any(rr > 0)
    try:
        while not converged and it < max_iter:
            it += 1
            N.matmul(P, out=NP)
            pmp = np.sum(par(dot_pmp), axis=0)
            ok = pmp > 0
            alpha = np.where(ok, rr / np.where(ok, pmp, 1.0), 0.0).astype(np.float32)
            sums = par(lambda lo, hi, alpha=alpha: update(lo, hi, alpha))
            step = np.abs(alpha).astype(np.float64) * np.sum([x[0] for x in sums], axis=0)
            size = np.sum([x[1] for x in sums], axis=0)
            rr_new = np.sum([x[2] for x in sums], axis=0)
            rel = step / np.maximum(size, tiny)
            converged = bool(np.all(rel <= tol))
            beta = np.where(rr > 0, rr_new / np.where(rr > 0, rr, 1.0), 0.0).astype(np.float32)
            par(lambda lo, hi, beta=beta: direction(lo, hi, beta))
            rr = rr_new
            _tick(bar, rel)
    finally:
        if bar is not None:
            bar.close()
    if not converged:
        _warn_capped(max_iter, tol)
    return Z * inv, it


def solve_power(
    T: Operator,
    W: np.ndarray,
    *,
    damping: float,
    tol: float,
    max_iter: int,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Solve ``Y = W + a T Y`` by power iteration started at ``Y = W``.

    Returns
    -------
    Y : ndarray of float32, shape (n, c)
    n_iter : int
    """
    a = np.float32(damping)
    Y = W.copy()
    tiny = np.finfo(np.float32).tiny
    bar = _progress(progress, max_iter, "propagate (power)")
    it = 0
    converged = not np.any(W)
    buf = np.empty_like(W)
    try:
        while not converged and it < max_iter:
            it += 1
            T.matmul(Y, out=buf)
            buf *= a
            buf += W
            rel = _colsum_abs(buf - Y) / np.maximum(_colsum_abs(buf), tiny)
            Y, buf = buf, Y
            converged = bool(np.all(rel <= tol))
            _tick(bar, rel)
    finally:
        if bar is not None:
            bar.close()
    if not converged:
        _warn_capped(max_iter, tol)
    return Y, it


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
