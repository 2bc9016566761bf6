"""Built-in safety filters that act per viewer: circuit breaker, share caps, relationships.

Split from :mod:`guardrails.filters.safety` (which still exports them) so that each
module holds one family of rules.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import (
    canonical_csr,
    check_bool,
    check_csr,
    check_float,
    check_int,
    check_mask,
    check_vector,
    fail,
    is_int_vector,
)
from ..core._exact import cell_positions
from ..core.plan import PlanPart
from ._actions import check_action
from ._risk import viewer_share
from .base import CapSpec, Catalog, CohortTable, Filter, ViewerBatch
from .primitive import (
    followed_cells,
    row_ordered_cells,
    rows_cells_on,
    select_cells,
    stored_cells,
    viewer_values,
)

__all__ = ["ViewerCircuitBreaker", "ShareCap", "RelationshipRule"]


# ---------------------------------------------------------------------------- circuit breaker
class ViewerCircuitBreaker(Filter):
    """Viewers whose own interactions sit in flagged neighbourhoods get a low-risk pool only.

    A viewer's risk is the weighted share of their interactions in the call
    (``user_items``, so new and test accounts count from their first follows) that fall on
    candidates with ``risk >= item_threshold``, or their stored ``viewer_risk`` when that
    is higher. A viewer at or above ``trip`` is *tripped*: for them every candidate outside
    the low-risk pool is dropped, and (with ``strip_interactions``) their interactions on
    risky candidates are left out of the query, which switches off expansion from their
    niche interests (for ``recalculate_user`` and item-item models, whose queries come from
    ``user_items``). This is what stops a test account being flooded after following a
    handful of suggestions.

    Parameters
    ----------
    risk : array-like of float, shape (n_candidates,)
        Propagated candidate risk in [0, 1].
    item_threshold : float, keyword-only
        Candidates at or above this count as risky interactions.
    trip : float, keyword-only
        Viewer risk at which the breaker trips.
    pool_threshold : float, optional, keyword-only
        Tripped viewers only get candidates with ``risk < pool_threshold``; defaults to
        ``item_threshold / 2``.
    pool : array-like of bool, shape (n_candidates,), optional, keyword-only
        An explicit low-risk pool instead of ``pool_threshold`` (for example low-risk
        and popular accounts).
    viewer_risk : array-like of float, shape (n_users,), optional, keyword-only
        Stored viewer risk (for example from the same propagation over users).
    min_interactions : int, keyword-only
        Call interactions needed before the share counts (stored risk always counts).
    strip_interactions : bool, keyword-only
    protected : bool, keyword-only
        A child-safety rule (:attr:`Filter.protected <guardrails.filters.Filter.protected>`).
    reason : str, keyword-only
    mode, failure, surfaces, name : keyword-only
    """

    name = "viewer_circuit_breaker"
    _transient = ("_memo",)

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "risk": "vector",
        "item_threshold": "float",
        "trip": "float",
        "pool_threshold": "float",
        "pool": "mask",
        "viewer_risk": "vector",
        "min_interactions": "int",
        "strip_interactions": "bool",
        "protected": "bool",
    }

    def __init__(
        self,
        risk,
        *,
        item_threshold: float = 0.3,
        trip: float = 0.2,
        pool_threshold: float | None = None,
        pool=None,
        viewer_risk=None,
        min_interactions: int = 1,
        strip_interactions: bool = True,
        protected: bool = False,
        reason: str = "viewer_circuit_breaker",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        where = "ViewerCircuitBreaker"
        self.risk_ = check_vector(risk, "risk", where, low=0.0, high=1.0)
        self.item_threshold_ = check_float(
            item_threshold, "item_threshold", where, low=0.0, high=1.0, low_open=True
        )
        self.trip_ = check_float(trip, "trip", where, low=0.0, high=1.0, low_open=True)
        self.pool_threshold_ = (
            self.item_threshold_ / 2
            if pool_threshold is None
            else check_float(
                pool_threshold, "pool_threshold", where, low=0.0, high=1.0, low_open=True
            )
        )
        n = self.risk_.shape[0]
        self.pool_ = None if pool is None else check_mask(pool, "pool", where, n)
        self.viewer_risk_ = (
            None
            if viewer_risk is None
            else check_vector(viewer_risk, "viewer_risk", where, low=0.0, high=1.0)
        )
        self.min_interactions_ = check_int(min_interactions, "min_interactions", where, low=1)
        self.strip_interactions_ = check_bool(strip_interactions, "strip_interactions", where)
        self._protect(protected, where)
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return self._fitted()

    def low_risk_pool(self) -> np.ndarray:
        return self.pool_ if self.pool_ is not None else self.risk_ < self.pool_threshold_

    def viewer_risk_of(self, viewers: ViewerBatch) -> np.ndarray:
        """Risk of every viewer in the batch, float64 of shape ``(m,)``."""
        m = viewers.size
        out = np.zeros(m, dtype=np.float64)
        ui = viewers.interactions
        if ui is not None and ui.shape[1] == self.risk_.shape[0]:
            share, count = viewer_share(ui, self.risk_ >= self.item_threshold_)
            out = np.where(count >= self.min_interactions_, share, 0.0)
        if self.viewer_risk_ is not None and viewers.userids is not None:
            out = np.maximum(out, viewer_values(self.viewer_risk_, viewers.userids, 0.0))
        return out

    def tripped(self, viewers: ViewerBatch) -> np.ndarray:
        """Bool mask of the batch's tripped viewers (memoised for the last batch)."""
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is viewers:
            return memo[1]
        out = self.viewer_risk_of(viewers) >= self.trip_
        self._memo = (viewers, out)
        return out

    def compile_cohorts(self, catalog: Catalog) -> CohortTable:
        catalog.check_sized("ViewerCircuitBreaker", "risk", self.risk_.shape[0])
        return CohortTable(
            self.name, self.reason, (~self.low_risk_pool())[None, :], None, ("tripped",)
        )

    def assign_cohorts(self, catalog: Catalog, viewers: ViewerBatch) -> np.ndarray:
        return np.where(self.tripped(viewers), 0, -1).astype(np.int64)

    def compile_queries(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix | None:
        ui = viewers.user_items
        if not self.strip_interactions_ or ui is None or ui.shape[1] != self.risk_.shape[0]:
            return None
        trip = self.tripped(viewers)
        if not trip.any():
            return None
        # The tripped rows' stored non-zero interactions outside the low-risk pool.
        return rows_cells_on(ui, trip, ~self.low_risk_pool())


# ---------------------------------------------------------------------------- share caps
class ShareCap(Filter):
    """At most a share of a slate from risky candidates, or from any one community.

    Applied at selection time: the Guard over-fetches, keeps the best items within the
    caps and backfills from the next eligible items, re-fetching when short, so a slate
    stays full whenever enough items exist within the caps.

    Parameters
    ----------
    max_share : float, keyword-only
        Largest share of a slate of ``N`` from one group: at most
        ``max(min_count, floor(max_share * N))`` items.
    risk : array-like of float, shape (n_candidates,), optional, keyword-only
        Cap the candidates with ``risk >= threshold`` (one group).
    threshold : float, keyword-only
    communities : array-like of int, shape (n_candidates,), optional, keyword-only
        Cap every community (``-1``: uncapped). Exactly one of ``risk`` and
        ``communities``.
    min_count : int, optional, keyword-only
        Lower bound on the allowance; defaults to 0 for risk, 1 for communities.
    reason : str, keyword-only
    mode, failure, surfaces, name : keyword-only
    """

    name = "share_cap"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "max_share": "float",
        "risk": "vector",
        "threshold": "float",
        "communities": "ints",
        "min_count": "int",
    }

    def __init__(
        self,
        *,
        max_share: float,
        risk=None,
        threshold: float = 0.3,
        communities=None,
        min_count: int | None = None,
        reason: str = "share_cap",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        where = "ShareCap"
        self.max_share_ = check_float(max_share, "max_share", where, low=0.0, high=1.0)
        if (risk is None) == (communities is None):
            raise fail(
                "risk",
                where,
                "given, or communities given, but not both",
                "both" if risk is not None else None,
            )
        self.threshold_ = check_float(
            threshold, "threshold", where, low=0.0, high=1.0, low_open=True
        )
        self.risk_ = None if risk is None else check_vector(risk, "risk", where, low=0.0, high=1.0)
        if communities is not None:
            c = np.asarray(communities)
            if not is_int_vector(c, low=-1):
                raise fail("communities", where, "a 1-d array of ints >= -1", communities)
            self.communities_ = c.astype(np.int64)
        else:
            self.communities_ = None
        default_min = 0 if self.risk_ is not None else 1
        self.min_count_ = (
            default_min if min_count is None else check_int(min_count, "min_count", where, low=0)
        )
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return self._fitted()

    def compile_caps(self, catalog: Catalog) -> CapSpec:
        if self.risk_ is not None:
            catalog.check_sized("ShareCap", "risk", self.risk_.shape[0])
            groups = np.where(self.risk_ >= self.threshold_, 0, -1).astype(np.int64)
        else:
            catalog.check_sized("ShareCap", "communities", self.communities_.shape[0])
            groups = self.communities_
        return CapSpec(self.name, self.reason, groups, self.max_share_, self.min_count_)


# ---------------------------------------------------------------------------- relationships
class RelationshipRule(Filter):
    """An action on target candidates that applies only to viewers who do not follow them.

    "Do not amplify": a borderline account stays visible to its followers but is never
    suggested (``"drop"``) or is demoted (``"demote"``) for everybody else.

    Parameters
    ----------
    targets : array-like of bool, shape (n_candidates,), or of int
        Candidates the rule acts on.
    follows : sparse matrix, shape (n_users, n_candidates), optional, keyword-only
        Stored relationships: non-zero ``(u, i)`` when ``u`` follows ``i``.
    use_call_interactions : bool, keyword-only
        Also treat the interactions passed in the call (``user_items``) as follows.
    action : {"drop", "demote"}, keyword-only
    weight : float, keyword-only
    reason : str, keyword-only
    mode, failure, surfaces, name : keyword-only
    """

    name = "relationship_rule"
    _transient = ("_follows_memo",)

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "targets": "indices",
        "follows": "csr",
        "use_call_interactions": "bool",
        "action": "str",
        "weight": "float",
    }

    def __init__(
        self,
        targets,
        *,
        follows=None,
        use_call_interactions: bool = True,
        action: str = "drop",
        weight: float = 1.0,
        reason: str = "not_amplified",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        where = "RelationshipRule"
        t = np.asarray(targets)
        if t.dtype == bool:
            if t.ndim != 1:
                raise fail("targets", where, "a 1-d bool mask or an array of indices", targets)
            self.targets_ = np.flatnonzero(t).astype(np.int64)
            self.n_candidates_: int | None = int(t.shape[0])
        else:
            if not is_int_vector(t, low=0):
                raise fail(
                    "targets", where, "a 1-d bool mask or an array of non-negative indices", targets
                )
            self.targets_ = np.unique(t.astype(np.int64))
            self.n_candidates_ = None
        self.follows_ = None
        if follows is not None:
            self.follows_ = stored_cells(check_csr(follows, "follows", where))
        self.use_call_interactions_ = check_bool(
            use_call_interactions, "use_call_interactions", where
        )
        self.action_ = check_action(action, where)
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return self._fitted(
            "targets", "n_candidates", "follows", "use_call_interactions", "action", "weight"
        )

    def _check(self, catalog: Catalog) -> None:
        if self.n_candidates_ is not None:
            catalog.check_sized("RelationshipRule", "targets", self.n_candidates_)
        catalog.check_indices("RelationshipRule", "targets", self.targets_)
        if self.follows_ is not None:
            catalog.check_sized("RelationshipRule", "follows", self.follows_.shape[1])

    def followed(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix:
        """Bool-valued CSR ``(m, n)`` of the relationships known for the batch."""
        return followed_cells(self.follows_, viewers, catalog.n, self.use_call_interactions_)

    def followed_targets(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix:
        """Ones at the cells of :meth:`followed` whose candidate is a target.

        The same cells as ``followed(...) > 0`` restricted to the targets' columns, but
        each source is cut to those columns before it is sliced and merged.
        """
        m, n = viewers.size, catalog.n
        is_target = np.zeros(n, dtype=bool)
        is_target[self.targets_] = True
        rows, cols = [], []
        if self.follows_ is not None and viewers.userids is not None:
            # Each viewer's stored row (none for ids beyond the matrix), read in place.
            ft = self._target_follows(is_target)
            u = np.asarray(viewers.userids, dtype=np.int64)
            known = np.flatnonzero((u >= 0) & (u < ft.shape[0]))
            at, counts = cell_positions(ft.indptr, u[known])
            rows.append(np.repeat(known, counts))
            cols.append(ft.indices[at].astype(np.int64))
        ui = viewers.user_items
        if self.use_call_interactions_ and ui is not None and ui.shape[1] == n:
            ui = canonical_csr(ui)
            hit = np.flatnonzero(np.take(is_target, ui.indices) & (ui.data != 0))
            # The row of each stored cell: the last row starting at or before it.
            rows.append(np.searchsorted(ui.indptr, hit, side="right").astype(np.int64) - 1)
            cols.append(ui.indices[hit].astype(np.int64))
        keys = np.unique(np.concatenate(rows) * n + np.concatenate(cols)) if rows else None
        if keys is None or not keys.size:
            return sp.csr_matrix((m, n), dtype=np.float32)
        r, c = np.divmod(keys, n)
        return row_ordered_cells(r, c, np.ones(keys.size, dtype=np.float32), (m, n))

    def _target_follows(self, is_target: np.ndarray) -> sp.csr_matrix:
        """``follows_`` with only the targets' columns stored (computed once)."""
        memo = getattr(self, "_follows_memo", None)
        if memo is not None and memo[0] is self.follows_ and memo[1] is self.targets_:
            return memo[2]
        f = self.follows_
        assert f is not None
        out = select_cells(f, is_target[f.indices])
        self._follows_memo = (self.follows_, self.targets_, out)
        return out

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        # A demotion is global, and followers get it back per viewer (a few cells), which
        # costs far less than a per-viewer penalty on every target for every viewer.
        self._check(catalog)
        if self.action_ != "demote" or self.weight_ == 0 or self.targets_.size == 0:
            return None
        pen = np.zeros(catalog.n, dtype=np.float32)
        pen[self.targets_] = np.float32(self.weight_)
        return PlanPart(self.name, self.reason, penalty=pen)

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        self._check(catalog)
        m, n, k = viewers.size, catalog.n, self.targets_.size
        if m == 0 or k == 0:
            return None
        if self.action_ == "demote":
            if self.weight_ == 0:
                return None
            back = self.followed_targets(catalog, viewers)
            if not back.nnz:
                return None
            back.data[:] = -np.float32(self.weight_)
            # Negative cells only restore this filter's own global demotion (checked by the
            # policy), so the net effect on any cell is never a boost.
            return PlanPart(self.name, self.reason, viewer_penalty=back)
        base = sp.csr_matrix(
            (
                np.ones(m * k, dtype=np.float32),
                np.tile(self.targets_, m),
                np.arange(0, m * k + 1, k, dtype=np.int64),
            ),
            shape=(m, n),
        )
        fol = self.followed(catalog, viewers)
        if fol.nnz:
            base = sp.csr_matrix(base - base.multiply(fol > 0))
            base.eliminate_zeros()
        return PlanPart(self.name, self.reason, viewer_mask=base)
