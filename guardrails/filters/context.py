"""Viewing-context risk: a risky profile, or a new account's risky first follows.

The circuit breaker (:class:`~guardrails.filters.ViewerCircuitBreaker`) trips on the
*share* of a viewer's interactions on dropped candidates. Two cases slip under it:

- the profile being viewed (``similar_items``) is risky but not risky enough to drop: an
  unflagged seller whose own propagated risk sits a few times above the catalogue's
  typical level while its embedding neighbours are all network accounts. Its "suggested
  accounts" would be its neighbourhood;
- a new account (a handful of follows) that starts from such an account: its first
  follows are all it has, and they point into the network.

:class:`ContextRisk` treats both as the context of the slate: a viewer whose context (the
viewed profile, or, for viewers with at most ``new_viewer_interactions`` interactions in
the call, those interactions) touches a candidate at or above ``threshold`` is served only
the low-risk pool, and the context candidate itself is outside that pool, so a risky
profile never appears in its own suggestions. Established viewers (more interactions) are
left to the share-based breaker, so ordinary users who follow one borderline account
keep their recommendations. For ``similar_users`` (a ``"users"`` catalogue in the same id
space as the candidates) the queried account is the profile being viewed.

With ``exclude_viewed`` the viewed profile itself (the item of ``similar_items``, the
queried account of ``similar_users``) is never in its own list, whatever its risk: a
"similar accounts" list on a profile page does not show the profile. An account the
policy cannot clear then never appears in its own suggestions, without the policy
having to decide, on little evidence, whether it is risky.

With ``strip_context`` a risky viewed profile is also left out of its list's query. Ranked
by similarity to the risky profile, the pool is led by the accounts closest to it, and
those are the network's camouflaged members whose own risk stays below the line; left
out, the query is empty and the pool is ranked by the Guard's backfill where it has one
(factor models' ``similar_items``; give it popularity), else for the model's typical
user (factor models), or holds only the backfill (item-item models, where nothing is
reachable from an empty query).

A new account stops counting as new once it has followed more than
``new_viewer_interactions`` accounts, but the model would still fold its risky first
follow into its taste: with ``strip_interactions`` (the default) the risky interactions of
viewers the policy does not know are left out of their queries, whatever their number.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import (
    canonical_csr,
    check_bool,
    check_float,
    check_int,
    check_mask,
    check_vector,
)
from ..core.plan import PlanPart
from .base import Catalog, CohortTable, Filter, ViewerBatch
from .primitive import id_cells, rows_cells_on, viewer_values

__all__ = ["ContextRisk"]


class ContextRisk(Filter):
    """Serve only a low-risk pool when the viewing context is risky.

    Parameters
    ----------
    risk : array-like of float, shape (n_candidates,)
        Candidate risk in [0, 1].
    threshold : float, keyword-only
        A context candidate at or above this is risky (for example the demotion floor of
        the default policy: the flagged band, not only the dropped accounts).
    pool : array-like of bool, shape (n_candidates,), keyword-only
        Candidates a viewer with a risky context may still get; candidates at or above
        ``threshold`` are always left out of it when the filter compiles.
    new_viewer_interactions : int, keyword-only
        Viewers with at most this many interactions in the call are new accounts: their
        interactions count as context. 0 reads only the viewed profile.
    new_viewer_share : float, keyword-only
        A new account's follows make its context risky only when at least this share of
        them is on risky candidates (0: any one). An ordinary new account that follows
        one band account among several ordinary ones keeps its recommendations; one that
        starts from a risky account is risky from its first follow.
    known_viewers : int, optional, keyword-only
        Viewers with an id below this are established accounts (the model and the stored
        viewer risk know them): only their viewed profile counts, whatever their number
        of interactions. ``None``: every viewer with few interactions is new.
    strip_interactions : bool, keyword-only
        Leave the risky interactions of viewers the policy does not know (see
        :meth:`unknown_viewers`) out of their queries, whatever their number: a new
        account that follows one risky account and then many ordinary ones is not
        steered back to the risky one's neighbourhood once it stops counting as new.
    exclude_viewed : bool, keyword-only
        Never return the viewed profile (``similar_items``' item, ``similar_users``'
        queried account) in its own list, reason ``"viewed_profile"``. Other calls and
        the rest of the slate are unchanged.
    strip_context : bool, keyword-only
        Leave a risky viewed profile (``similar_items``' item, ``similar_users``' queried
        account) out of its list's query, so that the pool is not ranked by similarity
        to it (see the module docstring).
    sticky : bool, keyword-only
        With ``known_viewers``: an unknown viewer's context stays risky past
        ``new_viewer_interactions`` interactions while at least one in
        ``new_viewer_interactions`` of them is on a risky candidate (the new-account rule
        carried on as a share, so following ordinary accounts after risky ones does not
        end it at once; one risky follow among more than ``new_viewer_interactions``
        does not start it).
    protected : bool, keyword-only
        A child-safety rule (see :class:`~guardrails.filters.ViewerCircuitBreaker`):
        neither held back nor failed open.
    reason, mode, failure, surfaces, name : keyword-only
    """

    name = "context_risk"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "risk": "vector",
        "threshold": "float",
        "pool": "mask",
        "new_viewer_interactions": "int",
        "new_viewer_share": "float",
        "known_viewers": "int",
        "strip_interactions": "bool",
        "exclude_viewed": "bool",
        "sticky": "bool",
        "strip_context": "bool",
        "protected": "bool",
    }

    def __init__(
        self,
        risk,
        *,
        threshold: float,
        pool,
        new_viewer_interactions: int = 5,
        new_viewer_share: float = 0.0,
        known_viewers: int | None = None,
        strip_interactions: bool = True,
        exclude_viewed: bool = False,
        sticky: bool = False,
        strip_context: bool = False,
        protected: bool = False,
        reason: str = "risky_context",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        where = "ContextRisk"
        self.risk_ = check_vector(risk, "risk", where, low=0.0, high=1.0)
        self.threshold_ = check_float(
            threshold, "threshold", where, low=0.0, high=1.0, low_open=True
        )
        self.pool_ = check_mask(pool, "pool", where, self.risk_.shape[0])
        self.new_viewer_interactions_ = check_int(
            new_viewer_interactions, "new_viewer_interactions", where, low=0
        )
        self.new_viewer_share_ = check_float(
            new_viewer_share, "new_viewer_share", where, low=0.0, high=1.0
        )
        self.known_viewers_ = (
            None
            if known_viewers is None
            else check_int(known_viewers, "known_viewers", where, low=0)
        )
        self.strip_interactions_ = check_bool(strip_interactions, "strip_interactions", where)
        self.exclude_viewed_ = check_bool(exclude_viewed, "exclude_viewed", where)
        self.sticky_ = check_bool(sticky, "sticky", where)
        self.strip_context_ = check_bool(strip_context, "strip_context", where)
        self._protect(protected, where)
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return (
            self.risk_,
            self.threshold_,
            self.pool_,
            self.new_viewer_interactions_,
            self.new_viewer_share_,
            -1 if self.known_viewers_ is None else self.known_viewers_,
            self.strip_interactions_,
            self.exclude_viewed_,
            self.sticky_,
            self.strip_context_,
        )

    def viewed(self, viewers: ViewerBatch, kind: str = "items") -> sp.csr_matrix | None:
        """The viewed profile of each row of the batch, as a (m, n) 0/1 matrix, or
        ``None`` when no row views one: ``similar_items``' item (the context), or for a
        ``"users"`` catalogue ``similar_users``' queried account."""
        n = self.risk_.shape[0]
        if kind == "users":
            if viewers.userids is None:
                return None
            cells = id_cells(viewers.userids, n)
            return cells if cells.nnz else None
        ctx = viewers.context_items
        if ctx is None or ctx.shape[1] != n or ctx.nnz == 0:
            return None
        out = sp.csr_matrix(ctx != 0, dtype=np.float32)
        return out

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        """With ``exclude_viewed``: the viewed profile is never in its own list."""
        if not self.exclude_viewed_:
            return None
        catalog.check_sized("ContextRisk", "risk", self.risk_.shape[0])
        mask = self.viewed(viewers, catalog.kind)
        if mask is None:
            return None
        return PlanPart(self.name, "viewed_profile", viewer_mask=mask)

    def risky_candidates(self) -> np.ndarray:
        """Bool mask of the candidates at or above ``threshold``: a viewing context on one
        of them is risky, and none of them is in the pool."""
        return self.risk_ >= self.threshold_

    def risky_context(self, viewers: ViewerBatch, kind: str = "items") -> np.ndarray:
        """Bool mask of the batch's viewers whose context touches a risky candidate.

        For a ``"users"`` catalogue (``similar_users``, users and candidates in one id
        space) the queried account is the profile being viewed, so it is the context.
        """
        n = self.risk_.shape[0]
        risky = self.risky_candidates().astype(np.float32)
        out = np.zeros(viewers.size, dtype=bool)
        if kind == "users" and viewers.userids is not None:
            out = viewer_values(risky > 0, viewers.userids, False)
        ctx = viewers.context_items
        if ctx is not None and ctx.shape[1] == n:
            out |= (abs(sp.csr_matrix(ctx)) @ risky) > 0
        ui = viewers.user_items
        if self.new_viewer_interactions_ and ui is not None and ui.shape[1] == n:
            ui = canonical_csr(ui)
            count = np.diff(ui.indptr)
            # Each row's non-zero interactions on risky candidates: one product over the
            # stored cells as ones (whole numbers in float32), no copy of their columns.
            ones = (ui.data != 0).astype(np.float32)
            on_risky = sp.csr_matrix((ones, ui.indices, ui.indptr), shape=ui.shape) @ risky
            new = count <= self.new_viewer_interactions_
            if self.known_viewers_ is not None and viewers.userids is not None:
                unknown = np.asarray(viewers.userids) >= self.known_viewers_
                new &= unknown
                if self.sticky_:
                    # At most new_viewer_interactions follows, one risky is this share.
                    new |= unknown & (on_risky * self.new_viewer_interactions_ >= count)
            out |= new & (on_risky > 0) & (on_risky >= self.new_viewer_share_ * count)
        return out

    def unknown_viewers(self, viewers: ViewerBatch) -> np.ndarray:
        """Bool mask of the batch's viewers the model and the stored viewer risk do not
        know (ids from ``known_viewers`` on; without it, viewers with at most
        ``new_viewer_interactions`` interactions in the call)."""
        ui = viewers.user_items
        m = viewers.size
        if self.known_viewers_ is not None:
            if viewers.userids is None:
                return np.zeros(m, dtype=bool)
            return np.asarray(viewers.userids) >= self.known_viewers_
        if ui is None:
            return np.zeros(m, dtype=bool)
        return np.diff(sp.csr_matrix(ui).indptr) <= self.new_viewer_interactions_

    def compile_queries(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix | None:
        """Leave an unknown viewer's risky interactions out of its query.

        A new account that follows a risky account and then many ordinary ones is no
        longer new by its count, but the model would still fold the risky follow into
        its taste; left out, its recommendations come from the rest of its follows.
        """
        ui = viewers.user_items
        n = self.risk_.shape[0]
        if not self.strip_interactions_ or ui is None or ui.shape[1] != n:
            return None
        rows = self.unknown_viewers(viewers)
        if not rows.any():
            return None
        # The unknown rows' non-zero interactions on risky candidates.
        strip = rows_cells_on(ui, rows, self.risky_candidates())
        return strip if strip.nnz else None

    def compile_profile_queries(
        self, catalog: Catalog, viewers: ViewerBatch
    ) -> sp.csr_matrix | None:
        """With ``strip_context``: the risky viewed profiles of a batch of profile views
        (``similar_items``' items, ``similar_users``' queried accounts), left out of their
        own list's query."""
        ctx = viewers.context_items
        if not self.strip_context_ or ctx is None or ctx.shape[1] != self.risk_.shape[0]:
            return None
        return self._on_risky(sp.csr_matrix(ctx))

    def _on_risky(self, cells: sp.csr_matrix) -> sp.csr_matrix | None:
        """The stored cells of ``cells`` on risky candidates, as a 0/1 matrix."""
        risky = sp.diags(self.risky_candidates().astype(np.float32))
        strip = sp.csr_matrix((cells != 0).astype(np.float32) @ risky)
        strip.eliminate_zeros()
        return strip if strip.nnz else None

    def compile_cohorts(self, catalog: Catalog) -> CohortTable:
        catalog.check_sized("ContextRisk", "risk", self.risk_.shape[0])
        # The risky candidates are never in the pool: a risky profile is not its own suggestion.
        allowed = self.pool_ & ~self.risky_candidates()
        return CohortTable(self.name, self.reason, (~allowed)[None, :], None, ("risky_context",))

    def assign_cohorts(self, catalog: Catalog, viewers: ViewerBatch) -> np.ndarray:
        return np.where(self.risky_context(viewers, catalog.kind), 0, -1).astype(np.int64)
