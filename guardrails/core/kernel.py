"""The guarded top-k kernel: chunked scoring, penalties and masks, pruned selection.

The kernel knows arrays only. A *candidate space* (:class:`FactorSpace` or
:class:`SimilaritySpace`) holds the eligible items of a plan, compacted so that
globally suppressed items are never scored at all, with the plan's global penalty folded
into the scoring (one extra factor for matrix factorisation). :func:`guarded_topk` then,
for every chunk of query rows:

1. scores the chunk against every eligible item (one GEMM, or one sparse product);
2. sets per-call and per-viewer masked cells to ``-inf`` and subtracts per-viewer
   penalties;
3. prunes: the items are split into ``B`` strided blocks of ``W`` items; the ``N``-th
   largest block maximum is a lower bound on the ``N``-th largest score, so only blocks
   whose maximum reaches it are gathered (a handful per row instead of the whole row);
4. rescores the surviving candidates exactly (float64, in an order that does not depend
   on the batch), drops every non-finite score, and sorts by score then item index.

Step 4 is what makes a batch call return exactly what single calls return: BLAS may
round one row differently depending on the other rows in the product, so the GEMM is
only used to prune, with a margin larger than its proven rounding error, and the final
scores are computed the same way whatever the batch. It also means that a masked cell
can never come out: masks are ``-inf`` before selection, and the final filter drops
every candidate whose score is not finite, so no sentinel score is ever trusted.

For a factor space of several cache-sized tiles, steps 1 to 3 are fused and pruned
(:mod:`guardrails.core._fused`): the chunk is scored one tile of items at a time, largest
item norms first; each tile is masked, penalised, reduced to its candidates and discarded, so
the ``block_rows x n_eligible`` score matrix is never written; and a tile is skipped for
the rows whose Cauchy-Schwarz bound ``|u| * max|v|`` (plus the largest offset) cannot
reach their ``N``-th score so far. Trained factors have widely spread item norms, so most
of the product is skipped. Every item that can enter a slate is still a candidate and is
rescored exactly, so the results are the same bit for bit (``tile_items=0`` turns the
fused path off; the tests compare both).

Chunks run on a thread pool; numpy and BLAS release the GIL in every heavy step, and
BLAS is limited to one thread per chunk so that the pool, not BLAS, uses the cores.
Memory is bounded by ``block_rows * n_eligible`` scores per worker on the unfused path,
and by one tile plus the candidates (cells within the rounding margin of a row's running
``N``-th score) on the fused path.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import wait
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from ..exceptions import ValidationError
from ._exact import (
    EPS32,
    MIN_BLOCKS_PER_SLOT,
    PAD_ID,
    CallPenalties,
    TopkCall,
    checked_backend,
    chunk_mask_cells,
    column_norms,
    compiled_step,
    emit,
    lane_sum,
    sanitize,
    threshold,
)
from ._fused import (
    PruneIndex,
    fused_pays,
    fused_tile_items,
    note_probe,
    probe_due,
    probe_order,
    run_chunk_tiled,
)
from ._groups import GroupTerms, RowGroups, group_terms
from ._pool import pool_topk
from .threads import blas_single_thread, default_num_threads, shared_pool

#: Whether the compiled selection step of the fused path is available.
HAS_COMPILED_TILE = compiled_step() is not None

__all__ = [
    "FactorSpace",
    "SimilaritySpace",
    "guarded_topk",
    "pool_topk",
    "RowGroups",
    "default_num_threads",
    "PAD_ID",
    "HAS_COMPILED_TILE",
]

# Rows per chunk: 128 measured best at 64 and 128 factors on 50k and 200k items (GEMM
# efficiency grows with the rows), capped so one chunk's scores stay within 128 MiB
# (float32) per thread, and never below 32 rows (1M items: 128 MiB; set block_rows lower).
_CHUNK_CELLS = 1 << 25
_MAX_BLOCK_ROWS = 128
# GEMM efficiency falls off below a few dozen rows; large catalogues take this floor
# (32 rows x 1M items is 128 MiB of scores per thread: set block_rows to go lower).
_MIN_BLOCK_ROWS = 32
# Spaces so small that 128 rows make fewer score cells than this take more rows per chunk
# (4 MiB of float32 scores per worker at most).
_SMALL_CHUNK_CELLS = 1 << 20
# A call of at most this many score cells runs as one chunk: split over the workers, each
# chunk's fixed costs (mask cells, selection steps, rescoring) outweigh the product they
# share (a minors' cohort call, 526 rows x 469 items: 1.95 ms as one chunk, 2.17 as two).
_ONE_CHUNK_CELLS = 1 << 19
# The fused path with the compiled selection step, on two or more worker threads, skips
# the probe from this many tiles: where it skips nothing (Gaussian factors, 2 threads) it
# measured 1.05-1.2x the unfused path at 50k items x 128 factors, about even at 30k, and
# 0.94-0.97x at 10k and 20k (few tiles: the unfused chunk's scores stay in cache), where
# the probe still decides. On one worker thread the unfused product runs on BLAS's own
# threads, and the probe decides too (the fused path took 0.55x there).
_FUSED_FROM_TILES = 16
# Query rows per chunk on that fused path, with the tiles sized for 128-row chunks (2,048
# items): chunks of 512 rows ran 1.2-1.35x the 128-row ones at 50k and 200k items x 64
# and 128, Gaussian and ALS factors (2,000 users, two threads; every tile step costs
# Python calls, and larger products run faster), and 1,024 rows only 2-4% more. A tile's
# scores and candidate buffers then take 2,048 x 512 x 24 bytes per worker at most
# (24 MiB, mostly untouched).
_FUSED_BLOCK_ROWS = 512
# Per-viewer penalties up to this many cells per query row are summed once per call
# (CallPenalties). At 10k items x 64 factors, 5,000 rows and two threads, summing once
# per call took 61-65 ms against 62-66 ms per chunk at 2-20 cells per row, and 79 against
# 72 ms at 50 (the one pass runs on one thread).
_CALL_TERMS_PER_ROW = 16
# ... and up to this many in all (about 26 bytes each kept, 2-3 times that while they are
# summed: under 80 MiB), so that a huge batch's memory stays bounded by its chunks, not
# its penalties (the restored cells' mask test runs 512 rows at a time).
_CALL_TERMS_MAX = 1 << 20
_DEFAULT_BLOCK_WIDTH = 32


def _layout(n: int, width: int) -> tuple[int, int]:
    """Return ``(W, B)`` with ``W * B >= n``: ``B`` strided blocks of ``W`` items."""
    if n == 0:
        return 1, 0
    w = max(1, min(width, n))
    b = -(-n // w)
    return w, b


def _compact(n_items: int, hard_mask, restrict, block_width: int):
    """``(ids, pos, W, B)`` of a space: the items not in ``hard_mask`` (and in ``restrict``).

    ``ids`` (int64, sorted) are the eligible global items, ``pos`` (int64, ``(n_items,)``)
    each global item's compact position or ``-1``, and ``(W, B)`` the block layout.
    """
    keep = np.ones(n_items, dtype=bool) if hard_mask is None else ~hard_mask
    if restrict is not None:
        only = np.zeros(n_items, dtype=bool)
        only[restrict] = True
        keep &= only
    ids = np.flatnonzero(keep).astype(np.int64)
    pos = np.full(n_items, -1, dtype=np.int64)
    pos[ids] = np.arange(ids.size, dtype=np.int64)
    width, n_blocks = _layout(ids.size, block_width)
    return ids, pos, width, n_blocks


@dataclass(frozen=True, eq=False)
class FactorSpace:
    """Eligible items of a matrix-factorisation plan, compacted and transposed.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_eligible,)
        Sorted global indices of the eligible items.
    pos : ndarray of int64, shape (n_items,)
        Compact position of every global item, ``-1`` where it is not eligible.
    factors_t : ndarray of float32, shape (k, W * B)
        Eligible item factors, transposed (C-contiguous, the layout BLAS multiplies
        fastest), padded with zero columns to a whole number of blocks (their scores
        are overwritten with ``-inf``). When the plan has a penalty, ``k`` is
        ``n_factors + 1`` and the last row holds ``-penalty``: the penalty is folded into
        the product as one extra factor that every query multiplies by 1.
    row_norm_max : float
        Largest Euclidean norm of an item's (augmented) factors; bounds GEMM rounding.
    width, n_blocks : int
        The block layout used for pruning.
    """

    ids: np.ndarray
    pos: np.ndarray
    factors_t: np.ndarray
    augmented: bool
    row_norm_max: float
    width: int
    n_blocks: int
    item_rows: np.ndarray
    neg_penalty: np.ndarray | None

    @property
    def n_eligible(self) -> int:
        return int(self.ids.shape[0])

    def prune_index(self, tile: int) -> PruneIndex:
        """The items in tiles of ``tile``, by decreasing norm; built on first use per size."""
        cache = self.__dict__.get("_prune")
        if cache is None:
            cache = {}
            # Frozen dataclass: a derived cache, not state; racing builders agree.
            object.__setattr__(self, "_prune", cache)
        index = cache.get(tile)
        if index is None:
            index = PruneIndex.build(self, tile)
            cache[tile] = index
        return index

    @classmethod
    def build(
        cls,
        item_factors: np.ndarray,
        *,
        hard_mask: np.ndarray | None = None,
        penalty: np.ndarray | None = None,
        restrict: np.ndarray | None = None,
        block_width: int = _DEFAULT_BLOCK_WIDTH,
    ) -> FactorSpace:
        """Compact ``item_factors`` to the items not in ``hard_mask`` (and in ``restrict``).

        Parameters
        ----------
        item_factors : ndarray of float32, shape (n_items, n_factors)
        hard_mask : ndarray of bool, shape (n_items,), optional
            ``True`` for items that must never be returned.
        penalty : ndarray of float32, shape (n_items,), optional
            Subtracted from every score of the item.
        restrict : ndarray of int64, optional
            If given, only these global items are candidates (implicit's ``items=``).
        """
        n_items, n_factors = item_factors.shape
        ids, pos, width, n_blocks = _compact(n_items, hard_mask, restrict, block_width)
        augmented = penalty is not None and bool(np.any(penalty[ids] != 0))
        k = n_factors + 1 if augmented else n_factors
        ft = np.zeros((k, width * n_blocks), dtype=np.float32)
        ft[:n_factors, : ids.size] = item_factors[ids].T
        if augmented:
            ft[n_factors, : ids.size] = -penalty[ids]
        norm_max = float(column_norms(ft, k, ids.size).max()) if ids.size else 0.0
        # Row-major factors for exact rescoring: gathering a few rows is cache-friendly,
        # gathering columns of the transposed copy is not. No copy when already float32.
        item_rows = np.ascontiguousarray(item_factors, dtype=np.float32)
        neg_pen = np.ascontiguousarray(ft[n_factors, : ids.size]) if augmented else None
        return cls(ids, pos, ft, augmented, norm_max, width, n_blocks, item_rows, neg_pen)

    def augment_queries(self, queries: np.ndarray) -> np.ndarray:
        """Append the constant 1 factor that multiplies the folded penalty."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.augmented:
            return queries
        out = np.empty((queries.shape[0], queries.shape[1] + 1), dtype=np.float32)
        out[:, :-1] = queries
        out[:, -1] = 1.0
        return out

    def chunk_scores(self, queries: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            scores = queries @ self.factors_t
        scores[:, self.n_eligible :] = -np.inf
        return scores

    def exact_scores(
        self, queries: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, fold: bool = True
    ) -> np.ndarray:
        # Each product is summed over the factors in one fixed order (lane_sum, the
        # compiled rescoring's order too), independent of how many other pairs are
        # rescored alongside it. ``fold=False`` leaves out the folded penalty (a viewer
        # group adds its own, see _groups).
        d = self.item_rows.shape[1]
        q = queries[rows, :d].astype(np.float64)
        q *= self.item_rows[self.ids[cols]]
        out = lane_sum(q)
        if fold and self.neg_penalty is not None:
            out += self.neg_penalty[cols]
        return out

    @property
    def raw_norm_max(self) -> float:
        """Largest Euclidean norm of an eligible item's raw factors (no folded penalty)."""
        return self._fold_stats()[0]

    def _fold_stats(self) -> tuple[float, bool]:
        """Largest norm of an item's raw factors, and whether every folded penalty is >= 0."""
        stats = self.__dict__.get("_fold")
        if stats is None:
            d = self.item_rows.shape[1]
            n = self.n_eligible
            norm = float(column_norms(self.factors_t, d, n).max()) if n else 0.0
            # NaN fails the test: such a space keeps the bound that needs no sign.
            nonneg = self.neg_penalty is None or bool(np.all(self.neg_penalty <= 0))
            stats = (norm, nonneg)
            # Frozen dataclass: a derived cache, not state; racing builders agree.
            object.__setattr__(self, "_fold", stats)
        return stats

    def error_bound(
        self, queries: np.ndarray, has: np.ndarray | None = None, group_max=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row ``(delta, rel)``: every float32 cell ``v`` is within
        ``delta + rel * |v|`` of its exact score (generous float32 rounding bounds).

        ``queries`` are augmented (:meth:`augment_queries`); ``has`` whether each row
        has per-viewer penalties (non-negative: ``penalty_terms`` sets the negative ones
        apart), subtracted in float32 after the product;
        ``group_max`` each row's largest absolute viewer-group offset, subtracted after
        them (:mod:`._groups`). With ``gamma = 4 (k + 2) eps`` the product of ``k``
        factors is within ``gamma * sum |q_i v_i|`` of the exact one, which gives two
        bounds, and each row takes the tighter:

        1. ``sum |q_i v_i| <= |q| * row_norm_max`` (the folded penalty included), and each
           later float32 subtraction rounds by ``eps`` of its operands, which are within
           that bound of ``v``: ``delta = (gamma + 2 eps) |q| row_norm_max + 4 eps
           group_max``, ``rel = 4 eps``. A large folded penalty makes it loose.
        2. Where every folded penalty is ``>= 0`` (a demotion; the viewer ones are),
           the penalties sum to ``dot - exact <= |q_raw| raw_norm_max + |exact|``, so
           their rounding is relative to the result: ``delta = 2 gamma' A + (4 eps +
           2 gamma') group_max`` and ``rel = gamma' + 4 eps``, with ``A = |q_raw|
           raw_norm_max`` and ``gamma' = gamma / (1 - gamma)``. However large a demotion,
           the bound stays that of the scores near the top (which are small).

        Without penalties or offsets ``rel`` is 0 and ``delta`` is bound 1.
        """
        k = queries.shape[1]
        r = queries.shape[0]
        q64 = queries.astype(np.float64)
        qn = np.sqrt((q64**2).sum(axis=1))
        gamma = 4.0 * (k + 2) * EPS32
        has = np.zeros(r, bool) if has is None else has
        gmax = np.zeros(r) if group_max is None else np.asarray(group_max, dtype=np.float64)
        rounds = has | (gmax != 0)
        delta = np.where(has, gamma + 2.0 * EPS32, gamma) * qn * self.row_norm_max
        delta += 4.0 * EPS32 * gmax + 1e-30
        rel = np.where(rounds, 4.0 * EPS32, 0.0)
        if self.augmented:
            norm_raw, nonneg = self._fold_stats()
            d = self.item_rows.shape[1]
            if nonneg:
                g1 = gamma / (1.0 - gamma)
                a = np.sqrt((q64[:, :d] ** 2).sum(axis=1)) * norm_raw
                delta2 = 2.0 * g1 * a + (4.0 * EPS32 + 2.0 * g1) * gmax + 1e-30
                use = delta2 < delta
                delta = np.where(use, delta2, delta)
                rel = np.where(use, g1 + 4.0 * EPS32, rel)
        # NaN anywhere makes the thresholds -inf (lower): nothing is pruned.
        return delta, rel


@dataclass(frozen=True, eq=False)
class SimilaritySpace:
    """Eligible items of an item-item plan: the similarity matrix restricted to them.

    Scores of a query row are ``query_row @ similarity[:, eligible] - penalty``, computed
    by scipy's row-wise sparse product in float64: each output row depends on its own
    input row only, so the scores are exact with respect to batching.

    Only *reachable* items are candidates, as in implicit: items with a non-zero entry in
    the product (a similarity path from the query's interactions). With ``fill`` set, the
    space is the backfill tier instead: the eligible items that are *not* reachable,
    scored ``fill - penalty`` (``fill`` is a per-eligible-item backfill score, such as
    popularity), and the reachable ones are masked.
    """

    ids: np.ndarray
    pos: np.ndarray
    similarity: sp.csr_matrix
    penalty: np.ndarray | None
    width: int
    n_blocks: int
    fill: np.ndarray | None = None

    @property
    def n_eligible(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def build(
        cls,
        similarity: sp.csr_matrix,
        *,
        hard_mask: np.ndarray | None = None,
        penalty: np.ndarray | None = None,
        restrict: np.ndarray | None = None,
        block_width: int = _DEFAULT_BLOCK_WIDTH,
    ) -> SimilaritySpace:
        ids, pos, width, n_blocks = _compact(similarity.shape[1], hard_mask, restrict, block_width)
        sim = sp.csr_matrix(similarity[:, ids], dtype=np.float64)
        pen = None if penalty is None else np.ascontiguousarray(penalty[ids], dtype=np.float64)
        return cls(ids, pos, sim, pen, width, n_blocks)

    def augment_queries(self, queries: sp.csr_matrix) -> sp.csr_matrix:
        return queries

    def chunk_scores(self, queries: sp.csr_matrix) -> np.ndarray:
        out = np.full((queries.shape[0], self.width * self.n_blocks), -np.inf, dtype=np.float64)
        # scipy's product keeps only non-zero sums: its pattern is the reachable items.
        prod = sp.csr_matrix(queries @ self.similarity)
        rows = np.repeat(np.arange(prod.shape[0]), np.diff(prod.indptr))
        cols = prod.indices
        if self.fill is None:
            vals = prod.data.astype(np.float64)
            if self.penalty is not None:
                vals = vals - self.penalty[cols]
            out[rows, cols] = vals
        else:
            tier = self.fill if self.penalty is None else self.fill - self.penalty
            out[:, : self.n_eligible] = tier
            out[rows, cols] = -np.inf
        return out

    def backfill(self, fill: np.ndarray) -> SimilaritySpace:
        """The backfill tier of this space, from global per-item ``fill`` scores."""
        return replace(self, fill=np.ascontiguousarray(fill[self.ids], dtype=np.float64))

    def exact_scores(self, queries, rows, cols) -> np.ndarray:  # pragma: no cover - unused
        raise NotImplementedError

    def error_bound(self, queries, pens=None, group_max=None) -> tuple[np.ndarray, np.ndarray]:
        # Scores are float64 sums of the sparse product, the same whatever the batch.
        zero = np.zeros(queries.shape[0], dtype=np.float64)
        return zero, zero.copy()


# Over 120 lines with its numpydoc docstring (49 lines) and signature (16); the body is
# the chunking and the fused-or-unfused choice, about 75 lines (argument checks and the
# chunk size in _checked_backend and _block_rows).
def guarded_topk(
    space: FactorSpace | SimilaritySpace,
    queries,
    N: int,
    *,
    call_mask: np.ndarray | None = None,
    viewer_masks: Sequence[sp.csr_matrix] = (),
    viewer_penalties: Sequence[sp.csr_matrix] = (),
    block_rows: int | None = None,
    num_threads: int = 0,
    score_dtype=np.float32,
    tile_items: int | None = None,
    stats: dict | None = None,
    backend: str = "auto",
    groups: RowGroups | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``N`` eligible items for every query row.

    Parameters
    ----------
    space : FactorSpace or SimilaritySpace
        The eligible items, with the global hard mask and penalty already applied.
    queries : ndarray of float32, shape (m, n_factors), or csr_matrix of shape (m, n_items)
        User (or item) factors for a factor space; interaction rows for a similarity space.
    N : int
        Slate length, at least 1.
    call_mask : ndarray of int64, optional
        Global item indices masked for this call only (implicit's ``filter_items``).
    viewer_masks : sequence of csr_matrix, each of shape (m, n_items)
        Non-zero cells are never returned to that row's viewer.
    viewer_penalties : sequence of csr_matrix, each of shape (m, n_items)
        Values subtracted from that row's scores (summed if several).
    block_rows : int, optional
        Query rows per chunk; bounds peak memory at about ``block_rows * n_eligible``
        scores per worker thread on the unfused path (a tile's scores on the fused one).
        Chosen from the catalogue size when omitted: up to 128 rows, or up to 512 where
        the fused path runs without a probe (the compiled step on worker threads, at
        least 16 tiles), each worker getting a chunk.
    num_threads : int
        Worker threads; 0 uses every core this process may run on.
    tile_items : int, optional
        Items per tile of the fused path (factor spaces): each chunk is scored one tile
        at a time and the score matrix is never written. ``None`` sizes tiles to the
        cache and uses the fused path where pruning pays (many blocks per slate slot);
        ``0`` turns it off. Results are the same bit for bit either way.
    stats : dict, optional
        If given, receives ``"cells"`` (query rows times eligible items) and
        ``"scored"`` (the cells the product actually computed: fewer where the fused
        path skipped tiles) and ``"rescored"`` (the candidate cells that survived
        pruning and were rescored exactly), for benchmarks and tests.
    backend : {"auto", "compiled", "numpy"}
        The fused path's selection step: the compiled one (``guardrails.core._tile``,
        built with the package where a C compiler was available), numpy, or the compiled
        one when it was built. Results are the same bit for bit.
    groups : RowGroups, optional
        Viewer groups sharing this call (factor spaces only): ``space`` holds every
        item some group may receive, and each row gets its own group's hard mask and
        penalty (:mod:`guardrails.core._groups`). Each row's slate equals what a call
        on its group's own space returns, bit for bit.

    Returns
    -------
    ids : ndarray of int64, shape (m, N)
        Global item indices, best first, padded with ``-1`` when a row has fewer than
        ``N`` eligible items.
    scores : ndarray, shape (m, N)
        Scores of ``score_dtype``, padded with ``-inf``.
    """
    m = queries.shape[0]
    compiled = _checked_backend(backend, space, groups, m)
    ids = np.full((m, N), PAD_ID, dtype=np.int64)
    scores = np.full((m, N), -np.inf, dtype=score_dtype)
    if stats is not None:
        stats.setdefault("cells", 0)
        stats.setdefault("scored", 0)
        stats.setdefault("rescored", 0)
    if m == 0 or space.n_eligible == 0:
        return ids, scores
    n_pad = space.width * space.n_blocks
    threads = default_num_threads() if num_threads <= 0 else num_threads
    auto_rows = block_rows is None
    if block_rows is None:
        block_rows = _block_rows(n_pad, m, threads)
    call_cols = None
    if call_mask is not None and call_mask.size:
        call_cols = space.pos[call_mask]
        call_cols = call_cols[call_cols >= 0]
    qa = space.augment_queries(queries)
    gt = None if groups is None else group_terms(space, groups)
    penalties = [p for p in viewer_penalties if p is not None and p.nnz]
    masks = [v for v in viewer_masks if v is not None and v.nnz]

    tile = (
        fused_tile_items(space, N, block_rows, tile_items) if isinstance(space, FactorSpace) else 0
    )

    order, start = None, 0
    path_key = (tile, N, compiled is not None)
    # With the compiled selection step on worker threads, over many tiles, the fused path
    # pays even where it skips nothing (see _FUSED_FROM_TILES); otherwise a probe decides.
    probe = tile and tile_items is None and m > block_rows
    many_tiles = tile and space.n_eligible >= _FUSED_FROM_TILES * tile
    if many_tiles and compiled is not None and threads > 1:
        probe = False
        if auto_rows and tile_items is None:
            # Its memory is a tile per worker, not a chunk's scores: take larger chunks
            # (fewer tile steps, larger products), each worker still getting one. The
            # tiles keep their width, so the space keeps one tile index.
            block_rows = max(block_rows, min(_FUSED_BLOCK_ROWS, -(-m // threads)))
    if tile and not probe and not many_tiles and tile_items is None and m <= block_rows:
        # One chunk over a few tiles, too small to probe: the tile steps' fixed costs
        # outweigh what the few tiles could skip (a 25-row call at 10k items took 1.3 ms
        # fused and 0.7 unfused; a share cap's re-fetch, a small cohort's call).
        tile = 0
    if probe and not probe_due(space, path_key):
        tile = 0  # a recent probe on this space found that the fused path does not pay
    if probe and tile:
        # The probe rows go first and keep their slates; they decide the path for the
        # rest (rows are exact on either path, so neither changes the results).
        order, start = probe_order(m)
        qa = qa[order]
        masks = [v[order] for v in masks]
        penalties = [p[order] for p in penalties]
        gt = None if gt is None else gt.permuted(order)
        out_ids, out_scores = ids, scores
        ids, scores = np.full_like(out_ids, PAD_ID), np.full_like(out_scores, -np.inf)

    tally: list[int] | None = None if stats is None else []
    # Few per-viewer penalty cells (a relationship filter's give-backs) are summed once for
    # the call and each chunk takes a slice; many (tens per row) are summed chunk by chunk,
    # on the worker threads.
    terms = None
    n_terms = sum(p.nnz for p in penalties)
    if n_terms <= min(_CALL_TERMS_PER_ROW * m, _CALL_TERMS_MAX):
        terms = CallPenalties.build(
            space,
            penalties,
            m,
            n_pad,
            isinstance(space, FactorSpace),
            call_cols,
            masks,
            gt,
            compiled,
        )
    call = TopkCall(
        space, qa, N, call_cols, masks, penalties, ids, scores, compiled, gt, tally, terms
    )

    def run(lo: int, hi: int, tile: int) -> int:
        return _run_chunk(call, lo, hi, tile)

    scored = 0
    bounds = [(lo, min(m, lo + block_rows)) for lo in range(start, m, block_rows)]
    if order is not None:
        scored, pays = _probe_then_run(
            run, start, bounds, tile, threads, space.n_eligible, compiled
        )
        note_probe(space, path_key, pays)
    elif (len(bounds) == 1 or threads == 1) and tile:
        # Many small products, one per tile: BLAS threads would cost more than they give.
        with blas_single_thread():
            scored += sum(run(lo, hi, tile) for lo, hi in bounds)
    elif len(bounds) == 1 or threads == 1:
        scored += sum(run(lo, hi, tile) for lo, hi in bounds)
    elif bounds:
        with blas_single_thread():
            futures = [shared_pool(threads).submit(run, lo, hi, tile) for lo, hi in bounds]
            scored += sum(f.result() for f in futures)
    if order is not None:
        out_ids[order], out_scores[order] = ids, scores
        ids, scores = out_ids, out_scores
    if stats is not None:
        stats["cells"] = stats.get("cells", 0) + m * space.n_eligible
        stats["scored"] = stats.get("scored", 0) + scored
        stats["rescored"] = stats.get("rescored", 0) + sum(tally or ())
    return ids, scores


def _checked_backend(backend: str, space, groups: RowGroups | None, m: int):
    """The compiled selection step :func:`guarded_topk` uses (``None``: numpy), after
    checking ``backend`` and that ``groups`` fit the space and the ``m`` query rows."""
    compiled = checked_backend(backend)
    if groups is not None and not isinstance(space, FactorSpace):
        raise ValidationError(
            "guarded_topk(groups=...): viewer groups share one call on factor spaces "
            f"only. Got a {type(space).__name__} instead; call once per group."
        )
    if groups is not None and np.shape(groups.of_row) != (m,):
        raise ValidationError(
            "The 'groups' parameter of guarded_topk must give a group for every query "
            f"row ({m}). Got {np.shape(groups.of_row)} instead."
        )
    return compiled


def _block_rows(n_pad: int, m: int, threads: int) -> int:
    """Query rows per chunk for a space of ``n_pad`` (padded) items and ``m`` rows."""
    rows = max(_MIN_BLOCK_ROWS, min(_MAX_BLOCK_ROWS, _CHUNK_CELLS // max(1, n_pad)))
    if n_pad * rows < _SMALL_CHUNK_CELLS:
        # A small space (a cohort's or a share cap's few candidates): per-chunk costs
        # outweigh 128-row products, so take more rows, while every worker still gets a
        # chunk; a call of a few score cells in all is one chunk. Results do not depend
        # on the chunking.
        rows = max(rows, min(_SMALL_CHUNK_CELLS // n_pad, -(-m // threads)))
        if m * n_pad <= _ONE_CHUNK_CELLS:
            rows = max(rows, m)
    elif m <= rows and threads > 1 and m * n_pad > _ONE_CHUNK_CELLS:
        # A call of one chunk's rows but many cells (a viewer group of a hundred rows):
        # split over the workers rather than leave them idle.
        rows = max(_MIN_BLOCK_ROWS, -(-m // threads))
    return rows


def _probe_then_run(run, start, bounds, tile, threads, n_eligible, compiled) -> tuple[int, bool]:
    """Run the probe rows ``[0, start)`` fused, then ``bounds`` on the path they choose.

    While the calling thread runs the probe, the pool's other workers already run the
    first chunks on the fused path, so no core idles while the path is decided. Fused is
    the safe guess with the compiled selection step: with nothing skipped it costs about
    what the unfused path does, where the unfused path costs several times the fused one
    when most of the product is skipped (selecting in numpy, the fused path can cost half
    again as much, so there the workers wait for the probe).
    Rows are exact on either path, so the guess never changes a result. Returns the
    number of score cells computed and whether the fused path paid.
    """
    with blas_single_thread():
        pool = shared_pool(threads) if threads > 1 else None
        futures = []
        if pool is not None and compiled is not None:
            futures = [pool.submit(run, lo, hi, tile) for lo, hi in bounds[: threads - 1]]
        try:
            scored = run(0, start, tile)
            pays = fused_pays(scored, start * n_eligible, compiled is not None)
            tile = tile if pays else 0
            rest = bounds[len(futures) :]
            if pool is None:
                return scored + sum(run(lo, hi, tile) for lo, hi in rest), pays
            futures += [pool.submit(run, lo, hi, tile) for lo, hi in rest]
            return scored + sum(f.result() for f in futures), pays
        finally:
            # The BLAS limit must outlast every chunk still running, even on an error.
            wait(futures)


def _run_chunk(call: TopkCall, lo: int, hi: int, tile_items: int) -> int:
    """Run the query rows ``lo:hi`` of ``call``; return the number of score cells computed.

    With ``tile_items`` (factor spaces), on the fused path (:func:`run_chunk_tiled`).
    """
    space, N, call_cols, groups = call.space, call.N, call.call_cols, call.groups
    if tile_items and isinstance(space, FactorSpace):
        return run_chunk_tiled(call, lo, hi, tile_items)
    r = hi - lo
    q = call.queries[lo:hi]
    S = space.chunk_scores(q)
    W, B = space.width, space.n_blocks
    if call_cols is not None and call_cols.size:
        S[:, call_cols] = -np.inf
    for csr in call.masks:
        rr, cc = chunk_mask_cells(csr, lo, hi, space.pos)
        S[rr, cc] = -np.inf
    exact = isinstance(space, SimilaritySpace)
    cells, lookup, has, forced = call.chunk_penalties(lo, hi, S.shape[1], split=not exact)
    if cells is not None:
        urows, ucols, total = cells
        S[urows, ucols] -= total.astype(S.dtype)
    gmax = None
    if groups is not None:
        gmax = groups.row_boost(lo, hi)
        _apply_groups(S, groups, lo, hi, space.n_eligible)
    if forced is not None:
        # Restoring cells no mask hits: candidates whatever their float32 value (see
        # penalty_terms); -inf here so that they do not raise the pruning bound.
        S[forced[0], forced[1]] = -np.inf

    delta, rel = space.error_bound(q, has, gmax)

    # Block maxima over strided blocks: item c lies in block c % B.
    n_pad = S.shape[1]
    if B >= MIN_BLOCKS_PER_SLOT * N:
        # Block maxima over strided blocks: item c lies in block c % B. The N-th largest
        # block maximum is a lower bound on the N-th largest score.
        M = S.reshape(r, W, B).max(axis=1)
        # NaN or +inf anywhere shows in the maximum (max propagates NaN): rare, sanitise.
        best = M.max()
        if (np.isnan(best) or best == np.inf) and sanitize(S):
            M = S.reshape(r, W, B).max(axis=1)
        t = np.partition(M, B - N, axis=1)[:, B - N].astype(np.float64)
        thr_cmp = threshold(t, delta, rel, S.dtype)
        blk_r, blk_b = np.divmod(np.flatnonzero(M >= thr_cmp[:, None]), B)
        cols = blk_b[:, None] + B * np.arange(W, dtype=np.int64)[None, :]
        vals = S.reshape(-1)[(blk_r * n_pad)[:, None] + cols]
        keep = np.isfinite(vals) & (vals >= thr_cmp[blk_r][:, None])
        # Row of each kept cell from its block's index (indexing a broadcast rows array
        # by the mask is several times slower).
        kb, kw = np.nonzero(keep)
        c_rows, c_cols, c_vals = blk_r[kb], cols[kb, kw], vals[kb, kw]
    else:
        # Few blocks per slate slot (a small catalogue, or a large N): blocks would not
        # prune, so bound the N-th score by a partition of the whole row instead.
        if not np.isfinite(S[~np.isneginf(S)]).all():
            sanitize(S)
        if N < n_pad:
            t = np.partition(S, n_pad - N, axis=1)[:, n_pad - N].astype(np.float64)
        else:
            t = np.full(r, -np.inf)
        thr_cmp = threshold(t, delta, rel, S.dtype)
        flat = np.flatnonzero(S >= thr_cmp[:, None])
        rows, cols = np.divmod(flat, n_pad)
        vals = S.reshape(-1)[flat]
        keep = np.isfinite(vals)
        c_rows, c_cols, c_vals = rows[keep], cols[keep], vals[keep]
    if forced is not None and forced[0].size:
        c_rows = np.concatenate([c_rows, forced[0]])
        c_cols = np.concatenate([c_cols, forced[1]])
        c_vals = np.concatenate([c_vals, np.full(forced[0].size, np.nan, c_vals.dtype)])
    if call.tally is not None:
        call.tally.append(int(c_rows.size))  # list.append: safe from worker threads
    emit(call, lo, hi, c_rows, c_cols, c_vals, exact, lookup)
    return r * space.n_eligible


def _apply_groups(S: np.ndarray, groups: GroupTerms, lo: int, hi: int, n: int) -> None:
    """Each group's dense mask and offset on its rows of a chunk's scores (rows x items)."""
    with np.errstate(over="ignore", invalid="ignore"):
        for g, rr in groups.active(lo, hi):
            whole = rr.size == hi - lo
            blk = S[:, :n] if whole else S[rr, :n]
            off, mask = groups.offsets[g], groups.masks[g]
            if off is not None:
                blk -= off
            if mask is not None:
                blk[:, mask] = -np.inf
            if not whole:
                S[rr, :n] = blk
