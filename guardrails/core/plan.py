"""Scoring plans: what filters compile to, in arrays only.

A :class:`PlanPart` is one filter's contribution; a :class:`Plan` combines the parts of an
ordered policy. Global parts (a hard mask and an additive penalty over the candidate
catalogue) do not depend on the viewer and are compiled once per policy and snapshot;
viewer parts (sparse masks and penalties, one row per viewer in the batch) are compiled
per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import scipy.sparse as sp

__all__ = ["Action", "PlanPart", "Plan"]


class Action(IntEnum):
    """Graded action of a filter on one candidate; a larger value is stricter.

    The strictest action wins whatever the filter order: a drop (a mask) beats a demote
    (a penalty) beats allow. The values are the codes stored in int8 action arrays.
    """

    ALLOW = 0
    DEMOTE = 1
    DROP = 2

    @property
    def label(self) -> str:
        """The lower-case name used in decisions and explanations."""
        return self.name.lower()


@dataclass(frozen=True, eq=False)
class PlanPart:
    """One filter's contribution to a plan.

    Parameters
    ----------
    name : str
        The filter's stable name.
    reason : str
        Reason code recorded for every item this part removes or demotes.
    hard_mask : ndarray of bool, shape (n_candidates,), optional
        ``True`` for candidates that are never returned to anybody.
    penalty : ndarray of float32, shape (n_candidates,), optional
        Subtracted from every score of the candidate (demotion).
    viewer_mask : csr_matrix, shape (n_viewers, n_candidates), optional
        Non-zero cells are never returned to that viewer.
    viewer_penalty : csr_matrix, shape (n_viewers, n_candidates), optional
        Subtracted from that viewer's scores of the candidate.
    """

    name: str
    reason: str
    hard_mask: np.ndarray | None = None
    penalty: np.ndarray | None = None
    viewer_mask: sp.csr_matrix | None = None
    viewer_penalty: sp.csr_matrix | None = None

    @property
    def empty(self) -> bool:
        return all(
            x is None for x in (self.hard_mask, self.penalty, self.viewer_mask, self.viewer_penalty)
        )


@dataclass(frozen=True, eq=False)
class Plan:
    """The combined plan of an ordered list of parts over ``n_candidates`` candidates."""

    n_candidates: int
    parts: tuple[PlanPart, ...] = field(default_factory=tuple)

    @property
    def hard_mask(self) -> np.ndarray | None:
        masks = [p.hard_mask for p in self.parts if p.hard_mask is not None]
        if not masks:
            return None
        out = np.zeros(self.n_candidates, dtype=bool)
        for m in masks:
            out |= m
        return out

    @property
    def penalty(self) -> np.ndarray | None:
        pens = [p.penalty for p in self.parts if p.penalty is not None]
        if not pens:
            return None
        out = np.zeros(self.n_candidates, dtype=np.float64)
        for p in pens:
            out += p
        return out.astype(np.float32)

    @property
    def viewer_masks(self) -> list[sp.csr_matrix]:
        return [p.viewer_mask for p in self.parts if p.viewer_mask is not None]

    @property
    def viewer_penalties(self) -> list[sp.csr_matrix]:
        return [p.viewer_penalty for p in self.parts if p.viewer_penalty is not None]
