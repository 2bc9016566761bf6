"""Primitive filters: blocks, per-viewer exclusions, risk suppression and demotion.

Every filter here accepts plain arrays, so it can be built without the signals store.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_csr, check_float, check_vector, fail
from ..core.plan import PlanPart
from .base import Catalog, Filter, ViewerBatch

__all__ = ["BlockItems", "ExcludePairs", "SuppressRisk", "DemoteRisk"]


def _check_catalog(where: str, name: str, length: int, catalog: Catalog) -> None:
    if length != catalog.n:
        raise fail(
            name,
            where,
            f"sized to the {catalog.kind} catalogue ({catalog.n} entries)",
            f"{length} entries",
            describe=False,
        )


class BlockItems(Filter):
    """Never return the given candidates to anybody.

    Parameters
    ----------
    ids : array-like of int
        Candidate indices (model item indices, or user indices for a user policy).
    reason : str
        Reason code recorded for the blocked items.
    """

    name = "block_items"

    def __init__(self, ids, *, reason: str = "blocked"):
        arr = np.asarray(ids)
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise fail("ids", "BlockItems", "a 1-d array of non-negative ints", ids)
        if arr.size and arr.min() < 0:
            raise fail("ids", "BlockItems", "a 1-d array of non-negative ints", f"negative ids {arr[arr < 0][:5].tolist()}", describe=False)
        self.ids = np.unique(arr.astype(np.int64))
        self.reason = reason

    def params(self) -> tuple:
        return (self.ids,)

    def compile_global(self, catalog: Catalog) -> PlanPart:
        if self.ids.size and self.ids[-1] >= catalog.n:
            raise fail(
                "ids",
                "BlockItems",
                f"indices in [0, {catalog.n}) of the {catalog.kind} catalogue",
                f"ids up to {int(self.ids[-1])}",
                describe=False,
            )
        mask = np.zeros(catalog.n, dtype=bool)
        mask[self.ids] = True
        return PlanPart(self.name, self.reason, hard_mask=mask)


class ExcludePairs(Filter):
    """Never return particular candidates to particular viewers.

    Parameters
    ----------
    pairs : sparse matrix, shape (n_viewers, n_candidates)
        Non-zero cell ``(u, i)``: never return candidate ``i`` to viewer ``u`` (for
        example accounts that ``u`` blocked, or that blocked ``u``). Viewers beyond the
        last row have no exclusions.
    reason : str
        Reason code recorded for the excluded pairs.
    """

    name = "exclude_pairs"

    def __init__(self, pairs, *, reason: str = "excluded_pair"):
        csr = check_csr(pairs, "pairs", "ExcludePairs")
        csr = sp.csr_matrix((np.ones(csr.nnz, dtype=np.float32), csr.indices, csr.indptr), shape=csr.shape)
        csr.eliminate_zeros()
        self.pairs = csr
        self.reason = reason

    def params(self) -> tuple:
        return (self.pairs,)

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        if viewers.userids is None:
            return None
        _check_catalog("ExcludePairs", "pairs", self.pairs.shape[1], catalog)
        rows = _viewer_rows(self.pairs, viewers.userids)
        return PlanPart(self.name, self.reason, viewer_mask=rows)


def _viewer_rows(csr: sp.csr_matrix, userids: np.ndarray) -> sp.csr_matrix:
    """Rows ``csr[userids]``, with empty rows for ids beyond the matrix."""
    n_rows = csr.shape[0]
    known = userids < n_rows
    if known.all():
        return csr[userids]
    safe = np.where(known, userids, 0)
    rows = csr[safe].tolil()
    for r in np.flatnonzero(~known):
        rows.rows[r] = []
        rows.data[r] = []
    return rows.tocsr()


class SuppressRisk(Filter):
    """Never return candidates whose risk is at or above a threshold.

    Parameters
    ----------
    risk : array-like of float, shape (n_candidates,)
        Risk per candidate in [0, 1] (for example from :func:`guardrails.propagate_risk`).
    threshold : float
        Candidates with ``risk >= threshold`` are suppressed.
    reason : str
        Reason code recorded for the suppressed items.
    """

    name = "suppress_risk"

    def __init__(self, risk, *, threshold: float, reason: str = "risk_neighborhood"):
        self.risk = check_vector(risk, "risk", "SuppressRisk", low=0.0, high=1.0)
        self.threshold = check_float(threshold, "threshold", "SuppressRisk", low=0.0, high=1.0, low_open=True)
        self.reason = reason

    def params(self) -> tuple:
        return (self.risk, self.threshold)

    def compile_global(self, catalog: Catalog) -> PlanPart:
        _check_catalog("SuppressRisk", "risk", self.risk.shape[0], catalog)
        return PlanPart(self.name, self.reason, hard_mask=self.risk >= self.threshold)


class DemoteRisk(Filter):
    """Subtract ``weight * risk`` from every score of a candidate.

    Parameters
    ----------
    risk : array-like of float, shape (n_candidates,)
        Risk per candidate in [0, 1].
    weight : float
        Demotion in score units at risk 1 (scores are dot products for ``recommend`` and
        cosines for ``similar_items``).
    reason : str
        Reason code recorded for the demoted items.
    """

    name = "demote_risk"

    def __init__(self, risk, *, weight: float, reason: str = "risk_demoted"):
        self.risk = check_vector(risk, "risk", "DemoteRisk", low=0.0, high=1.0)
        self.weight = check_float(weight, "weight", "DemoteRisk", low=0.0)
        self.reason = reason

    def params(self) -> tuple:
        return (self.risk, self.weight)

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        _check_catalog("DemoteRisk", "risk", self.risk.shape[0], catalog)
        if self.weight == 0.0:
            return None
        return PlanPart(self.name, self.reason, penalty=(self.weight * self.risk).astype(np.float32))
