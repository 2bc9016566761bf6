"""The kernel's fused, pruned path: item tiles by decreasing norm, skipped when they cannot win.

For a factor space of several cache-sized tiles, :func:`guardrails.core.kernel.guarded_topk`
scores, masks, penalises and prunes a chunk one tile of items at a time
(:func:`run_chunk_tiled`), largest item norms first (:class:`PruneIndex`); each tile is
reduced to its candidates and discarded, so the ``block_rows x n_eligible`` score matrix is
never written; and a tile is skipped for the rows whose Cauchy-Schwarz bound
``|u| * max|v|`` (plus the largest offset) cannot reach their ``N``-th score so far.
Trained factors have widely spread item norms, so most of the product is skipped. Every
item that can enter a slate is still a candidate and is rescored exactly
(:func:`guardrails.core._exact.emit`), so the results are the same bit for bit as the
unfused path's.

Whether the path pays is decided per call: :func:`fused_tile_items` sizes the tiles (0
turns the path off), and for a batch of more than one chunk, :func:`probe_order` puts a few
rows spread over the batch first so that :func:`fused_pays` can judge from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._exact import (
    MIN_BLOCKS_PER_SLOT,
    chunk_mask_cells,
    column_norms,
    emit,
    lower,
    sanitize,
    threshold,
)

if TYPE_CHECKING:
    from ._exact import TopkCall
    from .kernel import FactorSpace

__all__ = [
    "PruneIndex",
    "fused_tile_items",
    "probe_order",
    "fused_pays",
    "probe_due",
    "note_probe",
    "run_chunk_tiled",
]

# One tile of scores per worker (the fused path): small enough to stay in cache
# (1 MiB measured ahead of 256 KiB at 50k x 64 on the 2-core machine).
_TILE_BYTES = 1 << 20
# The fused path by default from this many tiles: it then skips the tiles that cannot
# win (ALS factors at 50k x 64: 89% of the product skipped, 2-3x faster than the unfused
# path; popularity-skewed Gaussian factors: 45% skipped, about even), see
# bench_recommend.py's pruned / unfused column.
_MIN_TILES = 4
# Selecting in numpy, the fused path measured 0.64x the unfused one at 50k x 128
# Gaussian factors (nothing skipped) and 1.1x at 50k x 64 (45% skipped): by default it is
# kept only where the first chunk computed at most this share of the product (the rest
# of the call then runs unfused).
_NUMPY_FUSED_MAX_SCORED = 0.6
# With the compiled selection step: 0.75x the unfused path at 50k x 128 Gaussian factors
# with nothing skipped (2 threads), 2x at 50k x 64 with 43% skipped.
_FUSED_MAX_SCORED = 0.8
# Rows, spread over a batch, that decide between the fused and the unfused path.
_PROBE_ROWS = 64
# Where a probe chose the unfused path, calls on the same space probe again after this
# many (see probe_due).
_REPROBE_EVERY = 8


@dataclass(frozen=True, eq=False)
class PruneIndex:
    """A factor space's items in tiles of decreasing norm, with a score bound per tile.

    Parameters
    ----------
    tile : int
        Items per tile, a multiple of the space's block width.
    order : ndarray of int64, shape (n_tiles * tile,)
        Compact column at each position (0 at the padding positions, ``>= n_eligible``).
    inv : ndarray of int64, shape (W * B,)
        Position of each compact column.
    rows : ndarray of float32, shape (n_tiles * tile, k)
        Item-major (augmented) factors in position order, zero padding: a tile, and a
        block of ``W`` items in it, is one contiguous slab.
    norm_max : ndarray of float64, shape (n_tiles,)
        Largest Euclidean norm of an item's raw factors in the tile (``inf`` if any is
        not finite), non-increasing.
    pen_max, pen_rest : ndarray of float64, shape (n_tiles,)
        Largest folded score offset (``-penalty``; 0 without one) in the tile, and in
        the tile and every later one.
    """

    tile: int
    order: np.ndarray
    inv: np.ndarray
    rows: np.ndarray
    norm_max: np.ndarray
    pen_max: np.ndarray
    pen_rest: np.ndarray

    @classmethod
    def build(cls, space: FactorSpace, tile: int) -> PruneIndex:
        n, W = space.n_eligible, space.width
        T = max(W, (int(tile) // W) * W)
        d = space.item_rows.shape[1]
        n_tiles = max(1, -(-n // T))
        ft = space.factors_t
        norms = column_norms(ft, d, n)
        norms[~np.isfinite(norms)] = np.inf
        # Stable sort: equal norms keep the compact order, so the index is deterministic.
        sorted_cols = np.argsort(-norms, kind="stable").astype(np.int64)
        order = np.zeros(n_tiles * T, dtype=np.int64)
        order[:n] = sorted_cols
        inv = np.zeros(ft.shape[1], dtype=np.int64)
        inv[sorted_cols] = np.arange(n, dtype=np.int64)
        rows = np.zeros((n_tiles * T, ft.shape[0]), dtype=np.float32)
        rows[:n] = ft[:, sorted_cols].T
        padded = np.full(n_tiles * T, -np.inf)
        padded[:n] = norms[sorted_cols]
        norm_max = padded.reshape(n_tiles, T).max(axis=1)
        if space.neg_penalty is not None:
            off = np.full(n_tiles * T, -np.inf)
            off[:n] = space.neg_penalty[sorted_cols].astype(np.float64)
            # A NaN offset poisons its tile's bound, so that tile is never skipped.
            pen_max = np.where(
                np.isnan(off).reshape(n_tiles, T).any(axis=1),
                np.inf,
                off.reshape(n_tiles, T).max(axis=1),
            )
        else:
            pen_max = np.zeros(n_tiles)
        pen_rest = np.maximum.accumulate(pen_max[::-1])[::-1].copy()
        return cls(T, order, inv, rows, norm_max, pen_max, pen_rest)


def fused_tile_items(space: FactorSpace, N: int, block_rows: int, tile_items: int | None) -> int:
    """Tile width of the fused path for this call, 0 for the unfused path."""
    if tile_items == 0:
        return 0
    if tile_items is not None:
        return max(space.width, int(tile_items))
    if space.n_blocks < MIN_BLOCKS_PER_SLOT * N:
        return 0
    # At least a few blocks per slate slot in every tile, so the running bound rises.
    t = max(_TILE_BYTES // (4 * block_rows), MIN_BLOCKS_PER_SLOT * N * space.width)
    t = -(-t // space.width) * space.width
    # A catalogue of a few tiles has little to skip.
    return t if space.n_eligible >= _MIN_TILES * t else 0


def probe_order(m: int) -> tuple[np.ndarray, int]:
    """Row order of a batch of ``m`` rows whose first rows decide the path; their count.

    The fused path costs more than the unfused one unless it skips a good part of the
    product. The skipped share is a property of each row (its own running ``N``-th
    score), so a few rows spread evenly over the batch tell (a batch's first rows alone
    can be unlike the rest: sorted by cohort or by activity).
    """
    probe = np.unique(np.linspace(0, m - 1, _PROBE_ROWS).astype(np.int64))
    rest = np.setdiff1d(np.arange(m), probe, assume_unique=True)
    return np.concatenate([probe, rest]), int(probe.size)


def fused_pays(scored: int, cells: int, compiled: bool) -> bool:
    """Whether the probe, having computed ``scored`` of its ``cells``, keeps the fused path."""
    most = _FUSED_MAX_SCORED if compiled else _NUMPY_FUSED_MAX_SCORED
    return scored <= most * cells


def probe_due(space: object, key: tuple) -> bool:
    """Whether a call on ``space`` (``key``: tile, ``N``, backend) should probe the path.

    After a probe finds that the fused path does not pay on a space (flat scores: nothing
    to skip), the next calls on it go unfused without probing, and every
    ``_REPROBE_EVERY``-th call probes again: the probe's fused rows cost more than
    unfused ones there. Both paths are exact, so this never changes a result.
    """
    memo = space.__dict__.get("_path")
    if memo is None or memo.get(key, 0) <= 0:
        return True
    memo[key] -= 1
    return False


def note_probe(space: object, key: tuple, pays: bool) -> None:
    """Record a probe's verdict for :func:`probe_due`."""
    memo = space.__dict__.get("_path")
    if memo is None:
        memo = {}
        # Frozen dataclass: a derived cache, not state; a race only moves the next probe.
        object.__setattr__(space, "_path", memo)
    memo[key] = 0 if pays else _REPROBE_EVERY - 1


# One pass over a chunk's tiles: the running N-th scores, the tile order, the skip test
# and the candidate buffers are local arrays every step reads and updates; split into
# helpers they would travel as a dozen arguments per tile (the hot loop).
def run_chunk_tiled(call: TopkCall, lo: int, hi: int, tile_items: int) -> int:
    """The fused, pruned path: item tiles by decreasing norm, skipped when they cannot win.

    1. The items are visited one tile of ``T`` at a time, largest norms first
       (:class:`PruneIndex`). A scored tile is masked and penalised in a small buffer
       (item-major) and reduced to the maxima of its blocks of ``W`` consecutive items.
    2. Every row keeps the ``N`` largest of the scores and block maxima seen so far (all
       scores of distinct items); the smallest, ``t``, is a lower bound on the row's
       ``N``-th largest score, as in the unfused path. In the first tile, which holds the
       largest norms and so most of the top items, ``t`` is raised by the tile's ``N``
       largest scores (they lie in its ``N`` blocks with the largest maxima), later by
       block maxima only.
    3. The cells of blocks whose maximum reaches ``t - 2 delta`` (:func:`~._exact.lower`,
       with the rounding relative to the scores too) are kept as candidates,
       and the tile is discarded: the score matrix is never written.
    4. No score in a tile exceeds ``|u| * max|v| + max(-penalty)`` (Cauchy-Schwarz),
       computed in float64: the per-viewer penalties left in the tiles are demotions
       (``>= 0``), however large; negative ones (restoring a folded penalty) are set
       apart as candidates (:func:`~._exact.penalty_terms`). A row whose bound, plus
       the rounding bound ``delta``, stays below ``t - 2 delta`` skips the tile: every
       item in it scores below the ``N``-th exact score, so none can enter the slate.
       A tile is multiplied with the rows that remain only; once no row can gain from a
       later tile (norms only fall), the chunk stops.
    5. The candidates still above the final ``t - 2 delta`` go to
       :func:`~guardrails.core._exact.emit`, which rescores them exactly.

    Rows ``lo:hi`` of ``call`` (a :class:`~._exact.TopkCall` on a factor space) are
    scored, in tiles sized by ``tile_items`` (:meth:`FactorSpace.prune_index`).

    With the call's ``compiled`` (``guardrails.core._tile``), steps 2 and 3 are two passes
    in C over the tile, and ``t`` is raised by every score (a tighter bound, never a
    looser one).

    With the call's ``groups`` (:class:`~._groups.GroupTerms`), step 1 also applies each viewer
    group's dense mask and offset to its rows, whose largest offset joins the per-row
    penalty bound of step 4.

    ``t`` only rises, so every item whose exact score ties or beats the row's ``N``-th
    exact score is a candidate: the argument of :mod:`guardrails.core.kernel`'s docstring
    holds unchanged, and the result equals the unfused path's bit for bit, whatever the
    batch. Returns the number of (row, item) cells multiplied.
    """
    space, N, compiled, groups = call.space, call.N, call.compiled, call.groups
    q, r = call.queries[lo:hi], hi - lo
    ix = space.prune_index(int(tile_items))
    W, T, n = space.width, ix.tile, space.n_eligible
    n_tiles = ix.norm_max.shape[0]
    nb = T // W
    n_pad = space.width * space.n_blocks
    bounds = np.arange(0, n_tiles * T + 1, T, dtype=np.int64)
    # Per-viewer cells of the chunk, by position in the tile order: one slice per tile.
    mrow, mpos = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for csr in call.masks:
        rr, cc = chunk_mask_cells(csr, lo, hi, space.pos)
        mrow.append(rr)
        mpos.append(ix.inv[cc])
    m_rows, m_pos = np.concatenate(mrow), np.concatenate(mpos)
    o = np.argsort(m_pos, kind="stable")
    m_rows, m_pos = m_rows[o], m_pos[o]
    m_at = np.searchsorted(m_pos, bounds)
    call_cols = call.call_cols
    c_pos = np.sort(ix.inv[call_cols]) if call_cols is not None else np.empty(0, np.int64)
    c_at = np.searchsorted(c_pos, bounds)
    cells, lookup, has, forced = call.chunk_penalties(lo, hi, n_pad, split=True)
    if forced is not None:
        # Restoring cells no mask hits: -inf in the tiles (their float32 values carry a
        # folded penalty's rounding), candidates whatever their value (see penalty_terms).
        m_rows = np.concatenate([m_rows, forced[0]])
        m_pos = np.concatenate([m_pos, ix.inv[forced[1]]])
        o = np.argsort(m_pos, kind="stable")
        m_rows, m_pos = m_rows[o], m_pos[o]
        m_at = np.searchsorted(m_pos, bounds)
    if cells is not None:
        urows, ucols, total = cells
        p_pos = ix.inv[ucols]
        o = np.argsort(p_pos, kind="stable")
        p_rows, p_pos, p_vals = urows[o], p_pos[o], total[o].astype(np.float32)
    else:
        p_rows = p_pos = np.empty(0, np.int64)
        p_vals = np.empty(0, np.float32)
    p_at = np.searchsorted(p_pos, bounds)
    # Each viewer group's dense terms in tile order (padding positions are -inf anyway).
    dense = []
    gmax = np.zeros(r)
    if groups is not None:
        gmax = groups.row_boost(lo, hi)
        for g, rr in groups.active(lo, hi):
            in_chunk = np.zeros(r, dtype=bool)
            in_chunk[rr] = True
            off, mask = groups.offsets[g], groups.masks[g]
            dense.append(
                (
                    in_chunk,
                    None if off is None else off[ix.order],
                    None if mask is None else mask[ix.order],
                )
            )
    delta, rel = space.error_bound(q, has, gmax)
    d = space.item_rows.shape[1]
    unorm = np.sqrt((q[:, :d].astype(np.float64) ** 2).sum(axis=1))
    # A row skips a tile when unorm * norm_max + pen_max + base < thr (float64): no
    # cell of the tile scores above unorm * norm_max plus the tile's largest folded
    # offset and the row's largest group offset (per-viewer penalties left in the
    # tiles are >= 0: they only lower scores, however large).
    base = gmax + delta
    thr = np.full(r, -np.inf)
    thr32 = np.full(r, -np.inf, dtype=np.float32)

    qt = np.ascontiguousarray(q.T)
    top = np.full((r, N), -np.inf, dtype=np.float32)
    every = np.arange(r, dtype=np.int64)
    in_block = np.arange(W, dtype=np.int64)
    kb = min(N, nb)
    found_r, found_p, found_v = [], [], []
    scored = 0
    buf = np.empty(T * r, dtype=np.float32)
    if compiled is not None:
        # Ascending per row, as the compiled step keeps it; its candidate buffers.
        o_rows = np.empty(T * r, dtype=np.int64)
        o_pos = np.empty(T * r, dtype=np.int64)
        o_vals = np.empty(T * r, dtype=np.float32)
    # Overflowed products are -inf'd or sanitised below: no warning per tile.
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(n_tiles):
            lift = unorm * ix.norm_max[i] + base
            # NaN bounds (non-finite factors) compare False: such rows are never skipped.
            if i and not (~(lift + ix.pen_rest[i] < thr)).any():
                break
            live = ~(lift + ix.pen_max[i] < thr)
            li = every if live.all() else np.flatnonzero(live)
            nl = li.size
            if nl == 0:
                continue
            c0, c1 = int(bounds[i]), int(bounds[i + 1])
            # One buffer per chunk for every tile (C-contiguous for any number of live rows).
            S = buf[: T * nl].reshape(T, nl)
            np.matmul(ix.rows[c0:c1], qt if nl == r else qt[:, li], out=S)
            scored += nl * (min(c1, n) - c0)
            local = None
            if nl != r:
                local = np.full(r, -1, dtype=np.int64)
                local[li] = np.arange(nl, dtype=np.int64)
            if c1 > n:
                S[max(0, n - c0) :] = -np.inf
            a, b = c_at[i], c_at[i + 1]
            if b > a:
                S[c_pos[a:b] - c0] = -np.inf
            a, b = m_at[i], m_at[i + 1]
            if b > a:
                rr, pp = m_rows[a:b], m_pos[a:b]
                if local is not None:
                    rr = local[rr]
                    pp, rr = pp[rr >= 0], rr[rr >= 0]
                S[pp - c0, rr] = -np.inf
            a, b = p_at[i], p_at[i + 1]
            if b > a:
                rr, pp, vv = p_rows[a:b], p_pos[a:b], p_vals[a:b]
                if local is not None:
                    rr = local[rr]
                    pp, vv, rr = pp[rr >= 0], vv[rr >= 0], rr[rr >= 0]
                S[pp - c0, rr] -= vv
            for in_chunk, off_t, mask_t in dense:
                sel = in_chunk[li]
                n_sel = int(np.count_nonzero(sel))
                if n_sel == 0:
                    continue
                if n_sel == nl:
                    if off_t is not None:
                        S -= off_t[c0:c1, None]
                    if mask_t is not None:
                        S[mask_t[c0:c1]] = -np.inf
                    continue
                cs = np.flatnonzero(sel)
                blk = S[:, cs]
                if off_t is not None:
                    blk -= off_t[c0:c1, None]
                if mask_t is not None:
                    blk[mask_t[c0:c1]] = -np.inf
                S[:, cs] = blk
            if compiled is not None:
                k = compiled.tile_select(
                    S, W, li, top, delta, rel, thr, thr32, c0, o_rows, o_pos, o_vals
                )
                if k:
                    found_r.append(o_rows[:k].copy())
                    found_p.append(o_pos[:k].copy())
                    found_v.append(o_vals[:k].copy())
                continue
            S3 = S.reshape(nb, W, nl)
            M = S3.max(axis=1)
            best = M.max()
            if (np.isnan(best) or best == np.inf) and sanitize(S):
                M = S3.max(axis=1)
            Mt = np.ascontiguousarray(M.T)
            if i == 0 and kb < nb:
                # The top items cluster in the first tile's few blocks, so block maxima
                # would bound t loosely there: read the tile's N largest scores, which lie
                # in its N blocks with the largest maxima.
                at = np.arange(nl, dtype=np.int64)
                blk = np.argpartition(Mt, nb - kb, axis=1)[:, nb - kb :]
                vals = S3[blk[:, :, None], in_block[None, None, :], at[:, None, None]].reshape(
                    nl, -1
                )
            else:
                # Block maxima are scores of distinct items: still a lower bound.
                vals = Mt
            # Only rows with a score above their N-th so far can raise it.
            cur = top[li]
            g = np.flatnonzero(vals.max(axis=1) > cur.min(axis=1))
            if g.size:
                cat = np.concatenate([cur[g], vals[g]], axis=1)
                kept = np.partition(cat, cat.shape[1] - N, axis=1)[:, -N:]
                gl = li[g]
                top[gl] = kept
                t_rows = kept.min(axis=1).astype(np.float64)
                thr[gl] = lower(t_rows, delta[gl], rel[gl])
                thr32[gl] = threshold(t_rows, delta[gl], rel[gl], np.float32)
            tl = thr32[li]
            # Candidates: every cell of a block whose maximum reaches the threshold.
            hr, hb = np.nonzero(Mt >= tl[:, None])
            if hr.size:
                cv = S3[hb[:, None], in_block[None, :], hr[:, None]]
                cp = (c0 + hb * W)[:, None] + in_block[None, :]
                ok = np.isfinite(cv) & (cv >= tl[hr][:, None])
                found_r.append(np.broadcast_to(li[hr][:, None], cp.shape)[ok])
                found_p.append(cp[ok])
                found_v.append(cv[ok])
    if not found_r and forced is None:
        return scored
    rows = np.concatenate(found_r or [np.empty(0, np.int64)])
    at = np.concatenate(found_p or [np.empty(0, np.int64)])
    vals = np.concatenate(found_v or [np.empty(0, np.float32)])
    # The threshold only rose: drop what an earlier, lower one let in.
    keep = vals >= thr32[rows]
    rows, cols = rows[keep], ix.order[at[keep]]
    if forced is not None:
        rows = np.concatenate([rows, forced[0]])
        cols = np.concatenate([cols, forced[1]])
    if call.tally is not None:
        call.tally.append(int(rows.size))  # list.append: safe from worker threads
    emit(call, lo, hi, rows, cols, None, False, lookup)
    return scored
