"""What the kernel's two scoring paths share: a chunk's cells, safe thresholds, exact rescoring.

Both the unfused path (:func:`guardrails.core.kernel.guarded_topk` scoring a whole chunk)
and the fused, pruned one (:mod:`guardrails.core._fused`) prune with float32 scores and a
threshold lowered by twice the proven rounding bound (:func:`threshold`, :func:`lower`),
then hand every surviving candidate to :func:`emit`, which rescores it exactly, in
float64 and in an order that does not depend on the batch. That is why both paths return
the same slates bit for bit, and why a batch returns what single calls return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..exceptions import ValidationError

__all__ = [
    "EPS32",
    "EMPTY_F32",
    "EMPTY_F64",
    "F32_MAX",
    "MIN_BLOCKS_PER_SLOT",
    "PAD_ID",
    "TopkCall",
    "PairLookup",
    "chunk_cells",
    "chunk_mask_cells",
    "cell_positions",
    "penalty_cells",
    "penalty_terms",
    "CallPenalties",
    "forced_candidates",
    "lower",
    "emit",
    "sanitize",
    "column_norms",
    "threshold",
    "lane_sum",
    "checked_backend",
    "compiled_step",
]

EPS32: float = float(np.finfo(np.float32).eps)
F32_MAX: float = float(np.finfo(np.float32).max)

try:  # optional: built with the package where a C compiler was available (setup.py)
    from . import _tile  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _tile = None


def compiled_step():
    """The compiled module (``guardrails.core._tile``), or ``None`` where it was not built."""
    return _tile


def checked_backend(backend: str, where: str = "guarded_topk"):
    """The compiled module ``backend`` names for ``where`` (``None``: numpy), or a
    ``ValidationError`` for an unknown backend or a compiled one that was not built."""
    if backend not in ("auto", "compiled", "numpy"):
        raise ValidationError(
            f"The 'backend' parameter of {where} must be a str among "
            f"{{'auto', 'compiled', 'numpy'}}. Got {backend!r} instead."
        )
    if backend == "compiled" and _tile is None:
        raise ValidationError(
            f"{where}(backend='compiled'): the compiled selection step "
            "(guardrails.core._tile) was not built with this installation; "
            "use backend='numpy' or 'auto'."
        )
    return _tile if backend != "numpy" else None


#: Item id used to pad batch slates that have fewer than ``N`` eligible items.
PAD_ID = -1
# Block pruning pays only when there are several blocks per slate slot.
MIN_BLOCKS_PER_SLOT = 4


@dataclass(frozen=True, eq=False)
class TopkCall:
    """One top-``N`` call as each of its chunks of query rows sees it.

    A chunk ``[lo, hi)`` reads the call's rows ``queries[lo:hi]`` and ``masks`` and
    ``penalties`` rows, and writes its slates to rows ``lo:hi`` of ``ids_out`` and
    ``scores_out``; chunks share nothing else, so worker threads run them apart.

    Attributes
    ----------
    space : FactorSpace or SimilaritySpace
        The eligible items.
    queries : ndarray or csr_matrix, shape (m, ...)
        Every query row of the call, as the space scores them (``augment_queries``).
    N : int
        Slate length.
    call_cols : ndarray of int64 or None
        Compact columns masked for the whole call.
    masks, penalties : sequence of csr_matrix, each of shape (m, n_items)
        Per-viewer masks and penalties (those with cells only).
    ids_out, scores_out : ndarray, shape (m, N)
        The slates, filled chunk by chunk.
    compiled : module or None
        The compiled selection step of the fused path (``guardrails.core._tile``).
    groups : GroupTerms or None
        Viewer groups sharing the call (:mod:`guardrails.core._groups`).
    tally : list of int or None
        If given, each chunk appends the number of candidates it rescored exactly.
    terms : CallPenalties or None
        ``penalties`` summed per cell for the whole call (:meth:`chunk_penalties`).
    """

    space: Any
    queries: Any
    N: int
    call_cols: np.ndarray | None
    masks: Sequence[sp.csr_matrix]
    penalties: Sequence[sp.csr_matrix]
    ids_out: np.ndarray
    scores_out: np.ndarray
    compiled: Any = None
    groups: Any = None
    tally: list[int] | None = None
    terms: CallPenalties | None = None

    def chunk_penalties(self, lo: int, hi: int, n_cols: int, split: bool):
        """:func:`penalty_terms` of rows ``lo:hi``, with the restored cells (``split``)
        already past :func:`forced_candidates`: the slice of the call's
        :class:`CallPenalties` where it has one built for the same ``n_cols`` and
        ``split``."""
        t = self.terms
        if t is not None and t.split == split and t.n_cols == n_cols:
            return t.chunk(lo, hi)
        cells, lookup, has, forced = penalty_terms(
            self.space, lo, hi, self.penalties, n_cols, split=split
        )
        if forced is not None:
            forced = forced_candidates(
                forced,
                self.call_cols,
                self.masks,
                lo,
                hi,
                self.space.pos,
                n_cols,
                self.groups,
                self.space.ids,
                self.compiled,
            )
        return cells, lookup, has, forced


class PairLookup:
    """Sorted ``row * n_cols + col`` keys of a chunk's sparse cells, for exact rescoring.

    ``ordered=True``: the cells already come sorted by row, then column.
    """

    def __init__(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        vals: np.ndarray,
        n_cols: int,
        *,
        ordered: bool = False,
    ):
        keys = rows * n_cols + cols
        if ordered:
            self.keys, self.vals = keys, vals
        else:
            order = np.argsort(keys, kind="stable")
            self.keys, self.vals = keys[order], vals[order]
        self.n_cols = n_cols

    def get(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.zeros(rows.shape[0], dtype=np.float64)
        if self.keys.size == 0 or rows.size == 0:
            return out
        keys = rows * self.n_cols + cols
        at = np.searchsorted(self.keys, keys)
        at_c = np.minimum(at, self.keys.size - 1)
        hit = self.keys[at_c] == keys
        out[hit] = self.vals[at_c[hit]]
        return out


def chunk_cells(csr: sp.csr_matrix, lo: int, hi: int, pos: np.ndarray):
    """Rows (local), compact columns and values of ``csr[lo:hi]`` that are eligible.

    ``np.take`` rather than ``pos[indices]``: by int32 indices (scipy's usual) it gathers
    several times faster than fancy indexing, with the same result."""
    start, stop = csr.indptr[lo], csr.indptr[hi]
    counts = np.diff(csr.indptr[lo : hi + 1])
    rows = np.repeat(np.arange(hi - lo, dtype=np.int64), counts)
    cols = np.take(pos, csr.indices[start:stop])
    vals = csr.data[start:stop]
    keep = cols >= 0
    return rows[keep], cols[keep], vals[keep]


def chunk_mask_cells(csr: sp.csr_matrix, lo: int, hi: int, pos: np.ndarray):
    """Rows (local) and compact columns of ``csr[lo:hi]``'s stored cells that are eligible:
    :func:`chunk_cells` without the values. Where most cells fall outside the space (a
    small cohort's), each kept cell's row is found from the row offsets instead of
    expanding a row per stored cell."""
    start, stop = int(csr.indptr[lo]), int(csr.indptr[hi])
    cols = np.take(pos, csr.indices[start:stop])
    keep = cols >= 0
    hit = np.flatnonzero(keep)
    if 4 * hit.size >= cols.size:
        counts = np.diff(csr.indptr[lo : hi + 1])
        rows = np.repeat(np.arange(hi - lo, dtype=np.int64), counts)
        return rows[keep], cols[keep]
    rows = np.searchsorted(csr.indptr[lo + 1 : hi + 1], start + hit, side="right")
    return rows.astype(np.int64), cols[hit]


def penalty_cells(space, lo: int, hi: int, penalties, n_cols: int):
    """``(rows, compact cols, float64 totals)`` of a chunk's penalised cells, or None."""
    if not penalties:
        return None
    parts = [chunk_cells(csr, lo, hi, space.pos) for csr in penalties]
    rr = np.concatenate([p[0] for p in parts])
    cc = np.concatenate([p[1] for p in parts])
    vv = np.concatenate([p[2] for p in parts]).astype(np.float64)
    if not rr.size:
        return None
    # Sum penalties on the same cell once, in float64, so exact rescoring and the
    # pruning pass agree on the cell's value.
    keys = rr * n_cols + cc
    if keys.size == 1 or (keys[1:] > keys[:-1]).all():
        # Already sorted and one value per cell (one canonical matrix): no sort. ``+ 0.0``
        # is bincount's sum of one value (it turns -0.0 into 0.0, as bincount does).
        return rr, cc, vv + 0.0
    uniq, inv = np.unique(keys, return_inverse=True)
    total = np.bincount(inv, weights=vv, minlength=uniq.size)
    return uniq // n_cols, uniq % n_cols, total


def penalty_terms(space, lo: int, hi: int, penalties, n_cols: int, split: bool = False):
    """A chunk's per-viewer penalties, as every path of the kernel uses them.

    Returns ``(cells, lookup, has, forced)``: the :func:`penalty_cells` triple (or None)
    that pruning subtracts in float32, a :class:`PairLookup` of every penalised cell for
    :func:`emit`'s exact rescoring (or None), whether each row has penalised cells (their
    float32 subtraction rounds: ``space.error_bound(q, has)``), and, with ``split``,
    the cells whose viewer penalty is negative or NaN as ``(rows, cols)`` (or None).

    ``split`` (factor spaces): a negative cell restores part of a folded penalty (as
    FollowGraph's followers get), so its float32 value carries the rounding of that
    penalty, however large; it is left out of ``cells``, and the pruning paths take it
    as a candidate whatever its float32 value (:func:`forced_candidates`), so the
    rounding bound of every other cell stays relative to its own value.
    """
    r = hi - lo
    cells = penalty_cells(space, lo, hi, penalties, n_cols)
    has = np.zeros(r, dtype=bool)
    if cells is None:
        return None, None, has, None
    urows, ucols, total = cells
    has[urows] = True
    lookup = PairLookup(urows, ucols, total, n_cols)
    forced = None
    if split:
        neg = ~(total >= 0)
        if neg.any():
            forced = (urows[neg], ucols[neg])
            cells = (urows[~neg], ucols[~neg], total[~neg])
    return cells, lookup, has, forced


@dataclass(frozen=True, eq=False)
class CallPenalties:
    """A call's per-viewer penalties, summed per cell once for all its rows.

    The same cells and float64 totals :func:`penalty_terms` computes chunk by chunk
    (:func:`penalty_cells` sums a cell's penalties in the same order either way), sorted
    by row and then column, so that each chunk of rows is a slice (:meth:`chunk`).
    With ``split``, the restored cells (negative or NaN totals) are tested against the
    call's masks once (:func:`forced_candidates`): ``forced_ok`` marks those no mask hits.
    A chunk then costs a few slices where it cost a sort, a sum and a mask lookup per
    penalty matrix.
    """

    rows: np.ndarray
    cols: np.ndarray
    total: np.ndarray
    at: np.ndarray
    n_cols: int
    split: bool
    neg: np.ndarray | None
    forced_ok: np.ndarray | None

    @classmethod
    def build(
        cls,
        space,
        penalties,
        m: int,
        n_cols: int,
        split: bool,
        call_cols,
        masks,
        groups,
        compiled=None,
    ) -> CallPenalties | None:
        cells = penalty_cells(space, 0, m, penalties, n_cols)
        if cells is None:
            return None
        rows, cols, total = cells
        at = np.searchsorted(rows, np.arange(m + 1, dtype=np.int64))
        neg = forced_ok = None
        if split:
            neg = ~(total >= 0)
            if neg.any():
                forced_ok = np.zeros(rows.size, dtype=bool)
                # The mask test reads the masks' cells of the rows holding restored cells:
                # _UNMASK_ROWS such rows at a time, so its memory stays that of a few
                # chunks (rows without restored cells cost nothing).
                cells = np.flatnonzero(neg)
                nr = rows[cells]
                firsts = np.flatnonzero(np.r_[True, nr[1:] != nr[:-1]])
                for k in range(0, firsts.size, _UNMASK_ROWS):
                    a = int(firsts[k])
                    b = int(firsts[k + _UNMASK_ROWS]) if k + _UNMASK_ROWS < firsts.size else nr.size
                    sel = cells[a:b]
                    forced_ok[sel] = _unmasked(
                        rows[sel],
                        cols[sel],
                        call_cols,
                        masks,
                        0,
                        space.pos,
                        n_cols,
                        groups,
                        space.ids,
                        compiled,
                    )
            else:
                neg = None
        return cls(rows, cols, total, at, n_cols, split, neg, forced_ok)

    def chunk(self, lo: int, hi: int):
        """:func:`penalty_terms` of rows ``lo:hi``, restored cells past
        :func:`forced_candidates` (chunk-local rows)."""
        a, b = int(self.at[lo]), int(self.at[hi])
        has = np.zeros(hi - lo, dtype=bool)
        if a == b:
            return None, None, has, None
        urows, ucols, total = self.rows[a:b] - lo, self.cols[a:b], self.total[a:b]
        has[urows] = True
        lookup = PairLookup(urows, ucols, total, self.n_cols, ordered=True)
        cells = (urows, ucols, total)
        forced = None
        if self.neg is not None and self.forced_ok is not None:
            neg = self.neg[a:b]
            if neg.any():
                ok = self.forced_ok[a:b]
                forced = (urows[ok], ucols[ok])
                cells = (urows[~neg], ucols[~neg], total[~neg])
        return cells, lookup, has, forced


# Rows holding restored cells per block of CallPenalties' mask test (the kernel's largest
# chunks).
_UNMASK_ROWS = 512


def forced_candidates(
    forced, call_cols, masks, lo, hi, pos, n_cols, groups=None, ids=None, compiled=None
):
    """The cells of ``forced`` (local rows, compact cols) that no mask of the chunk hits.

    The same test on every path (call mask, per-viewer masks, viewer groups' masks), so
    the fused and unfused paths rescore the same forced cells. With the space's ``ids``
    and the ``compiled`` step, each cell is looked up in its mask row in C.
    """
    rows, cols = forced
    ok = _unmasked(rows, cols, call_cols, masks, lo, pos, n_cols, groups, ids, compiled)
    return rows[ok], cols[ok]


def _unmasked(
    rows, cols, call_cols, masks, lo, pos, n_cols, groups, ids=None, compiled=None
) -> np.ndarray:
    """Whether no mask hits each cell ``(lo + rows[i], cols[i])``: :func:`forced_candidates`."""
    ok = np.ones(rows.size, dtype=bool)
    if call_cols is not None and call_cols.size:
        ok &= ~np.isin(cols, call_cols)
    items = None
    if masks and ids is not None and compiled is not None:
        items = np.ascontiguousarray(ids[cols], dtype=np.int64)
    for csr in masks:
        if items is not None and _scan_pays(csr.indptr, lo + rows):
            hit = np.zeros(rows.size, dtype=bool)
            compiled.stored_cells(
                csr.indptr, csr.indices, np.ascontiguousarray(lo + rows, np.int64), items, hit
            )
            ok &= ~hit
            continue
        ok &= ~_stored(csr, lo, rows, cols, pos, n_cols)
    if groups is not None:
        of = groups.of_row[lo + rows]
        for g in np.unique(of).tolist():
            mask = groups.masks[g]
            if mask is not None:
                sel = of == g
                ok[sel] &= ~mask[cols[sel]]
    return ok


def cell_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the stored cells of ``rows`` of a CSR matrix lie in its ``indices`` and
    ``data`` (int64, row by row in the order of ``rows``), and how many each row holds:
    a few rows' cells without slicing the matrix (scipy's row indexing costs a pass
    over its arguments and a new matrix)."""
    rows = np.asarray(rows, dtype=np.int64)
    start = indptr[rows].astype(np.int64)
    counts = indptr[rows + 1].astype(np.int64) - start
    total = int(counts.sum())
    at = np.arange(total, dtype=np.int64) + np.repeat(start - (np.cumsum(counts) - counts), counts)
    return at, counts


def _scan_pays(indptr: np.ndarray, rows: np.ndarray) -> bool:
    """Whether the compiled step's row scan (``stored_cells``: each cell reads its row's
    mask cells) reads at most :data:`_SCAN_REREADS` times the cells :func:`_stored` reads
    (each row's once): false only where many restored cells share long mask rows."""
    lengths = indptr[rows + 1].astype(np.int64) - indptr[rows]
    runs = np.ones(rows.size, dtype=bool)
    runs[1:] = rows[1:] != rows[:-1]
    return int(lengths.sum()) <= _SCAN_REREADS * int(lengths[runs].sum()) + 4096


# See _scan_pays: a compiled comparison costs about a twentieth of what _stored's numpy
# passes cost per cell read.
_SCAN_REREADS = 16


def _stored(csr: sp.csr_matrix, lo: int, rows, cols, pos, n_cols: int) -> np.ndarray:
    """Whether ``csr`` stores each cell ``(lo + rows[i], item of compact column cols[i])``.

    Reads only the rows that hold such cells (restored cells are few; a chunk's mask
    cells are many).
    """
    if not rows.size:
        return np.zeros(0, dtype=bool)
    ur, inv = np.unique(rows, return_inverse=True)
    at, counts = cell_positions(csr.indptr, lo + ur)
    if not at.size:
        return np.zeros(rows.size, dtype=bool)
    mc = np.take(pos, np.take(csr.indices, at))
    keys = np.repeat(np.arange(ur.size, dtype=np.int64), counts) * n_cols + mc
    return _among(inv.reshape(-1) * n_cols + cols, keys[mc >= 0])


def _among(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.isin(keys, table)`` for a few ``keys`` and many ``table`` entries: a binary
    search in the table (sorted once if it is not already: a chunk's mask cells come row
    by row), where ``np.isin`` would sort or hash both (about 1 ms per chunk of 9,000 mask
    cells against a few dozen restored cells)."""
    if not keys.size or not table.size:
        return np.zeros(keys.shape, dtype=bool)
    if table.size > 1 and not (table[1:] >= table[:-1]).all():
        table = np.sort(table)
    at = np.minimum(np.searchsorted(table, keys), table.size - 1)
    return table[at] == keys


def lane_sum(p: np.ndarray) -> np.ndarray:
    """Row sums of the float64 products ``p`` (shape (c, d)) in one fixed order.

    Eight lanes: lane ``j`` adds the products ``j, j + 8, j + 16, ...`` in turn (zeros
    pad ``d`` to a multiple of 8), then ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``.
    Every exact score is summed this way, on every path: the compiled rescoring
    (``guardrails.core._tile.rescore_top``) does the same float64 operations in the same
    order, so both give the same bits, and a score never depends on what else is rescored
    with it.
    """
    c, d = p.shape
    if d == 0:
        return np.zeros(c, dtype=np.float64)
    lanes = -(-d // 8)
    if d != 8 * lanes:
        p = np.concatenate([p, np.zeros((c, 8 * lanes - d), dtype=np.float64)], axis=1)
    p = p.reshape(c, lanes, 8)
    r = p[:, 0, :].copy()
    for k in range(1, lanes):
        r += p[:, k, :]
    return ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))


def emit(call: TopkCall, lo: int, hi: int, c_rows, c_cols, vals, exact, lookup) -> None:
    """Rescore the candidates of rows ``lo:hi`` exactly, keep the finite ones, write each
    row's top ``N`` to the call's output.

    ``c_rows`` are chunk-local rows, ``c_cols`` compact columns; with ``exact`` the
    float32 ``vals`` are already exact (similarity spaces). With the call's ``groups``
    (:class:`~._groups.GroupTerms`), each row's candidates are rescored with its own
    group's penalty instead of the space's folded one.
    """
    space, groups = call.space, call.groups
    if exact:
        e = vals.astype(np.float64)
    elif groups is not None and call.compiled is not None:
        # Each row's own group's folded penalty, per cell (0 where its group has none).
        of = groups.of_row[lo + c_rows]
        neg = np.zeros(np.size(c_rows), dtype=np.float32)
        for g in np.unique(of).tolist():
            if groups.negs[g] is not None:
                sel = of == g
                neg[sel] = groups.negs[g][c_cols[sel]]
        _emit_compiled(call, lo, hi, c_rows, c_cols, lookup, neg)
        return
    elif groups is not None:
        e = space.exact_scores(call.queries[lo:hi], c_rows, c_cols, fold=False)
        of = groups.of_row[lo + c_rows]
        for g in np.unique(of).tolist():
            neg = groups.negs[g]
            if neg is not None:
                sel = of == g
                e[sel] += neg[c_cols[sel]]
        if lookup is not None:
            e -= lookup.get(c_rows, c_cols)
        finite = np.abs(e) <= F32_MAX  # False for NaN and inf too
        c_rows, c_cols, e = c_rows[finite], c_cols[finite], e[finite]
    elif call.compiled is not None:
        _emit_compiled(call, lo, hi, c_rows, c_cols, lookup)
        return
    else:
        e = space.exact_scores(call.queries[lo:hi], c_rows, c_cols)
        if lookup is not None:
            e -= lookup.get(c_rows, c_cols)
        finite = np.abs(e) <= F32_MAX  # False for NaN and inf too
        c_rows, c_cols, e = c_rows[finite], c_cols[finite], e[finite]
    g_ids = space.ids[c_cols]
    order = np.lexsort((g_ids, -e, c_rows))
    c_rows, g_ids, e = c_rows[order], g_ids[order], e[order]
    starts = np.searchsorted(c_rows, np.arange(hi - lo))
    rank = np.arange(c_rows.size) - starts[c_rows]
    take = rank < call.N
    call.ids_out[lo + c_rows[take], rank[take]] = g_ids[take]
    call.scores_out[lo + c_rows[take], rank[take]] = e[take]


def _emit_compiled(call: TopkCall, lo: int, hi: int, c_rows, c_cols, lookup, cell_neg=None):
    """:func:`emit` of a factor space's candidates by the compiled step: the same exact
    scores (:func:`lane_sum`'s order), the same finite test and the same order, one pass.
    ``cell_neg`` (float32, one per cell): viewer groups' folded penalties, added in place
    of the space's."""
    space, N = call.space, call.N
    r = hi - lo
    c_rows = np.ascontiguousarray(c_rows, dtype=np.int64)
    c_cols = np.ascontiguousarray(c_cols, dtype=np.int64)
    # The chunk's penalised cells go to the compiled step as keys, looked up there.
    keys = None if lookup is None else np.ascontiguousarray(lookup.keys, dtype=np.int64)
    vals = None if lookup is None else np.ascontiguousarray(lookup.vals, dtype=np.float64)
    neg = EMPTY_F32 if space.neg_penalty is None else space.neg_penalty
    if cell_neg is not None:
        neg = np.ascontiguousarray(cell_neg, dtype=np.float32)
    ids = np.empty((r, N), dtype=np.int64)
    scores = np.empty((r, N), dtype=np.float64)
    counts = np.empty(r, dtype=np.int64)
    call.compiled.rescore_top(
        call.queries[lo:hi],
        space.item_rows,
        space.ids,
        neg,
        c_rows,
        c_cols,
        EMPTY_F64,
        ids,
        scores,
        counts,
        cell_neg is not None,
        keys,
        vals,
        0 if lookup is None else lookup.n_cols,
    )
    take = np.arange(N) < counts[:, None]
    call.ids_out[lo:hi][take] = ids[take]
    call.scores_out[lo:hi][take] = scores[take]


#: Empty arrays: the compiled step's "none" for an optional float64 or float32 buffer.
EMPTY_F64 = np.zeros(0, dtype=np.float64)
EMPTY_F32 = np.zeros(0, dtype=np.float32)


def column_norms(ft: np.ndarray, rows: int, n: int) -> np.ndarray:
    """float64 Euclidean norms of ``ft[:rows, :n]``'s columns, a slice of columns at a time.

    No float64 copy of the whole matrix (at 10M items x 64 factors that copy and its
    square alone are 10 GB).
    """
    out = np.empty(n, dtype=np.float64)
    step = 1 << 16
    for lo in range(0, n, step):
        part = ft[:rows, lo : min(n, lo + step)].astype(np.float64)
        out[lo : lo + part.shape[1]] = np.sqrt((part * part).sum(axis=0))
    return out


def sanitize(S: np.ndarray) -> bool:
    """Overflowed or NaN scores can never be served: make them ``-inf``. Rare path."""
    bad = ~np.isfinite(S) & ~np.isneginf(S)
    S[bad] = -np.inf
    return bool(bad.any())


def lower(t: np.ndarray, delta: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """float64 pruning thresholds: no finite cell whose exact score can reach the row's
    ``N``-th exact score is below them.

    ``t`` is a row's ``N``-th largest float32 value (or a lower bound on it: block
    maxima), and every cell's float32 value ``v`` is within ``delta + rel * |v|`` of its
    exact score (``space.error_bound``). ``v - delta - rel |v|`` grows with ``v``, so the
    ``N``-th exact score is at least ``L = t - delta - rel |t|``; a cell can reach it only
    if ``v + delta + rel |v| >= L``, which holds for every ``v >= L - delta - 2 rel |L|``
    (``rel <= 1/2``). With ``rel = 0``: ``t - 2 delta``.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        low = t - delta - rel * np.abs(t)
        thr = low - delta - 2.0 * rel * np.abs(low)
    thr[~np.isfinite(thr)] = -np.inf
    return thr


def threshold(t: np.ndarray, delta: np.ndarray, rel: np.ndarray, dtype) -> np.ndarray:
    """:func:`lower`, rounded down to ``dtype``; no finite candidate above it is lost."""
    thr = lower(t, delta, rel)
    return thr if dtype == np.float64 else _down(thr)


def _down(thr: np.ndarray) -> np.ndarray:
    """float64 thresholds rounded down to float32, so a float32 comparison never excludes."""
    t32 = thr.astype(np.float32)
    over = t32.astype(np.float64) > thr
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32
