"""Executing a compiled policy: one call's slates, counters and explanations.

A call groups its viewers by what applies to them (holdback, cohorts), runs the kernel
once per group on the matching candidate space (:class:`~._compiled.Variant`) or, for
groups whose first calls are alike and with :data:`SHARED_CALLS` on, once for several
groups on a space they share (:class:`SharedCall`, same slates bit for bit), applies
share caps, and when asked recomputes the full-enforcement and unguarded slates to
record decisions. Per-call compiled viewer state lives in one :class:`CallCache`, so
the served, shadow and audit slates compile each filter's viewer parts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..core.kernel import RowGroups
from ..core.plan import Action
from ..core.select import TopK, capped_topk, merge_slates, missing
from ..core.threads import blas_single_thread
from ..filters.base import ViewerBatch
from ._decisions import (
    Decision,
    DecisionCounters,
    Explanation,
    FilterVerdict,
    attribute_many,
    cap_hits,
    reason_of,
    slate_decisions,
)

if TYPE_CHECKING:
    from ._compiled import CompiledPolicy, Variant

__all__ = ["CallCache", "Slate", "SharedCall", "run", "explain"]

#: How a batch's viewer groups reach the kernel: ``"off"``, one call per group;
#: ``"auto"``, groups whose first calls are alike share one call where the cost model
#: says it pays (:func:`_shared_first_calls`); ``"always"``, every such group (tests).
#: Slates are the same bit for bit either way. Off by default: at 10k items the calls it
#: saves cost about 0.4-1 ms each of a ~300 ms batch (the small groups' cost is mostly
#: per row, and a cohort with a small space, such as minors', is cheaper alone), and
#: side-by-side runs on the shared two-core machine did not measure it faster (see
#: benchmarks/README.md, "Viewer groups in one kernel call").
SHARED_CALLS = "off"
# A group joins a shared call when scoring its rows against the shared space's extra
# items (and the others' rows against the items it adds) costs at most this many score
# cells: about the fixed cost of one kernel call (0.4-1 ms measured at 10k items x 64
# factors, where a cell costs 5-9 ns).
_SHARED_EXTRA_CELLS = 1 << 16


@dataclass(eq=False)
class CallCache:
    """Per-call compiled viewer state, shared by the served, shadow and audit slates."""

    viewers: ViewerBatch
    parts: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    strips: dict = field(default_factory=dict)
    held: np.ndarray | None = None


@dataclass(eq=False)
class Slate:
    """One computed slate and which filters were active for each of its rows."""

    ids: np.ndarray
    scores: np.ndarray
    on: np.ndarray  # bool (m, n_filters): filter active for the row
    capped: list  # (row, item, filter index)

    def acts(self, r: int) -> tuple[int, ...]:
        return tuple(np.flatnonzero(self.on[r]).tolist())


def run(
    cp: CompiledPolicy,
    viewers: ViewerBatch,
    topk: TopK,
    N: int,
    limit: int,
    *,
    record: bool = False,
    counters: DecisionCounters | None = None,
    snapshot_version: str | None = None,
    query_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[Decision, ...], dict]:
    """Serve one batch: group viewers, run the kernel per variant, apply caps.

    Parameters
    ----------
    viewers : ViewerBatch
    topk : callable
        ``topk(variant, rows, viewer_masks, viewer_penalties, strip, n)`` runs the
        kernel for the batch rows ``rows`` (``None``: all) with ``n`` columns.
    N : int
        Slate length (columns of the result).
    limit : int
        Most columns ``topk`` can return (the number of candidates).
    record : bool
        Also compute the unguarded slate and return per-item decisions.

    Returns
    -------
    ids, scores : ndarrays, shape (m, N)
    decisions : tuple of Decision
    info : dict
        Per-call counts (the same that go to ``counters``).
    """
    # One BLAS limit for the whole batch rather than one per kernel call: each of the
    # groups' calls would otherwise set and restore it (milliseconds each, on the BLAS
    # control thread). The kernel's pool supplies the parallelism either way.
    with blas_single_thread():
        return _run(cp, viewers, topk, N, limit, record, counters, snapshot_version, query_ids)


def _run(cp, viewers, topk, N, limit, record, counters, snapshot_version, query_ids):
    cache = CallCache(viewers)
    surface = viewers.surface
    enf, sh = cp.active(surface)
    hb = cp.policy.holdback
    held_names = set(hb.filters) if hb is not None else set()
    if hb is not None and any(cp.policy.settings[i].name in held_names for i in enf):
        cache.held = hb.held(viewers.userids, viewers.size)
    served = build_slate(cp, cache, enf, topk, N, limit, honour_holdback=True)
    counts: dict[str, int] = {
        "calls": 1,
        "rows": viewers.size,
        "padded": int((served.ids < 0).sum()),
    }
    count(cp, cache, enf + sh, served, counts)
    decisions: list[Decision] = []
    pv = cp.policy.version
    would_mode = "shadow" if sh else "holdback"
    if sh or (cache.held is not None and cache.held.any()):
        full = build_slate(cp, cache, enf + sh, topk, N, limit, honour_holdback=False)
        rr, ii = missing(full.ids, served.ids)
        bf, ba = attribute_many(cp, cache, full, rr, ii)
        hits = cap_hits(cp, full, rr, ii)
        capped_set = {(r, it): fi for r, it, fi in full.capped}
        capped_set.update(
            {(int(r), int(it)): int(h) for r, it, h in zip(rr, ii, hits, strict=True) if h >= 0}
        )
        for i, strip in cache.strips.items():
            if strip is not None:
                for r in np.flatnonzero(np.diff(strip.indptr) > 0).tolist():
                    for it in ii[rr == r].tolist():
                        capped_set.setdefault((r, it), i)
        for j in range(rr.size):
            fi = int(bf[j]) if ba[j] > 0 else capped_set.get((int(rr[j]), int(ii[j])), -1)
            if fi >= 0:
                key = f"{cp.policy.settings[fi].name}/would_remove"
                counts[key] = counts.get(key, 0) + 1
        if record:
            decisions.extend(
                slate_decisions(
                    cp,
                    cache,
                    served.ids,
                    full,
                    pv,
                    snapshot_version,
                    surface,
                    mode=would_mode,
                    query_ids=query_ids,
                )
            )
    if record:
        base = build_slate(cp, cache, (), topk, N, limit, honour_holdback=False)
        decisions.extend(
            slate_decisions(
                cp,
                cache,
                base.ids,
                served,
                pv,
                snapshot_version,
                surface,
                mode="enforce",
                query_ids=query_ids,
            )
        )
    if counters is not None:
        counters.add(counts)
    return served.ids, served.scores, tuple(decisions), counts


def build_slate(
    cp: CompiledPolicy,
    cache: CallCache,
    active: tuple[int, ...],
    topk: TopK,
    N: int,
    limit: int,
    *,
    honour_holdback: bool,
) -> Slate:
    m = cache.viewers.size
    held = cache.held if honour_holdback else None
    names = [s.name for s in cp.policy.settings]
    hb_set = set(cp.policy.holdback.filters) if cp.policy.holdback is not None else set()
    with_tables = [i for i in active if cp.filters[i].table is not None]
    cols = []
    if held is not None:
        cols.append(held.astype(np.int64))
    for i in with_tables:
        cols.append(cp.cached_groups(cache, i))
    if cols and m > 1:
        groups = group_rows(cols)
    else:
        groups = [
            (
                None,
                np.array([c[0] for c in cols], dtype=np.int64)
                if cols and m
                else np.zeros(len(cols), dtype=np.int64),
            )
        ]
    ids = np.full((m, N), -1, dtype=np.int64)
    scores = None
    on = np.zeros((m, len(cp.policy.filters)), dtype=bool)
    capped: list = []
    take = GroupRows(groups)
    plans: list[_GroupPlan] = []
    for k, (rows, key) in enumerate(groups):
        off = 0
        is_held = False
        if held is not None:
            is_held = bool(key[0]) if m else False
            off = 1
        act = tuple(i for i in active if not (is_held and names[i] in hb_set))
        cohort = []
        for j, i in enumerate(with_tables):
            g = int(key[off + j]) if m else -1
            if g >= 0 and i in act:
                cohort.append((i, g))
        variant = cp.variant(act, tuple(cohort))
        masks, pens = [], []
        strip = None
        for i in act:
            for p in cp.cached_parts(cache, i):
                if p.viewer_mask is not None:
                    masks.append(take(p.viewer_mask, k))
                if p.viewer_penalty is not None:
                    pens.append(take(p.viewer_penalty, k))
            s = cp.cached_strip(cache, i)
            if s is not None:
                s = take(s, k)
                strip = s if strip is None else strip + s
        caps = [(i, cp.filters[i].caps) for i in act if cp.filters[i].caps is not None]
        plans.append(_GroupPlan(k, rows, act, tuple(cohort), variant, masks, pens, strip, caps))
    first: dict[int, _Prefetched] = {}
    if SHARED_CALLS != "off" and len(plans) > 1 and getattr(topk, "shares_groups", False):
        first = _shared_first_calls(cp, cache, plans, take, topk, N, limit)
    for plan in plans:
        k, rows, act, variant = plan.k, plan.rows, plan.act, plan.variant
        masks, pens, strip, caps = plan.masks, plan.pens, plan.strip, plan.caps
        tk = first.get(k, topk)
        if caps:
            gi, gs, gc = capped_slate(
                cp, tk, act, plan.cohort, variant, rows, masks, pens, strip, N, limit, caps
            )
        else:
            gi, gs = tk(variant, rows, masks, pens, strip, min(N, limit))
            gc = []
        if scores is None:
            scores = np.full((m, N), -np.inf, dtype=gs.dtype)
        w = gi.shape[1]
        if rows is None:
            ids[:, :w] = gi
            scores[:, :w] = gs
            on[:, list(act)] = True
            capped.extend(gc)
        else:
            ids[rows, :w] = gi
            scores[rows, :w] = gs
            if act:
                on[np.ix_(rows, list(act))] = True
            capped.extend((int(rows[r]), it, fi) for r, it, fi in gc)
    if scores is None:
        scores = np.full((m, N), -np.inf, dtype=np.float32)
    return Slate(ids, scores, on, capped)


@dataclass(eq=False)
class _GroupPlan:
    """One viewer group of a batch: its rows, active filters, variant and viewer parts."""

    k: int
    rows: np.ndarray | None
    act: tuple[int, ...]
    cohort: tuple[tuple[int, int], ...]
    variant: Variant
    masks: list
    pens: list
    strip: Any
    caps: list


@dataclass(eq=False)
class SharedCall:
    """Several viewer groups' kernel calls as one, for a ``topk`` that ``shares_groups``.

    Stands in for a :class:`~._compiled.Variant`: ``key``, ``hard_mask``, ``penalty`` and
    ``space`` are the shared variant's (every item some group may receive), and
    ``row_groups`` gives the kernel each row's own group plan
    (:class:`guardrails.core.kernel.RowGroups`).
    """

    shared: Variant
    row_groups: RowGroups

    @property
    def key(self) -> tuple:
        return self.shared.key

    @property
    def hard_mask(self) -> np.ndarray | None:
        return self.shared.hard_mask

    @property
    def penalty(self) -> np.ndarray | None:
        return self.shared.penalty

    def space(self, kind, build):
        return self.shared.space(kind, build)


class _Prefetched:
    """A group's ``topk`` whose first call was already computed in a shared call.

    Returns the stored slates for exactly that call (same variant, same rows array, same
    width), once; every other call goes to ``topk``.
    """

    def __init__(self, topk: TopK, variant, rows, n: int, out) -> None:
        self.topk, self.variant, self.rows, self.n, self.out = topk, variant, rows, n, out

    def __call__(self, variant, rows, masks, pens, strip, n):
        if self.out is not None and variant is self.variant and rows is self.rows and n == self.n:
            out, self.out = self.out, None
            return out
        return self.topk(variant, rows, masks, pens, strip, n)


def _first_call(cp: CompiledPolicy, plan: _GroupPlan, N: int, limit: int) -> tuple[Any, int]:
    """The variant and width of a group's first kernel call (as :func:`capped_slate`)."""
    n = min(N, limit)
    if not plan.caps:
        return plan.variant, n
    if len(plan.caps) == 1 and int(plan.caps[0][1].groups.max(initial=-1)) == 0:
        ci, cap = plan.caps[0]
        out_v = cp.variant(plan.act, plan.cohort, (ci, False))
        if min(cap.allowance(N), N) == 0:
            return out_v, n
        if cp.cap_saturation.get((ci, plan.variant.key), 0.0) > _SPLIT_CAP_FROM:
            return out_v, n
        return plan.variant, n
    return plan.variant, min(limit, max(2 * N, N + 8))


def _eligible(v: Variant, n_items: int) -> np.ndarray:
    return np.ones(n_items, dtype=bool) if v.hard_mask is None else ~v.hard_mask


def _shared_first_calls(cp, cache, plans, take, topk, N, limit) -> dict[int, _Prefetched]:
    """Run the groups' first kernel calls that pay to share, in as few calls as pay.

    Groups with the same active filters and first-call width are candidates to share a
    call (their viewer parts are rows of the same matrices). Largest group first, a
    group joins when the extra score cells it brings, its rows against the shared
    space's items it may not receive plus the others' rows against the items it adds,
    stay under about one call's fixed cost (``"always"``: whatever they cost).
    Returns each sharing group's first call, prefetched.
    """
    n_items = cp.catalog.n
    buckets: dict[tuple, list] = {}
    for plan in plans:
        v, n = _first_call(cp, plan, N, limit)
        buckets.setdefault((plan.act, n), []).append((plan, v))
    out: dict[int, _Prefetched] = {}
    for (act, n), members in buckets.items():
        members.sort(key=lambda pv: -pv[0].rows.size)
        while len(members) > 1:
            chosen, members = _share(members, n_items)
            if len(chosen) > 1:
                _run_shared(cp, cache, take, topk, act, n, chosen, out)
    return out


def _share(members: list, n_items: int) -> tuple[list, list]:
    """The largest group and the groups that pay to join its call; and the rest."""
    lead_plan, lead_v = members[0]
    union = _eligible(lead_v, n_items)
    size, rows_in = int(union.sum()), lead_plan.rows.size
    chosen, rest = [members[0]], []
    for plan, v in members[1:]:
        own = _eligible(v, n_items)
        grown = union | own
        g_size = int(grown.sum())
        extra = plan.rows.size * (g_size - int(own.sum())) + rows_in * (g_size - size)
        if SHARED_CALLS == "always" or extra <= _SHARED_EXTRA_CELLS:
            chosen.append((plan, v))
            union, size, rows_in = grown, g_size, rows_in + plan.rows.size
        else:
            rest.append((plan, v))
    return chosen, rest


def _run_shared(cp, cache, take, topk, act, n, chosen, out) -> None:
    """One kernel call for the ``chosen`` groups' first calls; store each group's part."""
    lead_v = chosen[0][1]
    chosen.sort(key=lambda pv: pv[0].k)
    ks = [plan.k for plan, _ in chosen]
    rows = np.concatenate([plan.rows for plan, _ in chosen])
    sizes = [plan.rows.size for plan, _ in chosen]
    of_row = np.repeat(np.arange(len(chosen), dtype=np.int64), sizes)
    variants = tuple(v for _, v in chosen)
    shared = cp.shared_variant(variants, lead_v)
    call = SharedCall(
        shared,
        RowGroups(of_row, tuple(v.hard_mask for v in variants), tuple(v.penalty for v in variants)),
    )
    masks, pens, strip = [], [], None
    for i in act:
        for p in cp.cached_parts(cache, i):
            if p.viewer_mask is not None:
                masks.append(take.many(p.viewer_mask, ks))
            if p.viewer_penalty is not None:
                pens.append(take.many(p.viewer_penalty, ks))
        st = cp.cached_strip(cache, i)
        if st is not None:
            st = take.many(st, ks)
            strip = st if strip is None else strip + st
    ids, scores = topk(call, rows, masks, pens, strip, n)
    at = np.r_[0, np.cumsum(sizes)]
    for j, (plan, v) in enumerate(chosen):
        a, b = int(at[j]), int(at[j + 1])
        out[plan.k] = _Prefetched(topk, v, plan.rows, n, (ids[a:b], scores[a:b]))


class GroupRows:
    """Rows of per-viewer sparse matrices for each viewer group, sliced once per batch.

    ``take(matrix, k)`` equals ``matrix[rows_k]`` (``matrix`` itself when the batch is one
    group). Rather than one fancy row index per group and matrix, each matrix is permuted
    once into group order (``matrix[order]``, the groups' rows concatenated) and each
    group's rows are a contiguous range of it, taken as views of its arrays.
    """

    def __init__(self, groups: list[tuple[np.ndarray | None, np.ndarray]]) -> None:
        self.whole = len(groups) == 1 and groups[0][0] is None
        self.order = None
        self.bounds = np.zeros(1, dtype=np.int64)
        if not self.whole:
            parts = [np.asarray(r, dtype=np.int64) for r, _ in groups]
            self.order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            self.bounds = np.r_[0, np.cumsum([r.shape[0] for r in parts])].astype(np.int64)
        self.single = len(groups) <= 1
        self.groups = groups
        self.permuted: dict[int, tuple[Any, Any]] = {}

    def __call__(self, matrix: Any, k: int) -> Any:
        return self.many(matrix, [k])

    def many(self, matrix: Any, ks: list[int]) -> Any:
        """The rows of groups ``ks`` (increasing), concatenated in that order."""
        if self.whole:
            return matrix
        consecutive = all(b == a + 1 for a, b in zip(ks, ks[1:], strict=False))
        if len(ks) == 1:
            rows = self.groups[ks[0]][0]
        else:
            rows = np.concatenate([self.groups[k][0] for k in ks])
        if self.single or not consecutive or not (sp.issparse(matrix) and matrix.format == "csr"):
            return matrix[rows]
        hit = self.permuted.get(id(matrix))
        if hit is None or hit[0] is not matrix:
            hit = (matrix, matrix[self.order])
            self.permuted[id(matrix)] = hit
        p = hit[1]
        a, b = int(self.bounds[ks[0]]), int(self.bounds[ks[-1] + 1])
        lo, hi = int(p.indptr[a]), int(p.indptr[b])
        return type(p)(
            (p.data[lo:hi], p.indices[lo:hi], p.indptr[a : b + 1] - p.indptr[a]),
            shape=(b - a, p.shape[1]),
            copy=False,
        )


def group_rows(cols: list[np.ndarray]) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Rows of every distinct key ``(cols[0][r], cols[1][r], ...)``, keys in lexicographic order.

    Each column holds small ints ``>= -1`` (held back, cohorts); the key is packed into
    one int64 in mixed radix (lexicographic order kept), which sorts far faster than
    ``np.unique(axis=0)``, the fallback when the radix would overflow (its inverse is in
    the same order). ``rows`` is ``None`` when all rows share one key.
    """
    m = cols[0].shape[0]
    packed = np.zeros(m, dtype=np.int64)
    radix = 1
    for c in cols:
        span = int(c.max(initial=-1)) + 2  # values -1 .. max, shifted to 0 .. max + 1
        radix *= span
        if radix >= 1 << 62:
            packed = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)[1].ravel()
            break
        packed = packed * span + (c + 1)
    first = packed[0]
    if (packed == first).all():
        return [(None, np.array([int(c[0]) for c in cols], dtype=np.int64))]
    order = np.argsort(packed, kind="stable")
    sk = packed[order]
    starts = np.r_[0, np.flatnonzero(sk[1:] != sk[:-1]) + 1, m]
    groups: list[tuple[np.ndarray | None, np.ndarray]] = []
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        r0 = int(order[a])
        groups.append((order[a:b], np.array([int(c[r0]) for c in cols], dtype=np.int64)))
    return groups


def capped_slate(
    cp: CompiledPolicy, topk, act, cohort, variant, rows, masks, pens, strip, N, limit, caps
):
    """Top-N under share caps.

    One cap with a single group (a risky share), exact either of two ways (scores are
    exact and independent of the batch, so both equal greedy selection over the full
    ranking):

    - *whole space first*: the top ``N`` of the whole space; rows whose top ``N`` holds
      at most ``allowance`` items of the group are final (the cap does not bind), the
      others take the top ``N`` outside the group (one more kernel call, for those rows
      only) merged with the first ``allowance`` group items of their top ``N``, which
      are the group's best;
    - *split*: the top ``N`` outside the group merged with the top ``allowance``
      inside it, two calls for every row.

    The first costs less while the cap binds on few rows (a call over the group's few
    items costs more than its share of the product); the second where it binds on many
    (the first would re-fetch most rows). Each call picks by the share of the viewer
    group's rows whose slate filled the cap in the previous call
    (:attr:`CompiledPolicy.cap_saturation`).
    Otherwise (several caps or groups): over-fetch, greedy selection, re-fetch of the
    rows left short.
    """
    if len(caps) == 1 and int(caps[0][1].groups.max(initial=-1)) == 0:
        ci, cap = caps[0]
        allow = min(cap.allowance(N), N)
        out_v = cp.variant(act, cohort, (ci, False))
        if allow == 0:
            ids, scores = topk(out_v, rows, masks, pens, strip, min(N, limit))
            return ids, scores, []
        seen = (ci, variant.key)
        if cp.cap_saturation.get(seen, 0.0) > _SPLIT_CAP_FROM:
            ids, scores = topk(out_v, rows, masks, pens, strip, min(N, limit))
            in_v = cp.variant(act, cohort, (ci, True))
            ids_in, sc_in = topk(in_v, rows, masks, pens, strip, min(allow, limit))
            ids, scores = merge_slates(ids, scores, ids_in, sc_in, N)
            _note_saturation(cp, seen, cap, ids, allow)
            return ids, scores, []
        ids, scores = topk(variant, rows, masks, pens, strip, min(N, limit))
        inside, n_in = _note_saturation(cp, seen, cap, ids, allow)
        bind = np.flatnonzero(n_in > allow)
        if bind.size == 0:
            return ids, scores, []
        sub = bind if rows is None else rows[bind]
        o_ids, o_sc = topk(
            out_v,
            sub,
            [x[bind] for x in masks],
            [x[bind] for x in pens],
            None if strip is None else strip[bind],
            min(N, limit),
        )
        # The group's best `allow` items of each binding row: its first group items.
        first = inside[bind] & (np.cumsum(inside[bind], axis=1) <= allow)
        i_ids = np.where(first, ids[bind], -1)
        i_sc = np.where(first, scores[bind], -np.inf).astype(scores.dtype)
        m_ids, m_sc = merge_slates(o_ids, o_sc, i_ids, i_sc, N)
        if ids.shape[1] < N:
            w = N - ids.shape[1]
            ids = np.concatenate([ids, np.full((ids.shape[0], w), -1, ids.dtype)], axis=1)
            scores = np.concatenate(
                [scores, np.full((scores.shape[0], w), -np.inf, scores.dtype)], axis=1
            )
        ids[bind], scores[bind] = m_ids, m_sc
        return ids, scores, []
    return capped_topk(topk, variant, rows, masks, pens, strip, N, limit, caps)


# Above this share of rows filling a one-group share cap, capped slates are computed
# split (see capped_slate). In bench_policy's 10k-item case 0.5% of the rows are
# re-fetched, and the full policy measured 1.2x faster computed whole space first.
_SPLIT_CAP_FROM = 0.25


def _note_saturation(
    cp: CompiledPolicy, seen: tuple, cap, ids: np.ndarray, allow: int
) -> tuple[np.ndarray, np.ndarray]:
    """Record the share of rows whose slate filled the cap; return which slate entries
    are in the capped group and how many per row."""
    inside = (ids >= 0) & (cap.groups[np.maximum(ids, 0)] >= 0)
    n_in = inside.sum(axis=1)
    cp.cap_saturation[seen] = float(np.mean(n_in >= allow)) if n_in.size else 0.0
    return inside, n_in


def count(
    cp: CompiledPolicy, cache: CallCache, idx: tuple[int, ...], served: Slate, counts: dict
) -> None:
    names = [s.name for s in cp.policy.settings]
    for i in idx:
        g = cache.groups.get(i)
        if g is not None:
            counts[f"{names[i]}/viewers"] = int((g >= 0).sum())
        for p in cache.parts.get(i, ()):
            for a in (p.viewer_mask, p.viewer_penalty):
                if a is not None:
                    counts[f"{names[i]}/viewer_cells"] = counts.get(
                        f"{names[i]}/viewer_cells", 0
                    ) + int(a.nnz)
        s = cache.strips.get(i)
        if s is not None:
            counts[f"{names[i]}/stripped"] = int(s.nnz)
    for _, _, fi in served.capped:
        k = f"{names[fi]}/capped"
        counts[k] = counts.get(k, 0) + 1
    N = served.ids.shape[1]
    if N:
        valid = served.ids >= 0
        safe = np.where(valid, served.ids, 0)
        for i in idx:
            cap = cp.filters[i].caps
            if cap is None:
                continue
            G = np.where(valid, cap.groups[safe], -1)
            allow = cap.allowance(N)
            if cap.groups.max(initial=-1) == 0:
                binding = (G == 0).sum(axis=1) >= allow
            else:
                k = int(cap.groups.max(initial=-1)) + 1
                rr = np.repeat(np.arange(G.shape[0]), N)
                gg = G.ravel()
                ok = gg >= 0
                cnt = np.zeros((G.shape[0], max(k, 1)), dtype=np.int64)
                np.add.at(cnt, (rr[ok], gg[ok]), 1)
                binding = (cnt >= allow).any(axis=1)
            on = served.on[:, i]
            counts[f"{names[i]}/capped_rows"] = int((binding & on).sum())
    for cf in cp.filters:
        if cf.skipped is not None:
            counts[f"{names[cf.index]}/skipped_fail_open"] = 1


def explain(
    cp: CompiledPolicy, viewers: ViewerBatch, item: int, *, snapshot_version: str | None = None
) -> Explanation:
    """Why ``item`` is or would be suppressed for the single viewer of ``viewers``."""
    cache = CallCache(viewers)
    surface = viewers.surface
    enf, sh = cp.active(surface)
    hb = cp.policy.holdback
    held = bool(hb.held(viewers.userids, 1)[0]) if hb is not None else False
    rows = np.zeros(1, dtype=np.int64)
    items = np.array([item], dtype=np.int64)
    verdicts = []
    served_best, served_f, served_reason = 0, None, None
    would_best = 0
    capped_by = []
    for i, st in enumerate(cp.policy.settings):
        mode = cp.policy.effective_mode(i)
        note = ""
        if cp.filters[i].skipped is not None:
            verdicts.append(
                FilterVerdict(
                    st.name,
                    mode,
                    "allow",
                    None,
                    0.0,
                    f"skipped (fail_open): {cp.filters[i].skipped}",
                )
            )
            continue
        if mode == "off":
            verdicts.append(FilterVerdict(st.name, "off", "allow", None, 0.0, "off"))
            continue
        if not st.applies(surface):
            verdicts.append(
                FilterVerdict(st.name, mode, "allow", None, 0.0, f"not on surface {surface!r}")
            )
            continue
        a, pen = cp.pair_actions(cache, i, rows, items)
        code = int(a[0])
        action = Action(code).label
        reason = reason_of(cp, i, cache, 0, item, action) if code else None
        is_held = held and hb is not None and st.name in hb.filters
        if is_held:
            note = "viewer held back"
        if cp.filters[i].caps is not None and cp.filters[i].caps.groups[item] >= 0:
            capped_by.append(st.name)
        verdicts.append(
            FilterVerdict(
                st.name, "holdback" if is_held else mode, action, reason, float(pen[0]), note
            )
        )
        would_best = max(would_best, code)
        if i in enf and not is_held and code > served_best:
            served_best, served_f, served_reason = code, st.name, reason
    return Explanation(
        None if viewers.userids is None else int(viewers.userids[0]),
        int(item),
        Action(served_best).label,
        Action(would_best).label,
        served_f,
        served_reason,
        tuple(verdicts),
        tuple(capped_by),
        cp.policy.version,
        snapshot_version,
        surface,
    )
