"""Top-``N`` of each row's own candidate pool: the exact step of ANN retrieval.

An approximate index (:mod:`guardrails.retrieval`) proposes a pool of items per row;
:func:`pool_topk` drops what the plan does not allow and hands the rest to the kernel's
exact rescoring (:func:`~._exact.emit`). ``guardrails.core.kernel`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ._exact import (
    EMPTY_F32,
    EMPTY_F64,
    EPS32,
    PAD_ID,
    TopkCall,
    checked_backend,
    emit,
    lower,
    penalty_terms,
)
from .threads import default_num_threads, shared_pool

if TYPE_CHECKING:
    from .kernel import FactorSpace

__all__ = ["pool_topk"]


def pool_topk(
    space: FactorSpace,
    queries: np.ndarray,
    pool_ids: np.ndarray,
    N: int,
    *,
    pool_scores: np.ndarray | None = None,
    call_mask: np.ndarray | None = None,
    viewer_masks: Sequence[sp.csr_matrix] = (),
    viewer_penalties: Sequence[sp.csr_matrix] = (),
    score_dtype=np.float32,
    unique: bool = False,
    backend: str = "auto",
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``N`` eligible items of each row's own candidate pool (ANN retrieval).

    Every pooled item is scored exactly as :func:`~.kernel.guarded_topk` scores its candidates
    (same products, same penalties, same tie-break), so a pool that holds a row's exact
    top ``N`` gives that row exactly the exact path's slate. Items outside ``space``
    (globally hard-masked), in ``call_mask`` or masked for the viewer are dropped:
    nothing in a pool is trusted.

    With ``pool_scores`` (the index's float32 inner products of the raw factors) the
    pool is pruned before exact rescoring, by the kernel's argument: a score within
    ``delta`` of the exact one, the penalties added in float64, bounds the ``N``-th
    exact score, and only cells that can reach that bound are rescored
    (:func:`~._exact.lower`).

    Parameters
    ----------
    space : FactorSpace
        The eligible items of the plan variant.
    queries : ndarray of float32, shape (m, n_factors)
    pool_ids : ndarray of int64, shape (m, P)
        Global item indices per row; ``-1`` and repeats are ignored.
    N : int
    pool_scores : ndarray of float32, shape (m, P), optional
        Unpenalised inner products of the pooled items, any float32 summation order.
    call_mask, viewer_masks, viewer_penalties, score_dtype
        As for :func:`~.kernel.guarded_topk`.
    unique : bool
        The caller vouches that no row repeats an item (an index's result rows): the
        pool is then pruned as a dense ``(m, P)`` array, without deduplication. Same
        results.
    backend : {"auto", "compiled", "numpy"}
        The exact rescoring step: compiled (``guardrails.core._tile``) or numpy, as for
        :func:`~.kernel.guarded_topk`. Results are the same bit for bit.
    num_threads : int
        Worker threads for the compiled step (rows split in even chunks, each decided
        on its own rows only; 0: every core). The numpy step runs in the caller's thread.

    Returns
    -------
    ids, scores : ndarray, shape (m, N)
        As for :func:`~.kernel.guarded_topk`, padded where a pool has fewer than ``N`` eligible
        items.
    """
    compiled = checked_backend(backend, "pool_topk")
    m = queries.shape[0]
    ids = np.full((m, N), PAD_ID, dtype=np.int64)
    scores = np.full((m, N), -np.inf, dtype=score_dtype)
    if m == 0 or space.n_eligible == 0 or pool_ids.size == 0:
        return ids, scores
    qa = space.augment_queries(queries)
    call = TopkCall(space, qa, N, None, (), (), ids, scores, compiled)
    pens = [p for p in viewer_penalties if p is not None and p.nnz]
    masks = [v for v in viewer_masks if v is not None and v.nnz]
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    if pool_scores is not None:
        # float32 on both steps (the bound is float32's), whatever the caller passed
        pool_scores = np.asarray(pool_scores, dtype=np.float32)
    dense = unique and pool_scores is not None

    def run(lo: int, hi: int) -> None:
        _, lookup, _, _ = penalty_terms(space, lo, hi, pens, space.width * space.n_blocks)
        args = (
            space,
            queries[lo:hi],
            pool_ids[lo:hi],
            None if pool_scores is None else pool_scores[lo:hi],
            call_mask,
            [v[lo:hi] for v in masks],
            N,
            lookup,
        )
        if dense:
            rows, cols = _pool_dense(*args) if compiled is None else _pool_compiled(compiled, *args)
        else:
            rows, cols = _pool_cells(*args)
        # The cells left are unmasked, their penalties in ``lookup``: emit rescores them.
        emit(call, lo, hi, rows, cols, None, False, lookup)

    threads = default_num_threads() if num_threads <= 0 else num_threads
    parts = min(threads, m // _MIN_CHUNK_ROWS) if compiled is not None and dense else 1
    if parts <= 1:
        run(0, m)
        return ids, scores
    # Chunks share nothing but the outputs' disjoint rows; the compiled step releases
    # the GIL, so they run side by side.
    cuts = np.linspace(0, m, parts + 1).astype(int).tolist()
    futures = [shared_pool(threads).submit(run, cuts[k], cuts[k + 1]) for k in range(parts)]
    for f in futures:
        f.result()
    return ids, scores


# Rows per chunk below which the pool step runs in one piece.
_MIN_CHUNK_ROWS = 256


def _pool_cells(space, queries, pool_ids, pool_scores, call_mask, viewer_masks, N, lookup):
    """The ``(rows, cols)`` cells of the pool that can enter a slate, one per (row, item)."""
    m = queries.shape[0]
    n_pad = space.width * space.n_blocks
    rows = np.repeat(np.arange(m, dtype=np.int64), pool_ids.shape[1])
    ok, cols = _eligible(space, pool_ids.reshape(-1), call_mask)
    rows, cols = rows[ok], cols[ok]
    approx = None if pool_scores is None else np.asarray(pool_scores).reshape(-1)[ok]
    hit = _viewer_masked(viewer_masks, m, rows, pool_ids.reshape(-1)[ok])
    rows, cols = rows[~hit], cols[~hit]
    approx = None if approx is None else approx[~hit]
    # One cell per (row, item), whatever the pool repeats (before counting N of them).
    keys, first = np.unique(rows * n_pad + cols, return_index=True)
    rows, cols = keys // n_pad, keys % n_pad
    if approx is None or not rows.size:
        return rows, cols
    a = _penalised(space, approx[first], rows, cols, lookup)
    # N-th largest finite approximate score per row; fewer than N keeps the row whole.
    fin = np.isfinite(a)
    order = np.lexsort((-np.where(fin, a, -np.inf), rows))
    r_sorted = rows[order]
    rank = np.arange(order.size) - np.searchsorted(r_sorted, r_sorted)
    t = np.full(m, -np.inf)
    at_n = rank == N - 1
    t[r_sorted[at_n]] = a[order[at_n]]
    t[~np.isfinite(t)] = -np.inf
    keep = ~fin | (a >= _pool_lower(space, queries, t)[rows])
    return rows[keep], cols[keep]


def _pool_dense(space, queries, pool_ids, pool_scores, call_mask, viewer_masks, N, lookup):
    """:func:`_pool_cells` on rows without repeats: the same cells, pruned as dense arrays."""
    m, P = pool_ids.shape
    ok, cols = _eligible(space, pool_ids, call_mask)
    at = np.flatnonzero(ok)
    r_at = at // P  # each eligible cell's row
    if any(csr is not None and csr.nnz for csr in viewer_masks):
        hit = _viewer_masked(viewer_masks, m, r_at, pool_ids.reshape(-1)[at])
        ok.reshape(-1)[at[hit]] = False
        at, r_at = at[~hit], r_at[~hit]
    a = np.zeros((m, P))
    a.reshape(-1)[at] = _penalised(
        space, np.asarray(pool_scores).reshape(-1)[at], r_at, cols.reshape(-1)[at], lookup
    )
    # As _pool_cells: the N-th largest finite approximate score of the eligible cells.
    fin = ok & np.isfinite(a)
    t = np.full(m, -np.inf)
    if P >= N:
        t = np.partition(np.where(fin, a, -np.inf), P - N, axis=1)[:, P - N]
        t[~np.isfinite(t)] = -np.inf
    thr = _pool_lower(space, queries, t)
    with np.errstate(invalid="ignore"):
        keep = ok & (~fin | (a >= thr[:, None]))
    r, c = np.nonzero(keep)
    return r, cols[r, c]


def _pool_compiled(
    compiled, space, queries, pool_ids, pool_scores, call_mask, viewer_masks, N, lookup
):
    """:func:`_pool_dense` in the compiled step (``pool_masked``, ``pool_prune``): the same
    cells, in the same order, in one pass over the pool."""
    m, P = pool_ids.shape
    ids = np.ascontiguousarray(pool_ids, dtype=np.int64)
    approx = np.ascontiguousarray(pool_scores, dtype=np.float32)
    n_items = space.pos.shape[0]
    banned = _NO_BOOL
    if call_mask is not None and np.size(call_mask):
        banned = np.zeros(n_items, dtype=bool)
        banned[call_mask] = True
    hit = _NO_BOOL
    for csr in viewer_masks:
        if csr is not None and csr.nnz:
            hit = np.zeros((m, P), dtype=bool) if hit is _NO_BOOL else hit
            compiled.pool_masked(ids, csr.indptr[: m + 1], csr.indices, hit)
    pen = EMPTY_F64
    if lookup is not None:
        rows = np.repeat(np.arange(m, dtype=np.int64), P)
        cols = space.pos[np.clip(ids.reshape(-1), 0, n_items - 1)]
        pen = np.ascontiguousarray(lookup.get(rows, cols), dtype=np.float64)
    neg = EMPTY_F32 if space.neg_penalty is None else space.neg_penalty
    out_rows = np.empty(m * P, dtype=np.int64)
    out_cols = np.empty(m * P, dtype=np.int64)
    count = compiled.pool_prune(
        ids,
        approx,
        space.pos,
        neg,
        banned,
        hit,
        pen,
        _pool_delta(space, queries),
        _REL,
        N,
        out_rows,
        out_cols,
    )
    return out_rows[:count], out_cols[:count]


# The compiled step's "none" for an optional bool buffer.
_NO_BOOL = np.zeros(0, dtype=bool)


def _eligible(space, g: np.ndarray, call_mask) -> tuple[np.ndarray, np.ndarray]:
    """``(ok, cols)`` for global item indices ``g`` (any shape): whether each is a valid id
    of an item in the space and not masked for the call, and its compact column
    (meaningless where not ``ok``)."""
    n_items = space.pos.shape[0]
    ok = (g >= 0) & (g < n_items)
    g = np.where(ok, g, 0)
    cols = space.pos[g]
    ok &= cols >= 0
    if call_mask is not None and np.size(call_mask):
        banned = np.zeros(n_items, dtype=bool)
        banned[call_mask] = True
        ok &= ~banned[g]
    return ok, cols


def _viewer_masked(viewer_masks, m: int, rows, g) -> np.ndarray:
    """Whether each cell ``(rows, g)`` is masked for its viewer: ``g`` are global item
    indices of items in the space, ``rows`` the viewers' rows (``< m``).

    Each cell is looked up among its own viewer's mask cells (a stored entry masks,
    whatever its value, as in :func:`~.kernel.guarded_topk`), through a table hashed on
    ``(row, item)``: a cell whose slot no mask cell set is unmasked; the few others
    (masked cells and hash collisions) are checked exactly against the sorted mask keys.
    """
    hit = np.zeros(np.shape(rows)[0], dtype=bool)
    cells: dict[int, np.ndarray] = {}  # the cells' keys, per mask width (one in practice)
    for csr in viewer_masks:
        if csr is None or not csr.nnz:
            continue
        n_items = csr.shape[1]
        keys = _row_keys(csr, m, n_items)
        if keys.size:
            if n_items not in cells:
                cells[n_items] = rows * n_items + g
            hit |= _in_sorted(keys, cells[n_items], _table_bits(keys.size))
    return hit


# A table of about 32 slots per mask cell: about 3% of unmasked cells collide and take
# the exact check. At most 2**24 one-byte slots (16 MiB), however many cells a mask has.
_SLOTS_PER_KEY = 32
_MAX_TABLE_BITS = 24
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _table_bits(n_keys: int) -> int:
    return int(min(_MAX_TABLE_BITS, max(10, int(n_keys * _SLOTS_PER_KEY).bit_length())))


def _row_keys(csr: sp.csr_matrix, m: int, n_items: int) -> np.ndarray:
    """Sorted ``row * n_items + col`` keys of the stored cells of ``csr``'s first ``m`` rows."""
    ip = np.asarray(csr.indptr[: m + 1], dtype=np.int64)
    counts = np.diff(ip)
    keys = np.repeat(np.arange(m, dtype=np.int64) * n_items, counts)
    keys += csr.indices[ip[0] : ip[-1]]
    if keys.size > 1 and not (keys[1:] >= keys[:-1]).all():
        keys.sort()  # columns unsorted within some row
    return keys


def _in_sorted(keys: np.ndarray, q: np.ndarray, bits: int) -> np.ndarray:
    """Whether each of the non-negative keys ``q`` is among the sorted ``keys``: a hashed
    table of ``2**bits`` slots rules most out, a binary search decides the rest. Exact
    for any ``bits`` (a small table only sends more keys to the binary search)."""
    shift = np.uint64(64 - bits)
    table = np.zeros(1 << bits, dtype=bool)
    with np.errstate(over="ignore"):
        table[(keys.view(np.uint64) * _GOLDEN) >> shift] = True
        cand = np.flatnonzero(
            table[(np.ascontiguousarray(q, dtype=np.int64).view(np.uint64) * _GOLDEN) >> shift]
        )
    out = np.zeros(q.shape[0], dtype=bool)
    if cand.size:
        sub = q[cand]
        at = np.minimum(np.searchsorted(keys, sub), keys.size - 1)
        out[cand] = keys[at] == sub
    return out


def _penalised(space, approx, rows, cols, lookup) -> np.ndarray:
    """The pool's approximate scores of cells ``(rows, cols)`` with every penalty, float64."""
    a = np.asarray(approx, dtype=np.float64).copy()
    if space.neg_penalty is not None:
        a += space.neg_penalty[cols]
    if lookup is not None:
        a -= lookup.get(rows, cols)
    return a


def _pool_lower(space, queries, t: np.ndarray) -> np.ndarray:
    """Pruning thresholds from each row's ``N``-th approximate score ``t``.

    The pool's float32 inner products of the raw factors are within
    ``gamma |q| max|v|`` of the exact ones; the penalties are added in float64
    (rounding relative to the result, far below ``4 eps``).
    """
    return lower(t, _pool_delta(space, queries), np.full(t.shape[0], _REL))


# The relative part of the bound: the penalties' float64 rounding, far below it.
_REL: float = 4.0 * EPS32


def _pool_delta(space, queries) -> np.ndarray:
    """Each row's absolute bound ``gamma |q| max|v|`` on the pool's float32 inner products."""
    d = space.item_rows.shape[1]
    qn = np.sqrt((np.asarray(queries, dtype=np.float64)[:, :d] ** 2).sum(axis=1))
    return 4.0 * (d + 3) * EPS32 * qn * space.raw_norm_max + 1e-30
