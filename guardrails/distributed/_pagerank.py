"""Personalised PageRank over a row-partitioned graph with ``dask.array``.

The graph is a sparse matrix ``A`` of shape ``(n, n)`` whose row ``i`` holds the
out-edges of node ``i`` (``A[i, j] > 0``: a walk at ``i`` moves to ``j`` with probability
``A[i, j] / sum_j A[i, j]``). It is stored as a ``dask.array`` of scipy CSR row blocks, so
that no machine ever holds all the edges: the client never needs them either when the
blocks are loaded by tasks on the workers.

Each iteration is the "push" form of power iteration::

    r' = (1 - d) s + d (A^T (r / out_degree) + (mass of r on dangling nodes) s)

Block ``b`` holds rows ``R_b`` of ``A`` and the matching slice ``r[R_b]`` of the current
vector, and pushes its mass along its own edges: ``A[R_b]^T (r[R_b] / deg[R_b])``, a
dense vector of length ``n``. The partial vectors are summed by a tree reduction, and
only the L1 change (one number) comes back to the client each iteration; the vector
itself stays on the workers between iterations. Per task, memory is one block of edges
plus two vectors of length ``n``; the edges, which dominate (``nnz >> n``), are
partitioned. Dangling nodes (no out-edges) send their mass back to the seeds, so the
result sums to 1 and matches ``networkx.pagerank(G, alpha=d, personalization=s)``.

Why this is not :func:`guardrails.expand.propagate`, the library's one risk propagation:
the two answer different questions on different scales, and this one exists for graphs
that do not fit in one process.

- *Scale.* This is a probability distribution over nodes (walks restart at the seeds,
  the vector sums to 1), the quantity other PageRank tools report. ``propagate`` returns
  risk, the expected number of seed visits of a walk from each node (``normalization=
  "degree"``), clipped to [0, 1], so a seed has risk 1 whatever the number of seeds.
  Without dangling nodes, ``RiskGraph(A, direction="out", normalization="none",
  damping=d).propagate(seeds, weights=s, raw=True)`` equals this result divided by
  ``1 - d`` (both are ``sum_k d^k (A^T D^-1)^k s``; ``tests/test_propagation_scales.py``
  checks it); with dangling nodes, this one sends their mass back to the seeds and
  ``propagate`` lets walks stop.
- *Partitioning.* ``propagate`` solves on one in-memory operator with CG or BiCGSTAB,
  which need every row at every step; a per-block call cannot reproduce it. Here each
  block pushes its own edges and only a length-``n`` vector is reduced, so no task holds
  more than one block of edges.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp

from .._validation import check_float, check_int, fail
from ..exceptions import GuardrailsWarning, ValidationError
from ._deps import require_dask, resolve_client

__all__ = ["personalized_pagerank"]

_WHERE = "personalized_pagerank"
_CHECK_EVERY = 5


def _out_degree(block) -> np.ndarray:
    return np.asarray(sp.csr_matrix(block).sum(axis=1), dtype=np.float64).ravel()


def _push(block, r_block: np.ndarray, deg_block: np.ndarray) -> np.ndarray:
    """The mass a row block sends along its edges, and (last entry) its dangling mass.

    Returns ``[block^T (r_block / deg_block), sum(r_block[deg_block == 0])]``, a vector of
    length ``n + 1``, so one tree reduction sums both.
    """
    csr = sp.csr_matrix(block)
    w = np.divide(r_block, deg_block, out=np.zeros_like(r_block), where=deg_block > 0)
    out = np.empty(csr.shape[1] + 1, dtype=np.float64)
    out[:-1] = csr.T @ w
    out[-1] = r_block[deg_block == 0].sum()
    return out


def _check_block(block, n: int):
    csr = sp.csr_matrix(block)
    if csr.shape[1] != n:
        raise ValidationError(
            f"The 'adjacency' parameter of {_WHERE} must be row blocks of {n} columns. "
            f"Got a block of shape {csr.shape} instead."
        )
    if csr.nnz and (not np.isfinite(csr.data).all() or csr.data.min() < 0):
        raise ValidationError(
            f"The 'adjacency' parameter of {_WHERE} must have finite, non-negative edge weights. "
            "Got a block with negative or non-finite weights instead."
        )
    return csr


def personalized_pagerank(
    adjacency,
    seeds,
    *,
    damping: float = 0.85,
    tol: float = 1e-6,
    max_iter: int = 200,
    block_rows: int | None = None,
    client=None,
) -> np.ndarray:
    """Personalised PageRank from seed nodes, over a graph partitioned by rows on Dask.

    Parameters
    ----------
    adjacency : scipy sparse matrix or dask.array.Array, shape (n, n)
        Edge weights, row ``i`` holding the out-edges of ``i`` (non-negative, finite). A
        ``dask.array`` must be chunked by rows only (one chunk across the columns), each
        chunk a scipy sparse matrix; build it from loaders that run on the workers (for
        example ``da.from_delayed``) so that the client never holds the graph. A scipy
        matrix is cut into ``block_rows`` row blocks on the client.
    seeds : array-like of float, shape (n,)
        Non-negative seed weights (flagged accounts' risk), normalised to sum 1.
    damping : float, keyword-only
        Probability of following an edge rather than jumping back to the seeds, in [0, 1).
    tol : float, keyword-only
        Stop when the L1 change of the vector in one iteration is at most ``tol``.
    max_iter : int, keyword-only
        Iteration cap; reaching it before ``tol`` issues a :class:`GuardrailsWarning`.
    block_rows : int, optional, keyword-only
        Rows per block for a scipy ``adjacency`` (default: one block per worker thread).
    client : distributed.Client, optional, keyword-only
        The cluster; the default client when omitted.

    Returns
    -------
    ndarray of float64, shape (n,)
        The stationary distribution of the walk with restart at the seeds (sums to 1).

    Raises
    ------
    MissingDependencyError
        Dask is not installed (``pip install 'recsys-guardrails[dask]'``).
    ValidationError
        Bad arguments: a non-square graph, negative weights, seeds of the wrong length or
        with no positive weight.
    """
    mods = require_dask("personalized_pagerank")
    distributed = mods["distributed"]
    import dask
    import dask.array as da

    damping = check_float(damping, "damping", _WHERE, low=0.0, high=1.0)
    if damping >= 1.0:
        raise fail("damping", _WHERE, "a finite float in [0.0, 1.0)", damping)
    tol = check_float(tol, "tol", _WHERE, low=0.0, low_open=True)
    max_iter = check_int(max_iter, "max_iter", _WHERE)
    client = resolve_client(distributed, client, _WHERE)

    if isinstance(adjacency, da.Array):
        if (
            adjacency.ndim != 2
            or adjacency.shape[0] != adjacency.shape[1]
            or len(adjacency.chunks[1]) != 1
        ):
            raise fail(
                "adjacency",
                _WHERE,
                "a square dask array chunked by rows only (one chunk across the columns)",
                f"a dask array of shape {adjacency.shape} with chunks {adjacency.chunks}",
                describe=False,
            )
        n = int(adjacency.shape[0])
        row_chunks = adjacency.chunks[0]
        blocks = [dask.delayed(_check_block)(b, n) for b in adjacency.to_delayed().ravel()]
    elif sp.issparse(adjacency):
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise fail("adjacency", _WHERE, "a square sparse matrix", adjacency)
        n = int(adjacency.shape[0])
        csr = sp.csr_matrix(adjacency)
        if block_rows is None:
            n_threads = sum(
                w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()
            )
            step = max(1, -(-n // max(1, n_threads)))
        else:
            step = check_int(block_rows, "block_rows", _WHERE)
        bounds = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
        row_chunks = tuple(hi - lo for lo, hi in bounds)
        blocks = [dask.delayed(_check_block)(csr[lo:hi], n) for lo, hi in bounds]
    else:
        raise fail(
            "adjacency",
            _WHERE,
            "a scipy sparse matrix or a dask array of sparse row blocks",
            adjacency,
        )

    if isinstance(seeds, numbers.Number) or np.ndim(seeds) != 1:
        raise fail("seeds", _WHERE, f"a 1-d array of {n} non-negative floats", seeds)
    s = np.asarray(seeds, dtype=np.float64)
    if s.shape != (n,) or not np.isfinite(s).all() or (s.size and s.min() < 0) or s.sum() <= 0:
        raise fail(
            "seeds",
            _WHERE,
            f"a 1-d array of {n} finite non-negative floats with a positive sum",
            seeds,
        )
    s = s / s.sum()
    if n == 0:
        return s

    # The edges stay on the workers, once, for every iteration.
    blocks = client.persist(blocks)
    deg_parts = [
        da.from_delayed(dask.delayed(_out_degree)(b), shape=(rows,), dtype=np.float64)
        for b, rows in zip(blocks, row_chunks, strict=True)
    ]
    deg = client.persist(da.concatenate(deg_parts))
    s_d = da.from_array(s, chunks=(row_chunks,))
    r = client.persist(s_d)
    converged = False
    done = 0
    while done < max_iter and not converged:
        # A few iterations are queued before the client waits for their changes, so the
        # scheduler is never idle waiting for the client.
        queued = []
        for _ in range(min(_CHECK_EVERY, max_iter - done)):
            partials = [
                da.from_delayed(dask.delayed(_push)(b, rb, db), shape=(n + 1,), dtype=np.float64)
                for b, rb, db in zip(
                    blocks, r.to_delayed().ravel(), deg.to_delayed().ravel(), strict=True
                )
            ]
            total = da.stack(partials).sum(axis=0)
            pushed, lost = total[:n].rechunk((row_chunks,)), total[n]
            r_new = client.persist((1.0 - damping) * s_d + damping * (pushed + lost * s_d))
            queued.append((r_new, client.compute(abs(r_new - r).sum())))
            r = r_new
        changes = client.gather([c for _, c in queued])
        for (r_i, _), change in zip(queued, changes, strict=True):
            done += 1
            if float(change) <= tol:
                r, converged = r_i, True
                break
    if not converged:
        warnings.warn(
            f"personalized_pagerank reached max_iter={max_iter} before tol={tol}.",
            GuardrailsWarning,
            stacklevel=2,
        )
    return np.asarray(client.compute(r).result(), dtype=np.float64)
