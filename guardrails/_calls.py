"""A Guard's call surface: implicit's methods written once, the request each call is
checked into, and the result it returns.

:class:`GuardCalls` turns ``recommend``, ``similar_items``, ``similar_users`` and their
``*_detailed`` forms into ``execute(prepare(...))``; :func:`prepare_request` checks one
call's arguments against an adapted model into a frozen :class:`GuardRequest`. The
:class:`~guardrails.guard.Guard` executes requests; :class:`~guardrails.ServingGuard`
wraps its ``execute``. Public names live in :mod:`guardrails.guard`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._validation import check_csr, check_factors, check_ids, check_int, fail
from .exceptions import UnsupportedModelError, ValidationError
from .filters.base import ViewerBatch
from .filters.primitive import id_cells
from .models import FactorModel, ItemItemModel
from .policy import Decision

__all__ = ["GuardResult", "GuardRequest", "GuardCalls", "ModelSwapped", "prepare_request"]

#: Id bound for ids not checked against a catalogue (new users, viewers).
ANY_ID = 2**62


class ModelSwapped(ValidationError):
    """A request checked against a model that :meth:`Guard.swap_model` has replaced since."""


@dataclass(frozen=True, eq=False)
class GuardResult:
    """A guarded slate with what it was computed against.

    Attributes
    ----------
    ids : ndarray of int32 (int64 for catalogues of 2**31 ids or more)
        Shape ``(n,)`` for a single id, ``(m, N')`` for a batch (padded with ``-1``).
    scores : ndarray
        Same shape as ``ids``; float32 for factor models, float64 for item-item models.
    policy_version : str
        Content hash of the policy that was applied.
    snapshot_version : str or None
        Version of the safety-signal snapshot the slate was computed against.
    info : dict
        Per-call counters (see :class:`~guardrails.policy.DecisionCounters`).
    decisions : tuple of Decision
        With ``record=True``: one decision per candidate removed from the slate (compared
        with the unguarded slate) or demoted in it, and, for shadow or held-back filters,
        per candidate that full enforcement would remove.
    """

    ids: np.ndarray
    scores: np.ndarray
    policy_version: str
    snapshot_version: str | None = None
    info: dict = field(default_factory=dict)
    decisions: tuple[Decision, ...] = ()


@dataclass(frozen=True, eq=False)
class GuardRequest:
    """One call of a Guard, checked once (:meth:`Guard.prepare`) and run by
    :meth:`Guard.execute`.

    A request is bound to the model, not to the policy or the snapshot: those are read
    when it runs, so a wrapper may run it again after a swap without checking anything
    twice.

    Attributes
    ----------
    method : {"recommend", "similar_items", "similar_users"}
    ids : ndarray of int64, shape (m,)
        The query ids (users for ``recommend`` and ``similar_users``, items for
        ``similar_items``).
    scalar : bool
        The call passed one id (the result is 1-d, padding removed).
    N : int
        Slate length asked for.
    n_candidates : int
        Size of the candidate space (``n_items``, or ``n_users`` for ``similar_users``).
    viewers : ViewerBatch
        Who sees each row, with the interactions and context filters read.
    kind : {"dot", "cos", "sim", "users", "rank"}
        The kernel's candidate space (``"rank"``: :attr:`ranking`).
    queries : ndarray, csr_matrix or None
        Query rows for the kernel; ``None`` where they come from the compiled state (the
        normalised factors of the model).
    dtype : numpy dtype
        Score dtype of the result.
    call_mask : ndarray of int64 or None
        Candidates never returned in this call (``filter_items`` / ``filter_users``).
    restrict : ndarray of int64 or None
        Sorted candidates to rank, the only ones returned (``items`` / ``users``).
    exclude : csr_matrix, shape (m, n_candidates), or None
        Per-row candidates never returned (the viewer's own items with
        ``filter_already_liked_items``).
    requery : callable or None
        ``requery(rows, strip, queries) -> (queries, emptied)``: query rows recomputed
        without the cells in ``strip`` (filters that strip interactions, or a viewed
        profile, from a query); ``queries`` holds the call's query rows as the Guard
        resolved them (all rows; ``rows`` picks the group's). ``emptied`` (bool per
        recomputed row, or None) marks the factor-model rows left with no query of their
        own, which the Guard ranks by its ``backfill`` when it has one.
    record : bool
        Also return per-item decisions.
    ranking : ndarray of float32, shape (n_candidates,), or None
        A fixed score per candidate that replaces the model (see :meth:`with_ranking`).
    model : FactorModel or ItemItemModel or None
        The adapted model the arguments were checked against; a Guard refuses to run a
        request checked against another model.
    """

    method: str
    ids: np.ndarray
    scalar: bool
    N: int
    n_candidates: int
    viewers: ViewerBatch
    kind: str
    queries: Any = None
    dtype: Any = np.float32
    call_mask: np.ndarray | None = None
    restrict: np.ndarray | None = None
    exclude: sp.csr_matrix | None = None
    requery: Callable | None = None
    record: bool = False
    ranking: np.ndarray | None = None
    model: Any = None

    @property
    def candidates(self) -> str:
        """``"users"`` for ``similar_users``, else ``"items"``."""
        return "users" if self.method == "similar_users" else "items"

    @property
    def n_rows(self) -> int:
        return int(self.ids.size)

    @property
    def limit(self) -> int:
        """Most candidates a row can hold."""
        return self.n_candidates if self.restrict is None else int(self.restrict.size)

    @property
    def n_columns(self) -> int:
        """Columns of a batch result: ``min(N, limit)``."""
        return max(0, min(self.N, self.limit))

    def with_ranking(
        self,
        ranking,
        *,
        drop: np.ndarray | None = None,
        exclude: sp.csr_matrix | None = None,
    ) -> GuardRequest:
        """The same call, scored by a fixed ranking instead of the model.

        Everything else stays: the viewers, the call's exclusions and the policy the
        Guard runs it through (hard masks, per-viewer masks, penalties, caps), so a
        vetted fallback list served this way honours the policy as a model slate does.

        Parameters
        ----------
        ranking : array-like of float, shape (n_candidates,)
            Score of each candidate, higher first; NaN for candidates outside the ranking
            (never returned).
        drop : ndarray of int64, optional
            More candidates never returned in this call.
        exclude : csr_matrix, shape (m, n_candidates), optional
            Per-row candidates never returned, in place of :attr:`exclude`.

        Returns
        -------
        GuardRequest
        """
        where = "GuardRequest.with_ranking"
        scores = np.asarray(ranking, dtype=np.float32)
        if scores.shape != (self.n_candidates,) or np.isinf(scores).any():
            raise fail(
                "ranking", where, f"finite scores or NaN, shape ({self.n_candidates},)", ranking
            )
        outside = np.flatnonzero(np.isnan(scores))
        masks = [m for m in (self.call_mask, outside, drop) if m is not None and m.size]
        call_mask = np.unique(np.concatenate(masks)).astype(np.int64) if masks else None
        return replace(
            self,
            kind="rank",
            ranking=np.nan_to_num(scores, nan=0.0)[:, None],
            queries=np.ones((self.n_rows, 1), dtype=np.float32),
            requery=None,
            call_mask=call_mask,
            exclude=self.exclude if exclude is None else exclude,
        )


def _arguments(own: dict[str, Any]) -> dict[str, Any]:
    """A method's arguments by name, from the ``locals()`` it takes first thing (less
    ``self``): each plain form hands all of its arguments to its ``*_detailed`` form, and
    each ``*_detailed`` form all of its own to :meth:`GuardCalls.prepare`, by name, so the
    public signatures are the one list of them."""
    return {name: value for name, value in own.items() if name != "self"}


class GuardCalls:
    """implicit's call surface, written once: ``recommend``, ``similar_items``,
    ``similar_users`` and their ``*_detailed`` forms.

    Each ``*_detailed`` method turns its arguments into one :class:`GuardRequest` with
    :meth:`prepare` and hands it to :meth:`execute`; the plain forms return
    ``(ids, scores)`` as implicit does. :class:`Guard` implements both steps;
    :class:`~guardrails.ServingGuard` delegates :meth:`prepare` to its guard and wraps
    :meth:`execute` in its fail-closed checks.
    """

    def prepare(self, method: str, /, **arguments) -> GuardRequest:
        raise NotImplementedError

    def execute(self, request: GuardRequest) -> GuardResult:
        raise NotImplementedError

    def _call(self, method: str, /, **arguments) -> GuardResult:
        """``execute(prepare(...))``; checked again if the model was swapped in between."""
        for _ in range(3):
            try:
                return self.execute(self.prepare(method, **arguments))
            except ModelSwapped:
                continue  # Guard.swap_model landed between the two steps
        return self.execute(self.prepare(method, **arguments))

    # ------------------------------------------------------------------ recommend
    def recommend(
        self,
        userid,
        user_items=None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items=None,
        recalculate_user: bool = False,
        items=None,
        *,
        surface: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Guarded top-``N`` items for one user or a batch, with implicit's signature.

        Parameters
        ----------
        userid : int or array-like of int, shape (m,)
        user_items : csr_matrix, shape (m, n_items), optional
            The users' interactions (one row per user in ``userid``). Needed for
            ``filter_already_liked_items``, ``recalculate_user`` and item-item models.
        N : int
            Slate length.
        filter_already_liked_items : bool
            Never return items in the user's row of ``user_items``.
        filter_items : array-like of int, optional
            Items never returned in this call.
        recalculate_user : bool
            Compute the users' factors from ``user_items`` (new and test accounts).
        items : array-like of int, optional
            Rank only these items.
        surface : str, optional, keyword-only
            Where the slate is shown; passed to filters.

        Returns
        -------
        ids : ndarray of int32 (see the module docstring), shape (k,) with k <= N for one
            user, (m, N') for a batch
        scores : ndarray, same shape
        """
        r = self.recommend_detailed(**_arguments(locals()))
        return r.ids, r.scores

    def recommend_detailed(
        self,
        userid,
        user_items=None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items=None,
        recalculate_user: bool = False,
        items=None,
        *,
        surface: str | None = None,
        record: bool = False,
        user_factors=None,
    ) -> GuardResult:
        """As :meth:`recommend`, returning a :class:`GuardResult` with versions.

        With ``record=True`` the result also carries per-item :class:`Decision` records
        (this computes the unguarded slate too, so it roughly doubles the cost).

        ``user_factors`` (array of shape ``(m, n_factors)``, factor models only) scores
        this call with these factors instead of the model's rows for ``userid``: batch
        jobs ship each block its own users' factors and the Guard without user factors
        (:mod:`guardrails.distributed`). User ids are then not checked against the model.
        """
        return self._call("recommend", **_arguments(locals()))

    # ------------------------------------------------------------------ similar items
    def similar_items(
        self,
        itemid,
        N: int = 10,
        recalculate_item: bool = False,
        item_users=None,
        filter_items=None,
        items=None,
        *,
        viewer=None,
        surface: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Guarded items most similar to ``itemid`` ("suggested accounts" on a profile).

        Parameters
        ----------
        itemid : int or array-like of int
        N : int
        recalculate_item : bool
            Recompute the query items' factors from ``item_users`` (implicit models
            that support it).
        item_users : csr_matrix, optional
        filter_items, items : array-like of int, optional
            As in implicit.
        viewer : int or array-like of int, optional, keyword-only
            The viewing user for every query item, so per-viewer filters apply.
        surface : str, optional, keyword-only

        Returns
        -------
        ids, scores : ndarrays, implicit's shapes; scores are cosines for factor models
        """
        r = self.similar_items_detailed(**_arguments(locals()))
        return r.ids, r.scores

    def similar_items_detailed(
        self,
        itemid,
        N: int = 10,
        recalculate_item: bool = False,
        item_users=None,
        filter_items=None,
        items=None,
        *,
        viewer=None,
        surface: str | None = None,
        record: bool = False,
    ) -> GuardResult:
        """As :meth:`similar_items`, returning a :class:`GuardResult` (``record`` as in
        :meth:`recommend_detailed`)."""
        return self._call("similar_items", **_arguments(locals()))

    # ------------------------------------------------------------------ similar users
    def similar_users(
        self, userid, N: int = 10, filter_users=None, users=None, *, surface: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Guarded users most similar to ``userid``, by cosine of user factors.

        Uses ``user_policy``; see :class:`Guard`.
        """
        r = self.similar_users_detailed(**_arguments(locals()))
        return r.ids, r.scores

    def similar_users_detailed(
        self,
        userid,
        N: int = 10,
        filter_users=None,
        users=None,
        *,
        surface: str | None = None,
        record: bool = False,
    ) -> GuardResult:
        """As :meth:`similar_users`, returning a :class:`GuardResult`."""
        return self._call("similar_users", **_arguments(locals()))


def normalized_rows(factors: np.ndarray, rows_per_slice: int = 1 << 16) -> np.ndarray:
    """Rows of ``factors`` scaled to unit length (float32; zero rows stay zero).

    Norms and quotients are computed in float64, a slice of rows at a time: the values are
    those of one whole-matrix computation (every step is row by row), without its two
    float64 copies of the matrix (5 GB each at 10M items x 64 factors).
    """
    out = np.empty(factors.shape, dtype=np.float32)
    for lo in range(0, factors.shape[0], rows_per_slice):
        part = factors[lo : lo + rows_per_slice]
        norms = np.linalg.norm(part.astype(np.float64), axis=1)
        norms[norms == 0] = 1e-10
        out[lo : lo + rows_per_slice] = part / norms[:, None]
    return out


def prepare_request(model, method: str, /, **arguments) -> GuardRequest:
    """Check the arguments of one call against the adapted ``model``, once.

    Parameters
    ----------
    model : FactorModel or ItemItemModel
    method : {"recommend", "similar_items", "similar_users"}
    **arguments
        That method's arguments by name (those of its ``*_detailed`` form).

    Returns
    -------
    GuardRequest
    """
    builders: dict[str, Callable[..., GuardRequest]] = {
        "recommend": _recommend,
        "similar_items": _similar_items,
        "similar_users": _similar_users,
    }
    build = builders.get(method)
    if build is None:
        raise fail(
            "method", "Guard.prepare", "'recommend', 'similar_items' or 'similar_users'", method
        )
    return build(model, **arguments)


def _limits(exclude, keep, names: tuple[str, str], where: str, n: int):
    """The call's exclusions (``filter_items``) and sorted candidates (``items``)."""
    if exclude is not None and keep is not None:
        raise ValidationError(
            f"The '{names[0]}' and '{names[1]}' parameters of {where} cannot both be set. "
            "Got both instead."
        )
    call_mask = None if exclude is None else check_ids(exclude, names[0], where, n)[0]
    restrict = None if keep is None else np.unique(check_ids(keep, names[1], where, n)[0])
    return call_mask, restrict


def _recommend(
    m,
    *,
    userid,
    user_items,
    N,
    filter_already_liked_items,
    filter_items,
    recalculate_user,
    items,
    surface,
    record,
    user_factors,
) -> GuardRequest:
    where = "Guard.recommend"
    N = check_int(N, "N", where)
    call_mask, restrict = _limits(filter_items, items, ("filter_items", "items"), where, m.n_items)
    if user_factors is not None and (recalculate_user or not isinstance(m, FactorModel)):
        raise ValidationError(
            "The 'user_factors' parameter of Guard.recommend needs a factor model and "
            "recalculate_user=False. Got it with "
            f"{'recalculate_user=True' if recalculate_user else 'an item-item model'} instead."
        )
    any_id = recalculate_user or isinstance(m, ItemItemModel) or user_factors is not None
    userids, scalar = check_ids(userid, "userid", where, ANY_ID if any_id else m.n_users)
    if user_factors is not None and isinstance(m, FactorModel):  # else refused above
        user_factors = check_factors(user_factors, "user_factors", where, n_cols=m.n_factors)
        if user_factors.shape[0] != userids.size:
            raise fail("user_factors", where, f"one row per user ({userids.size})", user_factors)
    needs_rows = filter_already_liked_items or recalculate_user or isinstance(m, ItemItemModel)
    if user_items is None:
        if needs_rows:
            raise fail(
                "user_items",
                where,
                f"a CSR matrix with {userids.size} rows (one per user) when "
                "filter_already_liked_items, recalculate_user or an item-item model needs it",
                None,
            )
        rows = None
    else:
        rows = check_csr(user_items, "user_items", where, shape=(userids.size, m.n_items))

    requery = None
    queries: Any
    dtype: Any
    if isinstance(m, FactorModel):
        if recalculate_user:
            queries = m.recalculate_user(userids, rows)

            def requery(sub, strip, _queries):
                r = rows if sub is None else rows[sub]
                u = userids if sub is None else userids[sub]
                kept = _without(r, strip)
                q = m.recalculate_user(u, kept)
                # A viewer whose every interaction was left out would score every item 0
                # and get its eligible items in id order (the same arbitrary accounts for
                # every such viewer): it queries as the model's typical user instead.
                emptied = (np.diff(kept.indptr) == 0) & (np.diff(r.indptr) > 0)
                if emptied.any():
                    q = np.array(q, dtype=np.float32, copy=True)
                    q[emptied] = m.typical_user()
                return q, emptied

        elif user_factors is not None:
            queries = user_factors
        else:
            queries = m.user_factors[userids]
        kind, dtype = "dot", np.float32
    else:
        queries = rows

        def requery(sub, strip, _queries):
            r = rows if sub is None else rows[sub]
            return _without(r, strip), None

        kind, dtype = "sim", np.float64
    return GuardRequest(
        method="recommend",
        ids=userids,
        scalar=scalar,
        N=N,
        n_candidates=m.n_items,
        viewers=ViewerBatch(userids, rows, surface, userids.size),
        kind=kind,
        queries=queries,
        dtype=dtype,
        call_mask=call_mask,
        restrict=restrict,
        exclude=rows if (filter_already_liked_items and rows is not None) else None,
        requery=requery,
        record=bool(record),
        model=m,
    )


def _similar_items(
    m, *, itemid, N, recalculate_item, item_users, filter_items, items, viewer, surface, record
) -> GuardRequest:
    where = "Guard.similar_items"
    N = check_int(N, "N", where)
    call_mask, restrict = _limits(filter_items, items, ("filter_items", "items"), where, m.n_items)
    itemids, scalar = check_ids(itemid, "itemid", where, ANY_ID if recalculate_item else m.n_items)
    viewers = _viewer_ids(viewer, itemids.size, where)
    queries: Any = None  # factor models: the compiled state's normalised rows, at run time
    dtype: Any
    if isinstance(m, FactorModel):
        if recalculate_item:
            source = m.source
            if source is None or not hasattr(source, "recalculate_item"):
                raise UnsupportedModelError(
                    "recalculate_item needs an implicit model that supports it."
                )
            try:
                factors = np.asarray(source.recalculate_item(itemids, item_users), dtype=np.float32)
            except NotImplementedError as exc:
                raise UnsupportedModelError(
                    f"{type(source).__name__} does not support recalculate_item."
                ) from exc
            queries = normalized_rows(factors.reshape(itemids.size, -1))
        kind, dtype = "cos", np.float32
    else:
        if recalculate_item:
            raise UnsupportedModelError("Item-item models do not support recalculate_item.")
        queries = sp.csr_matrix(
            (np.ones(itemids.size), itemids, np.arange(itemids.size + 1)),
            shape=(itemids.size, m.n_items),
        )
        kind, dtype = "sim", np.float64
    # The viewed account is the viewer's context (not an interaction): filters that
    # read a viewer's risk (the circuit breaker) count the profile being viewed.
    context = id_cells(itemids, m.n_items)

    return GuardRequest(
        method="similar_items",
        ids=itemids,
        scalar=scalar,
        N=N,
        n_candidates=m.n_items,
        viewers=ViewerBatch(viewers, None, surface, itemids.size, context),
        kind=kind,
        queries=queries,
        dtype=dtype,
        call_mask=call_mask,
        restrict=restrict,
        requery=functools.partial(_typical_for_stripped, m, ranked=True),
        record=bool(record),
        model=m,
    )


def _similar_users(m, *, userid, N, filter_users, users, surface, record) -> GuardRequest:
    where = "Guard.similar_users"
    if not isinstance(m, FactorModel):
        raise UnsupportedModelError(
            "similar_users needs a factor model; item-item models have no user factors."
        )
    N = check_int(N, "N", where)
    call_mask, restrict = _limits(filter_users, users, ("filter_users", "users"), where, m.n_users)
    userids, scalar = check_ids(userid, "userid", where, m.n_users)
    return GuardRequest(
        method="similar_users",
        ids=userids,
        scalar=scalar,
        N=N,
        n_candidates=m.n_users,
        # The queried account is the profile being viewed, as in similar_items.
        viewers=ViewerBatch(userids, None, surface, userids.size, id_cells(userids, m.n_users)),
        kind="users",
        queries=None,  # the compiled state's normalised user rows, at run time
        dtype=np.float32,
        call_mask=call_mask,
        restrict=restrict,
        requery=functools.partial(_typical_for_stripped, m),
        record=bool(record),
        model=m,
    )


def _typical_for_stripped(m, sub, strip: sp.csr_matrix, queries, *, ranked: bool = False):
    """``requery`` of ``similar_items`` and ``similar_users``: a stripped row's query was
    its viewed profile alone, so it is left empty. A factor model ranks for its typical
    user (cosine, as the profile was), or (``ranked``: items, not users) by the Guard's
    backfill when it has one; an item-item model reaches nothing from it."""
    base = queries if sub is None else queries[sub]
    if isinstance(m, FactorModel):
        q = np.array(base, dtype=np.float32, copy=True)
        emptied = np.diff(strip.indptr) > 0
        q[emptied] = normalized_rows(m.typical_user()[None, :])[0]
        return q, (emptied if ranked else None)
    return _without(sp.csr_matrix(base), strip), None


def _without(rows: sp.csr_matrix, strip: sp.csr_matrix) -> sp.csr_matrix:
    """``rows`` with the cells of ``strip`` removed (interactions left out of a query)."""
    out = sp.csr_matrix(rows - rows.multiply(strip != 0))
    out.eliminate_zeros()
    return out


def _viewer_ids(viewer, n: int, where: str) -> np.ndarray | None:
    """``viewer`` of ``similar_items``: one viewer for every query id, or one per id."""
    if viewer is None:
        return None
    ids, scalar = check_ids(viewer, "viewer", where, ANY_ID)
    if scalar:
        return np.full(n, ids[0], dtype=np.int64)
    if ids.size != n:
        raise fail(
            "viewer", where, f"one viewer per query id ({n})", f"{ids.size} viewers", describe=False
        )
    return ids
