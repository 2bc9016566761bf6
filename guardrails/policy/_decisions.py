"""Decisions, counters and explanations: what a policy did to a slate, and why.

Attribution follows the policy's precedence: the strictest action wins (drop beats
demote beats allow) and, among filters with the same action, the first in policy order
decides. Caps and re-queried interests explain what a mask or penalty does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.plan import Action
from ..core.select import missing
from ..core.threads import PicklableLock

if TYPE_CHECKING:
    from ._compiled import CompiledPolicy
    from ._run import Slate

__all__ = [
    "Decision",
    "DecisionCounters",
    "FilterVerdict",
    "Explanation",
    "attribute_many",
    "cap_hits",
    "reason_of",
    "slate_decisions",
]


@dataclass(frozen=True)
class Decision:
    """Why one candidate was removed from, or demoted in, one viewer's slate.

    Attributes
    ----------
    viewer : int or None
        The viewer's user index (``None`` for calls without a viewer); for
        ``similar_items`` without a viewer, the query item is in ``query``.
    row : int
        Row of the batch.
    item : int
        The candidate's index.
    filter : str
        The deciding filter (the first, in policy order, with the strictest action).
    action : {"drop", "demote", "cap", "requery"}
        ``"requery"``: the viewer's query left out interactions (circuit breaker, reason
        ``"<reason>:interests_stripped"``) or the viewed profile (``ContextRisk``
        ``strip_context``, reason ``"<reason>:profile_stripped"``), which changed the
        ranking of items that were not themselves acted on.
    reason : str
    mode : {"enforce", "shadow", "holdback"}
        ``"shadow"`` and ``"holdback"`` decisions describe what enforcement would have
        done; the served slate did not change.
    in_slate : bool
        ``True`` for a demoted candidate that still made the slate.
    policy_version, snapshot_version : str
    surface : str or None
    """

    viewer: int | None
    row: int
    item: int
    filter: str
    action: str
    reason: str
    mode: str
    in_slate: bool
    policy_version: str
    snapshot_version: str | None
    surface: str | None


class DecisionCounters:
    """Aggregated, always-on counters of what a Guard's policy did (thread-safe).

    Counter names are ``"<filter>/<what>"`` and a few totals: ``calls``, ``rows``,
    ``padded`` (slate slots left empty for lack of eligible items). Per filter:
    ``viewers`` (viewers in one of its cohorts), ``viewer_cells`` (per-viewer masked or
    demoted cells), ``capped`` (items skipped by a share cap), ``stripped`` (query
    cells left out: interactions, or viewed profiles), ``skipped_fail_open`` (compiles skipped), and for shadow and
    holdback filters ``would_remove`` (items that enforcement would have removed).
    """

    def __init__(self):
        self._lock = PicklableLock()
        self._c: dict[str, int] = {}

    def __getstate__(self) -> dict:
        return {"_c": self.snapshot(), "_lock": PicklableLock()}

    def add(self, counts: dict[str, int]) -> None:
        with self._lock:
            for k, v in counts.items():
                if v:
                    self._c[k] = self._c.get(k, 0) + int(v)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._c.items()))

    def reset(self) -> None:
        with self._lock:
            self._c.clear()

    def __repr__(self) -> str:
        return f"DecisionCounters({self.snapshot()!r})"


@dataclass(frozen=True)
class FilterVerdict:
    """What one filter does to one (viewer, candidate) pair."""

    filter: str
    mode: str
    action: str
    reason: str | None
    penalty: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    """Why a candidate is (or would be) suppressed for a viewer.

    Attributes
    ----------
    viewer, item : int
    action : {"allow", "demote", "drop"}
        What the served slate does (enforced filters only; ``"allow"`` does not promise
        the item makes the top N).
    would_action : {"allow", "demote", "drop"}
        What full enforcement would do (shadow and held-back filters included).
    deciding_filter, reason : str or None
        The first enforced filter with the strictest action, and its reason code.
    verdicts : tuple of FilterVerdict
        One per filter, in policy order (``"allow"`` where the filter does nothing).
    capped_by : tuple of str
        Share caps that count this candidate (whether it is capped depends on the slate).
    policy_version, snapshot_version, surface
    """

    viewer: int | None
    item: int
    action: str
    would_action: str
    deciding_filter: str | None
    reason: str | None
    verdicts: tuple[FilterVerdict, ...]
    capped_by: tuple[str, ...]
    policy_version: str
    snapshot_version: str | None
    surface: str | None

    def __str__(self) -> str:
        lines = [
            f"item {self.item} for viewer {self.viewer} on surface {self.surface!r}: {self.action}"
            + (f" by {self.deciding_filter} ({self.reason})" if self.deciding_filter else "")
            + (
                f"; full enforcement would {self.would_action}"
                if self.would_action != self.action
                else ""
            )
        ]
        for v in self.verdicts:
            if v.action != "allow" or v.note:
                pen = f" penalty={v.penalty:.4g}" if v.action == "demote" else ""
                lines.append(
                    f"  - {v.filter} [{v.mode}]: {v.action} ({v.reason}){pen} {v.note}".rstrip()
                )
        if self.capped_by:
            lines.append(f"  - counted by share caps: {', '.join(self.capped_by)}")
        lines.append(f"  policy {self.policy_version}, snapshot {self.snapshot_version}")
        return "\n".join(lines)


def cap_hits(cp: CompiledPolicy, slate: Slate, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """For each (row, item): the first active share cap whose group of the item is full
    in that row's slate (the reason the item is missing), else ``-1``."""
    out = np.full(rows.size, -1, dtype=np.int64)
    if rows.size == 0:
        return out
    N = slate.ids.shape[1]
    valid = slate.ids >= 0
    safe = np.where(valid, slate.ids, 0)
    for cf in cp.filters:
        i, cap = cf.index, cf.caps
        if cap is None:
            continue
        on = slate.on[rows, i]
        g = cap.groups[items]
        cand = on & (g >= 0) & (out < 0)
        if not cand.any():
            continue
        G = np.where(valid, cap.groups[safe], -1)
        full = (G[rows[cand]] == g[cand][:, None]).sum(axis=1) >= cap.allowance(N)
        idx = np.flatnonzero(cand)[full]
        out[idx] = i
    return out


def attribute_many(
    cp: CompiledPolicy, cache, slate: Slate, rows: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Deciding filter and strictest action code of every (row, item) pair.

    The strictest action wins; among filters with the same action, the first in
    policy order decides. Filters not active for a row (surface, holdback) are ignored.
    """
    nf = len(cp.policy.filters)
    on = slate.on
    best_act = np.zeros(rows.size, dtype=np.int8)
    best_f = np.full(rows.size, -1, dtype=np.int64)
    if rows.size == 0:
        return best_f, best_act
    for i in range(nf):
        if not on[:, i].any():
            continue
        a, _ = cp.pair_actions(cache, i, rows, items)
        a = np.where(on[rows, i], a, 0)
        better = a > best_act
        best_f[better] = i
        best_act[better] = a[better]
    return best_f, best_act


def slate_decisions(
    cp: CompiledPolicy,
    cache,
    before: np.ndarray,
    after: Slate,
    pv,
    sv,
    surface,
    *,
    mode: str,
    query_ids,
) -> list[Decision]:
    """Decisions for every id of ``before`` missing from ``after``, and demoted ids kept."""
    out = []
    rr, ii = missing(after.ids, before)
    # Demoted items that stayed in the slate.
    kr, kc = np.nonzero(after.ids >= 0)
    kept_items = after.ids[kr, kc]
    capped_set = {(r, it): fi for r, it, fi in after.capped}
    uid = cache.viewers.userids
    requeried: dict[int, int] = {}
    for i, strip in sorted(cache.strips.items(), reverse=True):
        if strip is not None:
            for r in np.flatnonzero(np.diff(strip.indptr) > 0).tolist():
                if after.on[r, i]:
                    requeried[r] = i

    def viewer_of(r: int):
        return None if uid is None else int(uid[r])

    names = [s.name for s in cp.policy.settings]
    hb_set = set(cp.policy.holdback.filters) if cp.policy.holdback is not None else set()
    enforced = set(cp.active(surface)[0])

    def dmode(i: int, r: int) -> str:
        if mode == "enforce":
            return "enforce"
        if i not in enforced:
            return "shadow"
        return (
            "holdback"
            if (names[i] in hb_set and cache.held is not None and cache.held[r])
            else "enforce"
        )

    for in_slate, rows_, items_ in ((False, rr, ii), (True, kr, kept_items)):
        if rows_.size == 0:
            continue
        best_f, best_act = attribute_many(cp, cache, after, rows_, items_)
        hits = cap_hits(cp, after, rows_, items_) if not in_slate else np.full(rows_.size, -1)
        for j in range(rows_.size):
            r, it = int(rows_[j]), int(items_[j])
            if in_slate:
                if best_act[j] != Action.DEMOTE:
                    continue
                fi, action = int(best_f[j]), "demote"
            elif best_act[j] == Action.DROP:
                fi, action = int(best_f[j]), "drop"
            elif hits[j] >= 0:
                fi, action = int(hits[j]), "cap"
            elif (r, it) in capped_set:
                fi, action = capped_set[(r, it)], "cap"
            elif best_act[j] == Action.DEMOTE:
                fi, action = int(best_f[j]), "demote"
            elif r in requeried:
                fi, action = requeried[r], "requery"
            else:
                # Penalties never boost and caps only skip, so an item that is neither
                # dropped, demoted, capped nor re-queried cannot be pushed out; record
                # it anyway so that nothing ever goes missing silently.
                fi, action = -1, "displaced"
            if fi >= 0:
                reason = reason_of(cp, fi, cache, r, it, action)
                fname = names[fi]
                md = dmode(fi, r)
            else:
                reason, fname, md = "displaced", "(none)", mode
            out.append(
                Decision(viewer_of(r), r, it, fname, action, reason, md, in_slate, pv, sv, surface)
            )
    return out


def reason_of(cp: CompiledPolicy, i: int, cache, r: int, item: int, action: str) -> str:
    if action == "cap":
        return cp.filters[i].caps.reason
    if action == "requery":
        what = "interests" if cache.viewers.user_items is not None else "profile"
        return f"{getattr(cp.policy.filters[i], 'reason', 'filtered')}:{what}_stripped"
    rows = np.array([r], dtype=np.int64)
    items = np.array([item], dtype=np.int64)
    want = Action.DROP if action == "drop" else Action.DEMOTE
    for p in cp.filters[i].global_parts:
        if want == Action.DROP and p.hard_mask is not None and p.hard_mask[item]:
            return p.reason
        if want == Action.DEMOTE and p.penalty is not None and p.penalty[item] > 0:
            return p.reason
    t = cp.filters[i].table
    if t is not None:
        return t.reason
    for p in cp.cached_parts(cache, i):
        a = p.viewer_mask if want == Action.DROP else p.viewer_penalty
        if a is not None and np.asarray(a[rows, items]).ravel()[0] != 0:
            return p.reason
    return getattr(cp.policy.filters[i], "reason", "filtered")
