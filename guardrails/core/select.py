"""Array selection helpers for slates: cap-aware greedy selection, merges, differences.

Pure numpy on ``(rows, columns)`` id and score arrays (``-1`` pads an id, ``-inf`` its
score); they know share caps only through ``groups`` and ``allowance`` (a
:class:`~guardrails.filters.CapSpec` or anything shaped like one), never policy objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["missing", "merge_slates", "capped_topk", "greedy"]

#: topk(variant, rows, viewer_masks, viewer_penalties, strip, n) -> (ids, scores)
TopK = Callable[[Any, np.ndarray | None, list, list, Any, int], tuple[np.ndarray, np.ndarray]]


def missing(after: np.ndarray, before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and id of every valid id of ``before`` that is not in the same row of ``after``."""
    m = before.shape[0]
    if m == 0 or before.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    big = np.int64(max(int(before.max(initial=0)), int(after.max(initial=0))) + 2)
    rb = np.repeat(np.arange(m, dtype=np.int64), before.shape[1])
    kb = rb * big + (before.ravel() + 1)
    ra = np.repeat(np.arange(m, dtype=np.int64), after.shape[1])
    ka = ra * big + (after.ravel() + 1)
    miss = (before.ravel() >= 0) & ~np.isin(kb, ka)
    return rb[miss], before.ravel()[miss]


def merge_slates(a_ids, a_sc, b_ids, b_sc, N: int):
    """Row-wise merge of two best-first slates into the best ``N`` (score desc, id asc)."""
    ids = np.concatenate([a_ids, b_ids], axis=1)
    sc = np.concatenate([a_sc, b_sc], axis=1)
    valid = ids >= 0
    key_sc = np.where(valid, sc, -np.inf)
    key_id = np.where(valid, ids, np.iinfo(np.int64).max)
    order = np.lexsort((key_id, -key_sc.astype(np.float64)), axis=1)[:, :N]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_sc = np.take_along_axis(sc, order, axis=1)
    pad = np.take_along_axis(valid, order, axis=1)
    out_ids[~pad] = -1
    out_sc[~pad] = -np.inf
    if out_ids.shape[1] < N:
        w = N - out_ids.shape[1]
        out_ids = np.concatenate([out_ids, np.full((ids.shape[0], w), -1, np.int64)], axis=1)
        out_sc = np.concatenate([out_sc, np.full((ids.shape[0], w), -np.inf, sc.dtype)], axis=1)
    return out_ids, out_sc


def capped_topk(topk: TopK, variant, rows, masks, pens, strip, N: int, limit: int, caps):
    """Top-N under share caps: over-fetch, greedy-select, re-fetch the rows left short."""
    n_rows = None
    fetch = min(limit, max(2 * N, N + 8))
    out_ids = out_scores = None
    pending = None  # local row positions still to fill
    capped: list = []
    while True:
        sub = rows if pending is None else (pending if rows is None else rows[pending])
        sm = masks if pending is None else [x[pending] for x in masks]
        spn = pens if pending is None else [x[pending] for x in pens]
        sst = strip if (pending is None or strip is None) else strip[pending]
        ids, scores = topk(variant, sub, sm, spn, sst, fetch)
        if out_ids is None:
            n_rows = ids.shape[0]
            out_ids = np.full((n_rows, N), -1, dtype=np.int64)
            out_scores = np.full((n_rows, N), -np.inf, dtype=scores.dtype)
        sel_ids, sel_scores, skipped = greedy(ids, scores, caps, N)
        local = np.arange(ids.shape[0]) if pending is None else pending
        out_ids[local] = sel_ids
        out_scores[local] = sel_scores
        short = (sel_ids < 0).any(axis=1) & (ids >= 0).all(axis=1)
        if not short.any() or fetch >= limit:
            capped.extend((int(local[r]), it, fi) for r, it, fi in skipped)
            break
        # Rows that filled are final; keep their capped records.
        done = ~short
        capped.extend((int(local[r]), it, fi) for r, it, fi in skipped if done[r])
        pending = local[short]
        fetch = min(limit, fetch * 2)
    return out_ids, out_scores, capped


def greedy(ids: np.ndarray, scores: np.ndarray, caps, N: int):
    """Best-first selection under caps; returns (ids, scores, skipped) with skipped above the last pick."""
    r, F = ids.shape
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    ok = valid.copy()
    if len(caps) == 1:
        _, cap = caps[0]
        g = np.where(valid, cap.groups[safe], -1)
        allow = cap.allowance(N)
        # Rank of every item within its (row, group), in slate order.
        key = np.arange(r, dtype=np.int64)[:, None] * (int(cap.groups.max(initial=0)) + 2) + (g + 1)
        flat = key.ravel()
        order = np.argsort(flat, kind="stable")
        sk = flat[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
        run_start = np.repeat(starts, np.diff(np.r_[starts, sk.size]))
        rank = np.empty_like(flat)
        rank[order] = np.arange(sk.size) - run_start
        rank = rank.reshape(r, F)
        over = (g >= 0) & (rank >= allow)
        ok &= ~over
        over_f = np.where(over, caps[0][0], -1)
    else:
        over_f = np.full((r, F), -1, dtype=np.int64)
        for row in range(r):
            counts = [dict() for _ in caps]
            for c in range(F):
                if not valid[row, c]:
                    continue
                it = int(ids[row, c])
                blocked = -1
                for j, (fi, cap) in enumerate(caps):
                    gg = int(cap.groups[it])
                    if gg >= 0 and counts[j].get(gg, 0) >= cap.allowance(N):
                        blocked = fi
                        break
                if blocked >= 0:
                    ok[row, c] = False
                    over_f[row, c] = blocked
                    continue
                for j, (_, cap) in enumerate(caps):
                    gg = int(cap.groups[it])
                    if gg >= 0:
                        counts[j][gg] = counts[j].get(gg, 0) + 1
    pos = np.cumsum(ok, axis=1) - 1
    take = ok & (pos < N)
    out_ids = np.full((r, N), -1, dtype=np.int64)
    out_scores = np.full((r, N), -np.inf, dtype=scores.dtype)
    rr, cc = np.nonzero(take)
    out_ids[rr, pos[rr, cc]] = ids[rr, cc]
    out_scores[rr, pos[rr, cc]] = scores[rr, cc]
    # Skipped items that ranked above the last selected item of the row (or anywhere if short).
    last = np.where(take.any(axis=1), F - 1 - np.argmax(take[:, ::-1], axis=1), -1)
    full = take.sum(axis=1) >= N
    sr, sc = np.nonzero(over_f >= 0)
    keep = ~full[sr] | (sc < last[sr])
    skipped = [
        (int(a), int(ids[a, b]), int(over_f[a, b])) for a, b in zip(sr[keep], sc[keep], strict=True)
    ]
    return out_ids, out_scores, skipped
