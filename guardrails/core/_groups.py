"""Several viewer groups in one kernel call: one shared space, each group's own plan.

A policy splits a batch into viewer groups (held back or not, cohorts, a tripped circuit
breaker), each with its own candidate space: the global plan of its filters, compacted.
Rather than one kernel call per group, :func:`guardrails.core.kernel.guarded_topk` can run
them together (``groups=RowGroups(...)``) on one *shared* space that holds every item
some group may receive (the union of their eligible items, scored with one group's
penalty folded in). For every other group the kernel then, per chunk (per tile on the
fused path):

- sets the items its own plan excludes to ``-inf`` for its rows (a dense mask over the
  shared columns), and
- subtracts the difference between its own penalty and the folded one (a dense offset),
  in float32 before selection; the rounding bound and the tiles' skip bounds take each
  group's largest offset as one more per-row penalty;

and rescores the survivors exactly with the group's *own* penalty, the same float64
arithmetic as the group's own space (``dot + (-penalty)``, then viewer penalties). Same
eligible items, same exact scores, same tie-break: each row's slate equals the slate of
its own group's call, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["RowGroups", "GroupTerms", "group_terms"]


@dataclass(frozen=True, eq=False)
class RowGroups:
    """The viewer groups of one kernel call, as global arrays.

    Parameters
    ----------
    of_row : ndarray of int64, shape (m,)
        Group of every query row, in ``[0, n_groups)``.
    hard_masks : tuple of (ndarray of bool, shape (n_items,)) or None
        Per group, ``True`` for the items the group's own plan never returns (``None``:
        none beyond the shared space's).
    penalties : tuple of (ndarray of float32, shape (n_items,)) or None
        Per group, the penalty its own plan subtracts (``None``: none).
    """

    of_row: np.ndarray
    hard_masks: tuple[np.ndarray | None, ...]
    penalties: tuple[np.ndarray | None, ...]

    @property
    def n_groups(self) -> int:
        return len(self.hard_masks)


@dataclass(frozen=True, eq=False)
class GroupTerms:
    """:class:`RowGroups` over one space's compact columns, as the kernel applies them.

    ``masks[g]`` (bool, ``(n_eligible,)``) and ``offsets[g]`` (float32, subtracted from
    the shared space's float32 scores) are ``None`` where the group needs nothing beyond
    the shared space (its folded penalty's group); ``negs[g]`` (float32, ``-penalty``)
    is what the group's own space adds in exact rescoring, ``None`` where that space
    folds no penalty; ``boost[g]`` is the largest ``|offset|`` (NaN poisons it, so that
    nothing is pruned for the group's rows).
    """

    of_row: np.ndarray
    masks: tuple[np.ndarray | None, ...]
    offsets: tuple[np.ndarray | None, ...]
    negs: tuple[np.ndarray | None, ...]
    boost: np.ndarray

    def permuted(self, order: np.ndarray) -> GroupTerms:
        """The same terms for the query rows taken in ``order``."""
        return replace(self, of_row=self.of_row[order])

    def row_boost(self, lo: int, hi: int) -> np.ndarray:
        """Each row's largest offset, for rows ``[lo, hi)``: an extra per-row penalty."""
        return self.boost[self.of_row[lo:hi]]

    def active(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        """``(group, local rows)`` of every group in rows ``[lo, hi)`` with a mask or offset."""
        local = self.of_row[lo:hi]
        out = []
        for g in np.unique(local).tolist():
            if self.masks[g] is None and self.offsets[g] is None:
                continue
            out.append((g, np.flatnonzero(local == g)))
        return out


def group_terms(space, groups: RowGroups) -> GroupTerms:
    """Compile ``groups`` against ``space`` (a :class:`~.kernel.FactorSpace`)."""
    ids = space.ids
    shared = (
        np.zeros(ids.size, dtype=np.float64)
        if space.neg_penalty is None
        else -space.neg_penalty.astype(np.float64)
    )
    masks, offsets, negs = [], [], []
    boost = np.zeros(groups.n_groups, dtype=np.float64)
    for g, (hard, pen) in enumerate(zip(groups.hard_masks, groups.penalties, strict=True)):
        mask = None if hard is None else np.asarray(hard[ids], dtype=bool)
        if mask is not None and not mask.any():
            mask = None
        own = None if pen is None else np.asarray(pen[ids], dtype=np.float32)
        seen = own if (own is None or mask is None) else own[~mask]
        # The group's own space folds its penalty only where it is non-zero on the
        # group's eligible items (FactorSpace.build): mirror it, for the same arithmetic.
        folds = own is not None and seen is not None and bool(np.any(seen != 0))
        negs.append(-own if folds and own is not None else None)
        diff = (0.0 if own is None else own.astype(np.float64)) - shared
        diff = np.broadcast_to(diff, ids.shape).copy()
        if mask is not None:
            diff[mask] = 0.0  # masked cells are -inf whatever the offset
        off = None
        if np.any(diff != 0):
            off = diff.astype(np.float32)
            a = np.abs(off.astype(np.float64))
            # Any NaN makes the bound NaN: thresholds become -inf, nothing is pruned.
            boost[g] = np.nan if np.isnan(a).any() else float(a.max())
        masks.append(mask)
        offsets.append(off)
    return GroupTerms(
        np.asarray(groups.of_row, dtype=np.int64), tuple(masks), tuple(offsets), tuple(negs), boost
    )
