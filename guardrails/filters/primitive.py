"""Primitive filters: blocks, per-viewer exclusions, risk suppression and demotion.

Every filter here accepts plain arrays, so it can be built without the signals store.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import (
    canonical_csr,
    check_choice,
    check_csr,
    check_float,
    check_vector,
    fail,
    is_int_vector,
)
from ..core._exact import cell_positions
from ..core.plan import PlanPart
from .base import Catalog, Filter, ViewerBatch

__all__ = ["BlockItems", "ExcludePairs", "SuppressRisk", "DemoteRisk"]


class BlockItems(Filter):
    """Never return the given candidates to anybody.

    Parameters
    ----------
    ids : array-like of int
        Candidate indices (model item indices, or user indices for a user policy).
    reason : str
        Reason code recorded for the blocked items.
    mode, failure, surfaces, name : keyword-only
        Common filter settings (see :mod:`guardrails.filters.base`).
    """

    name = "block_items"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {"ids": "ints"}

    def __init__(
        self,
        ids,
        *,
        reason: str = "blocked",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        arr = np.asarray(ids)
        if not is_int_vector(arr):
            raise fail("ids", "BlockItems", "a 1-d array of non-negative ints", ids)
        if arr.size and arr.min() < 0:
            raise fail(
                "ids",
                "BlockItems",
                "a 1-d array of non-negative ints",
                f"negative ids {arr[arr < 0][:5].tolist()}",
                describe=False,
            )
        self.ids_ = np.unique(arr.astype(np.int64))
        self._apply_settings(locals(), "BlockItems")

    def params(self) -> tuple:
        return self._fitted()

    def compile_global(self, catalog: Catalog) -> PlanPart:
        catalog.check_indices("BlockItems", "ids", self.ids_)
        mask = np.zeros(catalog.n, dtype=bool)
        mask[self.ids_] = True
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
    mode, failure, surfaces, name : keyword-only
        Common filter settings (see :mod:`guardrails.filters.base`).
    """

    name = "exclude_pairs"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {"pairs": "csr"}

    def __init__(
        self,
        pairs,
        *,
        reason: str = "excluded_pair",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        self.pairs_ = stored_cells(check_csr(pairs, "pairs", "ExcludePairs"))
        self._apply_settings(locals(), "ExcludePairs")

    def params(self) -> tuple:
        return self._fitted()

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        if viewers.userids is None:
            return None
        catalog.check_sized("ExcludePairs", "pairs", self.pairs_.shape[1])
        rows = viewer_rows(self.pairs_, viewers.userids)
        return PlanPart(self.name, self.reason, viewer_mask=rows)


def stored_cells(csr: sp.csr_matrix) -> sp.csr_matrix:
    """A float32 CSR of ones at every stored cell of the canonical ``csr`` (a relationship:
    ``(u, i)`` is there or not, whatever its weight)."""
    return sp.csr_matrix(
        (np.ones(csr.nnz, dtype=np.float32), csr.indices, csr.indptr), shape=csr.shape
    )


def select_cells(csr: sp.csr_matrix, keep: np.ndarray, data=None) -> sp.csr_matrix:
    """The stored cells of ``csr`` where ``keep`` (bool, one per stored cell) holds.

    Their values are kept, or replaced by ``data`` (one per kept cell); the shape and the
    order of the cells are kept.
    """
    kept = np.zeros(csr.nnz + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    values = csr.data[keep] if data is None else data
    return sp.csr_matrix((values, csr.indices[keep], kept[csr.indptr]), shape=csr.shape)


def viewer_rows(csr: sp.csr_matrix, userids: np.ndarray) -> sp.csr_matrix:
    """Rows ``csr[userids]``, with empty rows for ids beyond the matrix (or negative)."""
    n_rows = csr.shape[0]
    known = (userids >= 0) & (userids < n_rows)
    if known.all():
        return csr[userids]
    safe = np.where(known, userids, 0)
    rows = csr[safe].tolil()
    for r in np.flatnonzero(~known):
        rows.rows[r] = []
        rows.data[r] = []
    return rows.tocsr()


def viewer_values(values: np.ndarray, userids, fill) -> np.ndarray:
    """``values[userids]`` per viewer, with ``fill`` for ids outside ``values`` (accounts
    newer than the stored array): the dense counterpart of :func:`viewer_rows`."""
    u = np.asarray(userids, dtype=np.int64)
    inside = (u >= 0) & (u < values.shape[0])
    out = np.full(u.shape[0], fill, dtype=values.dtype)
    out[inside] = values[u[inside]]
    return out


def id_cells(ids, n: int) -> sp.csr_matrix:
    """One float32 row per id with a 1 in column ``id`` (an empty row for an id outside
    ``[0, n)``): for example the profile each row of a batch is viewing."""
    ids = np.asarray(ids, dtype=np.int64)
    inside = (ids >= 0) & (ids < n)
    return sp.csr_matrix(
        (np.ones(int(inside.sum()), np.float32), ids[inside], np.r_[0, np.cumsum(inside)]),
        shape=(ids.size, n),
    )


def rows_cells_on(ui, rows: np.ndarray, columns: np.ndarray) -> sp.csr_matrix:
    """Ones at the stored non-zero cells of ``ui``'s rows ``rows`` (bool, one per row)
    whose column is in ``columns`` (bool, one per column), read from those rows only (a
    few of the batch): the interactions a query filter leaves out."""
    ui = canonical_csr(ui)
    picked = np.flatnonzero(rows)
    at, counts = cell_positions(ui.indptr, picked)
    cols = ui.indices[at]
    keep = columns[cols] & (ui.data[at] != 0)
    r = np.repeat(picked, counts)[keep]
    return row_ordered_cells(r, cols[keep], np.ones(r.size, np.float32), ui.shape)


def row_ordered_cells(rows: np.ndarray, cols: np.ndarray, data, shape) -> sp.csr_matrix:
    """The CSR matrix of cells ``(rows[k], cols[k])`` holding ``data[k]``, listed row by
    row (``rows`` sorted, no cell twice)."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    return sp.csr_matrix((data, cols, indptr), shape=shape)


def followed_cells(follows, viewers: ViewerBatch, n: int, use_call: bool) -> sp.csr_matrix:
    """What the batch's viewers follow, float32 CSR ``(m, n)``: their stored rows of
    ``follows`` (ones; none without it or without viewer ids), plus, with ``use_call``,
    the call's non-zero interactions (a cell known both ways holds 2)."""
    out = sp.csr_matrix((viewers.size, n), dtype=np.float32)
    if follows is not None and viewers.userids is not None:
        out = out + viewer_rows(follows, np.asarray(viewers.userids, np.int64))
    ui = viewers.user_items
    if use_call and ui is not None and ui.shape[1] == n:
        out = out + (sp.csr_matrix(ui) != 0).astype(np.float32)
    return sp.csr_matrix(out)


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
    mode, failure, surfaces, name : keyword-only
        Common filter settings (see :mod:`guardrails.filters.base`).
    """

    name = "suppress_risk"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {"risk": "vector", "threshold": "float"}

    def __init__(
        self,
        risk,
        *,
        threshold: float,
        reason: str = "risk_neighborhood",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        self.risk_ = check_vector(risk, "risk", "SuppressRisk", low=0.0, high=1.0)
        self.threshold_ = check_float(
            threshold, "threshold", "SuppressRisk", low=0.0, high=1.0, low_open=True
        )
        self._apply_settings(locals(), "SuppressRisk")

    def params(self) -> tuple:
        return self._fitted()

    def compile_global(self, catalog: Catalog) -> PlanPart:
        catalog.check_sized("SuppressRisk", "risk", self.risk_.shape[0])
        return PlanPart(self.name, self.reason, hard_mask=self.risk_ >= self.threshold_)


class DemoteRisk(Filter):
    """Subtract ``weight * curve(risk)`` from every score of a candidate (graded demotion).

    Parameters
    ----------
    risk : array-like of float, shape (n_candidates,)
        Risk per candidate in [0, 1].
    weight : float
        Demotion in score units at ``curve(risk) = 1`` (scores are dot products for
        ``recommend`` and cosines for ``similar_items``).
    reason : str
        Reason code recorded for the demoted items.
    curve : {"linear", "quadratic", "sqrt", "step"}, keyword-only
        Shape of the demotion: ``risk``, ``risk**2`` (gentle on low risk), ``sqrt(risk)``
        (steep on low risk) or ``1`` for ``risk >= floor`` (a flat demotion).
    knots : sequence of (risk, level) pairs, optional, keyword-only
        A piecewise-linear curve through these points instead of ``curve`` (risks
        increasing, levels in [0, 1] and non-decreasing), for example
        ``[(0.1, 0.0), (0.3, 0.5), (1.0, 1.0)]``.
    floor : float, keyword-only
        Candidates with ``risk < floor`` are never demoted.
    mode, failure, surfaces, name : keyword-only
        Common filter settings (see :mod:`guardrails.filters.base`).
    """

    name = "demote_risk"
    CURVES = ("linear", "quadratic", "sqrt", "step")

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "risk": "vector",
        "weight": "float",
        "curve": "str",
        "knots": "knots",
        "floor": "float",
    }

    def __init__(
        self,
        risk,
        *,
        weight: float,
        reason: str = "risk_demoted",
        curve: str = "linear",
        knots=None,
        floor: float = 0.0,
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        where = "DemoteRisk"
        self.risk_ = check_vector(risk, "risk", where, low=0.0, high=1.0)
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        self.curve_ = check_choice(curve, "curve", where, self.CURVES)
        self.floor_ = check_float(floor, "floor", where, low=0.0, high=1.0)
        self.knots_ = None if knots is None else _check_knots(knots, where)
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        # The linear default keeps the fingerprint of the original two-parameter filter
        # shape plus its curve, so versions stay stable across releases.
        return self._fitted()

    def levels(self) -> np.ndarray:
        """``curve(risk)`` per candidate, float64 in [0, 1]."""
        r = self.risk_.astype(np.float64)
        if self.knots_ is not None:
            lv = np.interp(r, self.knots_[:, 0], self.knots_[:, 1], left=0.0)
        elif self.curve_ == "linear":
            lv = r
        elif self.curve_ == "quadratic":
            lv = r * r
        elif self.curve_ == "sqrt":
            lv = np.sqrt(r)
        else:
            lv = (r > 0).astype(np.float64)
        lv = np.where(r < self.floor_, 0.0, lv)
        return np.clip(lv, 0.0, 1.0)

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        catalog.check_sized("DemoteRisk", "risk", self.risk_.shape[0])
        if self.weight_ == 0.0:
            return None
        return PlanPart(
            self.name, self.reason, penalty=(self.weight_ * self.levels()).astype(np.float32)
        )


def _check_knots(knots, where: str) -> np.ndarray:
    what = "a sequence of (risk, level) pairs with increasing risks in [0, 1] and non-decreasing levels in [0, 1]"
    try:
        k = np.asarray(knots, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise fail("knots", where, what, knots) from exc
    if k.ndim != 2 or k.shape[1] != 2 or k.shape[0] < 1 or not np.isfinite(k).all():
        raise fail("knots", where, what, knots)
    if (
        (k < 0).any()
        or (k > 1).any()
        or (np.diff(k[:, 0]) <= 0).any()
        or (np.diff(k[:, 1]) < 0).any()
    ):
        raise fail("knots", where, what, knots)
    return k
