"""Guard: a drop-in for implicit's ``recommend``, ``similar_items`` and ``similar_users``.

The Guard adapts a model, compiles its policy into a plan, and runs every call through
the kernel (:mod:`guardrails.core`), so that a suppressed id can never come out and every
slate is filled from the eligible items.

Slate contract, on every path:

- a candidate removed by the policy, by ``filter_items``, by ``items=`` or (with
  ``filter_already_liked_items``) by the viewer's own interactions is never returned;
- batch calls return arrays of shape ``(m, min(N, n_candidates))``; a row with fewer
  eligible items than that is padded with id ``-1`` and score ``-inf`` (never a real
  id); single calls return only eligible items;
- batch results equal single-id results, row for row (the kernel rescores exactly);
- no score in a slate is NaN or infinite, except the ``-inf`` of padding.

Item-item models return what implicit returns: the *reachable* eligible items only (those
with a non-zero score, a similarity path from the viewer's interactions or the query
item), so a slate is full when ``N`` reachable eligible items exist and shorter (batch
rows padded) otherwise. Filling short slates with the lowest ids at score 0 would push
the same few accounts to everyone whose list is short; an explicit ``backfill`` source
(for example popularity) fills them instead, from eligible items only.

Ids are returned in implicit's dtype: int32 while the model's item and user catalogues
both fit in int32 (fewer than 2**31 ids), int64 otherwise; padding is ``-1`` either way.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._validation import check_csr, check_factors, check_ids, check_int, fail
from .core.kernel import FactorSpace, SimilaritySpace, guarded_topk
from .core.plan import Plan
from .exceptions import UnsupportedModelError, ValidationError
from .filters.base import Catalog, ViewerBatch
from .models import FactorModel, ItemItemModel, adapt_model
from .policy import CompiledPolicy, Decision, DecisionCounters, Explanation, Policy, as_policy

__all__ = ["Guard", "GuardResult", "GuardRequest", "GuardCalls"]

_ANY_ID = 2**62
_INT32_IDS = int(np.iinfo(np.int32).max)
_KEEP: Any = object()


def _id_dtype(model) -> type:
    """implicit's id dtype (int32) while every catalogue of ``model`` fits in it."""
    return np.int32 if max(model.n_items, model.n_users) <= _INT32_IDS else np.int64


class _ModelSwapped(ValidationError):
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
        ``requery(rows, strip)``: query rows recomputed without the interactions in
        ``strip`` (filters that strip interactions from a query).
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
            raise fail("ranking", where, f"finite scores or NaN, shape ({self.n_candidates},)", ranking)
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
            except _ModelSwapped:
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
        r = self.recommend_detailed(
            userid,
            user_items,
            N,
            filter_already_liked_items,
            filter_items,
            recalculate_user,
            items,
            surface=surface,
        )
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
        return self._call(
            "recommend",
            userid=userid,
            user_items=user_items,
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
            items=items,
            surface=surface,
            record=record,
            user_factors=user_factors,
        )

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
        r = self.similar_items_detailed(
            itemid, N, recalculate_item, item_users, filter_items, items, viewer=viewer, surface=surface
        )
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
        return self._call(
            "similar_items",
            itemid=itemid,
            N=N,
            recalculate_item=recalculate_item,
            item_users=item_users,
            filter_items=filter_items,
            items=items,
            viewer=viewer,
            surface=surface,
            record=record,
        )

    # ------------------------------------------------------------------ similar users
    def similar_users(
        self, userid, N: int = 10, filter_users=None, users=None, *, surface: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Guarded users most similar to ``userid``, by cosine of user factors.

        Uses ``user_policy``; see :class:`Guard`.
        """
        r = self.similar_users_detailed(userid, N, filter_users, users, surface=surface)
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
        return self._call(
            "similar_users",
            userid=userid,
            N=N,
            filter_users=filter_users,
            users=users,
            surface=surface,
            record=record,
        )


@dataclass(frozen=True, eq=False)
class _Compiled:
    """Everything a call needs, compiled once and swapped atomically as one object.

    ``items`` and ``users`` own the candidate spaces of every policy variant (surface,
    holdback and viewer-cohort combinations), built on first use and cached.
    """

    policy: Policy
    user_policy: Policy | None
    snapshot: Any
    items: CompiledPolicy
    users: CompiledPolicy | None
    cos_items: np.ndarray | None
    cos_users: np.ndarray | None
    model: Any = None
    model_: Any = None
    fill: np.ndarray | None = None
    # Names the model in the candidate-space cache keys (spaces hold the model's factors;
    # a random token, not the model, so that pickling a state never pickles another's).
    model_key: str = ""

    @property
    def snapshot_version(self) -> str | None:
        return None if self.snapshot is None else getattr(self.snapshot, "version", None)

    @property
    def item_plan(self) -> Plan:
        """The enforced global plan on every surface (for inspection)."""
        cp = self.items
        return cp.global_plan()


def _normalized(factors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(factors.astype(np.float64), axis=1)
    norms[norms == 0] = 1e-10
    return (factors / norms[:, None]).astype(np.float32)



def _check_retrieval(retrieval, model):
    """The Guard's ``retrieval`` argument, built on the model's item factors if needed."""
    if retrieval is None:
        return None
    if not callable(getattr(retrieval, "topk", None)) or not hasattr(retrieval, "build"):
        raise fail("retrieval", "Guard", "an ANNRetrieval or None", retrieval)
    if not isinstance(model, FactorModel):
        raise fail("retrieval", "Guard", "None for an item-item model", retrieval)
    if not retrieval.built:
        retrieval.build(model.item_factors)
    retrieval.check_model(model.n_items, model.n_factors, "Guard")
    return retrieval

class Guard(GuardCalls):
    """Guarded recommendations from an implicit model.

    Parameters
    ----------
    model : implicit model, FactorModel or ItemItemModel
        A fitted implicit recommender (ALS, BPR, LMF, on CPU or GPU; Cosine, TFIDF,
        BM25), or an adapter for factors or similarities from another trainer.
    policy : Policy or sequence of filters, optional
        Filters applied to ``recommend`` and ``similar_items`` (item candidates).
    user_policy : Policy, sequence of filters or "same", optional, keyword-only
        Filters applied to ``similar_users`` (user candidates). ``"same"`` reuses
        ``policy``, for models whose users and items share one id space (accounts that
        follow accounts). Without it, a Guard with a non-empty policy refuses
        ``similar_users`` rather than serving unguarded users.
    snapshot : object, optional, keyword-only
        Safety-signal snapshot that snapshot-aware filters read; see
        :meth:`swap_snapshot`.
    block_rows : int, optional, keyword-only
        Query rows per kernel chunk; peak extra memory per thread is about
        ``block_rows * n_items`` scores. Chosen from the catalogue size when omitted.
    num_threads : int, keyword-only
        Kernel threads; 0 uses every available core.
    retrieval : ANNRetrieval, optional, keyword-only
        Approximate candidate retrieval for ``recommend`` on factor models (very large
        catalogues): candidate pools from an index, the exact guarded kernel on each
        pool, widening and an exact fallback keep the contract. Built on the model's
        item factors here if not built yet; policy and snapshot swaps never rebuild it.
        After :meth:`swap_model`, rebuild it on the new factors
        (``guard.retrieval.build(...)``, atomic); until then calls whose model no longer
        matches the index's shape take the exact path. See
        :class:`~guardrails.ANNRetrieval`.
    backfill : array-like of float, shape (n_items,), optional, keyword-only
        Item-item models only: scores that fill slates with fewer than ``N`` reachable
        eligible items (by default such slates are short, as in implicit). A common
        source is popularity, ``np.asarray(user_items.sum(axis=0)).ravel()`` over the
        training interactions. Backfilled items come after every reachable one, ordered by
        ``backfill - penalty`` then id, are drawn from the items the policy and the call
        leave eligible (never a suppressed one), and carry their model score (0, minus
        penalties). Factor models score every item, so they refuse this.

    Attributes
    ----------
    model : object
        The model as passed (to the constructor or :meth:`swap_model`).
    model_ : FactorModel or ItemItemModel
        The adapted model.

    Notes
    -----
    What the Guard keeps from the model: for implicit's matrix-factorisation models, copies
    of ``user_factors`` and ``item_factors`` (float32), taken when the Guard is built or the
    model is swapped in, plus the model itself for ``recalculate_user`` and
    ``recalculate_item``; for item-item models, a float64 copy of ``similarity``. A
    :class:`FactorModel` built by hand keeps its arrays without copying when they are
    already float32 and C-contiguous, so do not modify them in place. Training the model
    further (``fit``, ``partial_fit_users``, ``partial_fit_items``) therefore changes
    nothing the Guard serves until :meth:`swap_model` is called with it.

    Every call goes through two steps: :meth:`prepare` checks its arguments once into a
    frozen :class:`GuardRequest`, and :meth:`execute` runs that request against the
    compiled state (policy and snapshot) read once, at its start. Wrappers such as
    :class:`~guardrails.ServingGuard` run the same request again (a retry, a fallback
    ranking) without checking anything twice.
    """

    def __init__(
        self,
        model,
        policy=None,
        *,
        user_policy=None,
        snapshot=None,
        block_rows: int | None = None,
        num_threads: int = 0,
        backfill=None,
        retrieval=None,
    ):
        self.block_rows = None if block_rows is None else check_int(block_rows, "block_rows", "Guard")
        self.num_threads = check_int(num_threads, "num_threads", "Guard", low=0)
        adapted = adapt_model(model)
        fill = _check_backfill(backfill, adapted, "Guard")
        self.retrieval = _check_retrieval(retrieval, adapted)
        self._lock = threading.Lock()
        self._counters = DecisionCounters()
        self._state = self._compile(
            as_policy(policy), user_policy, snapshot, model=(model, adapted), fill=fill
        )

    # ------------------------------------------------------------------ state
    def __getstate__(self) -> dict:
        # The compiled state travels as it is (workers of a batch job need no recompile);
        # the swap lock is per process.
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        return self._state.model

    @property
    def model_(self) -> FactorModel | ItemItemModel:
        return self._state.model_

    @property
    def ids_dtype(self) -> type:
        """dtype of the ids this Guard returns: int32 while the model's catalogues fit in
        it, as implicit returns them; int64 beyond."""
        return _id_dtype(self._state.model_)

    @property
    def backfill(self) -> np.ndarray | None:
        """The item-item backfill scores, shape (n_items,), or None."""
        return self._state.fill

    @property
    def policy(self) -> Policy:
        return self._state.policy

    @property
    def policy_version(self) -> str:
        return self._state.policy.version

    @property
    def snapshot(self) -> Any:
        return self._state.snapshot

    def _compile(
        self, policy: Policy, user_policy, snapshot, *, model=None, fill=_KEEP
    ) -> _Compiled:
        # ``model``: (model, adapted) to swap in; the current ones otherwise.
        raw, m = (self._state.model, self._state.model_) if model is None else model
        key = self._state.model_key if model is None else uuid.uuid4().hex
        if fill is _KEEP:
            fill = self._state.fill
        # Candidate spaces hold the model's factors and are cached on the compiled policy,
        # keyed by (kind, model token) so Guards on other models never share them. A swapped-in
        # model gets a compiled policy of its own, so the old model's spaces are freed
        # with the old state instead of staying in the policy's shared cache.
        compiled = (
            (lambda pol, cat: CompiledPolicy(pol, cat))
            if model is not None and hasattr(self, "_state")
            else (lambda pol, cat: pol.compiled(cat))
        )
        items = compiled(policy, Catalog("items", m.n_items, snapshot))
        if isinstance(user_policy, str):
            if user_policy != "same":
                raise fail("user_policy", "Guard", "a Policy, a sequence of filters, 'same' or None", user_policy)
            if m.n_users != m.n_items:
                raise fail(
                    "user_policy",
                    "Guard",
                    "'same' only for models with as many users as items (one id space)",
                    f"a model with {m.n_users} users and {m.n_items} items",
                    describe=False,
                )
            upol: Policy | None = policy
        else:
            upol = None if user_policy is None else as_policy(user_policy)
        users = None
        cos_items = cos_users = None
        if isinstance(m, FactorModel):
            cos_items = _normalized(m.item_factors)
            if upol is not None:
                users = compiled(upol, Catalog("users", m.n_users, snapshot))
        state = _Compiled(
            policy, upol, snapshot, items, users, cos_items, cos_users, raw, m, fill, key
        )
        # Build the spaces of the common variant now, so the first call pays nothing.
        enforced = items.active(None)[0]
        base = items.variant(enforced)
        if isinstance(m, FactorModel):
            base.space(("dot", key), self._builder(state, "dot"))
            base.space(("cos", key), self._builder(state, "cos"))
            if users is not None:
                users.variant(users.active(None)[0]).space(("users", key), self._builder(state, "users"))
        else:
            base.space(("sim", key), self._builder(state, "sim"))
        return state

    def _builder(
        self,
        state: _Compiled,
        kind: str,
        restrict: np.ndarray | None = None,
        ranking: np.ndarray | None = None,
    ):
        """``build(hard_mask, penalty) -> space`` for one kind of candidate space."""
        m = state.model_

        def width(h, n):
            # Small spaces (a cohort's few allowed candidates, items=) get narrower blocks,
            # so that pruning still has many blocks to choose from; results are the same.
            k = n if h is None else n - int(np.count_nonzero(h))
            if restrict is not None:
                k = min(k, restrict.size)
            return int(np.clip(k // 64, 1, 32))

        if kind == "rank":
            fixed: np.ndarray = ranking  # type: ignore[assignment]  # set with kind "rank"
            return lambda h, p: FactorSpace.build(
                fixed, hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, fixed.shape[0])
            )
        if kind == "dot":
            return lambda h, p: FactorSpace.build(
                m.item_factors, hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_items)
            )
        if kind == "cos":
            return lambda h, p: FactorSpace.build(
                state.cos_items, hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_items)
            )
        if kind == "users":
            return lambda h, p: FactorSpace.build(
                self._cos_users(state), hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_users)
            )
        return lambda h, p: SimilaritySpace.build(
            m.similarity, hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_items)
        )

    def _cos_users(self, state: _Compiled) -> np.ndarray:
        if state.cos_users is None:
            object.__setattr__(state, "cos_users", _normalized(state.model_.user_factors))
        return state.cos_users

    def execute(self, request: GuardRequest) -> GuardResult:
        """Serve one checked request (from :meth:`prepare`) against the compiled state.

        The compiled state (policy and snapshot) is read once, here: every slate is
        computed against exactly one policy and one snapshot, whatever is swapped in
        meanwhile.
        """
        if not isinstance(request, GuardRequest):
            raise fail("request", "Guard.execute", "a GuardRequest from Guard.prepare", request)
        state = self._state
        if request.model is not state.model_:
            raise _ModelSwapped(
                "The 'request' parameter of Guard.execute must be a request prepared by this "
                "Guard, for its model. Got a request prepared for another model instead."
            )
        cp: CompiledPolicy | None
        if request.candidates == "items":
            cp = state.items
        else:
            cp = state.users
            if cp is None:
                if len(state.policy):
                    raise ValidationError(
                        "Guard.similar_users needs a 'user_policy' when the Guard has an item "
                        "policy: pass user_policy='same' if users and items share one id space, "
                        "or a policy over users. Refusing to serve unguarded users."
                    )
                cp = Policy(()).compiled(Catalog("users", state.model_.n_users, state.snapshot))
        ids, scores, decisions, info = self._run(state, cp, request)
        ids = ids.astype(_id_dtype(state.model_), copy=False)
        if request.scalar:
            keep = ids[0] >= 0
            ids, scores = ids[0][keep], scores[0][keep]
        return GuardResult(
            ids, scores, state.policy.version, state.snapshot_version, info or {}, tuple(decisions)
        )

    def _run(self, state: _Compiled, cp: CompiledPolicy, request: GuardRequest):
        """Run one request through the compiled policy and the kernel."""
        kind, restrict, requery = request.kind, request.restrict, request.requery
        queries, exclude = request.queries, request.exclude
        if kind == "users":
            queries = self._cos_users(state)[request.ids]
        elif kind == "cos" and queries is None:
            queries = state.cos_items[request.ids]
        spaces: dict = {}

        def topk(variant, sub, masks, pens, strip, n):
            if restrict is None and request.ranking is None:
                space = variant.space((kind, state.model_key), self._builder(state, kind))
            else:
                # Spaces of this call only (items=, or a ranking that is not the model's).
                space = spaces.get(variant.key)
                if space is None:
                    build = self._builder(state, kind, restrict, request.ranking)
                    space = build(variant.hard_mask, variant.penalty)
                    spaces[variant.key] = space
            if strip is not None and requery is not None:
                q = requery(sub, strip)
            else:
                q = queries if sub is None else queries[sub]
            ms = list(masks)
            if exclude is not None:
                ms.append(exclude if sub is None else exclude[sub])
            if (
                self.retrieval is not None
                and kind == "dot"
                and restrict is None
                and request.ranking is None
                and self.retrieval.matches(state.model_.n_items, state.model_.n_factors)
            ):
                return self.retrieval.topk(
                    space,
                    q,
                    n,
                    hard_mask=variant.hard_mask,
                    call_mask=request.call_mask,
                    viewer_masks=ms,
                    viewer_penalties=pens,
                    block_rows=self.block_rows,
                    num_threads=self.num_threads,
                    score_dtype=request.dtype,
                )
            out = guarded_topk(
                space,
                q,
                n,
                call_mask=request.call_mask,
                viewer_masks=ms,
                viewer_penalties=pens,
                block_rows=self.block_rows,
                num_threads=self.num_threads,
                score_dtype=request.dtype,
            )
            if kind == "sim" and state.fill is not None:
                out = self._backfill(space, state.fill, q, n, out, request.call_mask, ms, list(pens))
            return out

        return cp.run(
            request.viewers,
            topk,
            request.n_columns,
            request.limit,
            record=request.record,
            counters=self._counters,
            snapshot_version=state.snapshot_version,
        )

    def _backfill(self, space, fill, queries, n, out, call_mask, masks, pens):
        """Fill the short rows of an item-item slate from the backfill tier.

        The tier is the same candidate space (same global plan) scored by ``fill`` and
        run through the same kernel with the same call and viewer masks, so a backfilled
        item is eligible exactly when a reachable one would be.
        """
        ids, scores = out
        short = np.flatnonzero(ids[:, -1] < 0) if n else np.zeros(0, dtype=np.int64)
        if short.size == 0:
            return out
        f_ids, f_scores = guarded_topk(
            space.backfill(fill),
            queries[short],
            n,
            call_mask=call_mask,
            viewer_masks=[mk[short] for mk in masks if mk is not None],
            viewer_penalties=[p[short] for p in pens if p is not None],
            block_rows=self.block_rows,
            num_threads=self.num_threads,
            score_dtype=scores.dtype,
        )
        for j, r in enumerate(short.tolist()):
            k = int(np.count_nonzero(ids[r] >= 0))
            got = f_ids[j, : n - k]
            ok = got >= 0
            # A backfilled item's model score: no similarity path (0), minus penalties.
            ids[r, k : k + got.size] = got
            scores[r, k : k + got.size] = np.where(
                ok, f_scores[j, : n - k] - fill[np.where(ok, got, 0)], -np.inf
            )
        return ids, scores

    def decision_counters(self, *, reset: bool = False) -> dict[str, int]:
        """Aggregated counters of what the policy did since the Guard was built.

        See :class:`~guardrails.policy.DecisionCounters` for the names.
        """
        out = self._counters.snapshot()
        if reset:
            self._counters.reset()
        return out

    def explain(
        self,
        userid,
        itemid: int,
        *,
        user_items=None,
        surface: str | None = None,
        candidates: str = "items",
    ) -> Explanation:
        """Why ``itemid`` is, or would be, suppressed for ``userid``.

        Parameters
        ----------
        userid : int or None
            The viewer (``None`` for a call without a viewer).
        itemid : int
            The candidate (an item, or a user with ``candidates="users"``).
        user_items : csr_matrix, shape (1, n_items), optional, keyword-only
            The viewer's interactions, as a call would pass them (the circuit breaker and
            relationship rules read them).
        surface : str, optional, keyword-only
        candidates : {"items", "users"}, keyword-only

        Returns
        -------
        Explanation
            Per-filter verdicts, the served and the fully enforced action, versions.
        """
        from ._validation import check_choice

        where = "Guard.explain"
        state = self._state
        m = state.model_
        candidates = check_choice(candidates, "candidates", where, ("items", "users"))
        cp = state.items if candidates == "items" else state.users
        if cp is None:
            raise ValidationError("Guard.explain with candidates='users' needs a 'user_policy'. Got none instead.")
        n = cp.catalog.n
        item, _ = check_ids(itemid, "itemid", where, n)
        if item.size != 1:
            raise fail("itemid", where, "a single id", itemid)
        uids = None
        if userid is not None:
            uids, _ = check_ids(userid, "userid", where, _ANY_ID)
            if uids.size != 1:
                raise fail("userid", where, "a single id or None", userid)
        rows = None if user_items is None else check_csr(user_items, "user_items", where, shape=(1, m.n_items))
        viewers = ViewerBatch(uids, rows, surface, 1)
        return cp.explain(viewers, int(item[0]), snapshot_version=state.snapshot_version)

    def swap_policy(self, policy, *, user_policy=None) -> None:
        """Compile a new policy and swap it in atomically; calls in flight finish on the old one."""
        with self._lock:
            state = self._state
            self._state = self._compile(as_policy(policy), user_policy, state.snapshot)

    def swap_model(self, model, *, backfill=_KEEP) -> None:
        """Adapt a new or retrained model and swap it in atomically, with the same policy.

        Calls in flight finish on the old model; every call runs on exactly one model
        (a call reads the compiled state once; one whose arguments were checked against
        the old model is checked again against the new one). Use it after training the
        model further, e.g. after ``model.partial_fit_users(...)`` so that the new user
        ids are served: the Guard copied the factors when it was built (see the class
        Notes) and never sees in-place changes to the model.

        Parameters
        ----------
        model : implicit model, FactorModel or ItemItemModel
            May have more (or fewer) users and items than the current one; the policy is
            recompiled for its catalogue, so its filters must accept that catalogue size.
        backfill : array-like of float, shape (n_items,), or None, keyword-only
            New item-item backfill scores; kept from the current state when omitted (then
            the catalogue size must not change, or pass new scores or ``None``).
        """
        adapted = adapt_model(model)
        with self._lock:
            state = self._state
            fill = state.fill if backfill is _KEEP else backfill
            fill = _check_backfill(fill, adapted, "Guard.swap_model")
            upol = state.user_policy
            same = upol is state.policy and upol is not None
            self._state = self._compile(
                state.policy,
                "same" if same else upol,
                state.snapshot,
                model=(model, adapted),
                fill=fill,
            )

    def swap_snapshot(self, snapshot) -> None:
        """Recompile the policy against a new snapshot and swap it in atomically.

        Every slate is computed against exactly one snapshot: a call reads the compiled
        state once, at its start.
        """
        with self._lock:
            state = self._state
            upol = state.user_policy
            same = upol is state.policy and upol is not None
            self._state = self._compile(state.policy, "same" if same else upol, snapshot)

    # ------------------------------------------------------------------ requests
    def prepare(self, method: str, /, **arguments) -> GuardRequest:
        """Check the arguments of one call, once, and return its :class:`GuardRequest`.

        Parameters
        ----------
        method : {"recommend", "similar_items", "similar_users"}
        **arguments
            That method's arguments by name (those of its ``*_detailed`` form).

        Returns
        -------
        GuardRequest
            Run it with :meth:`execute`; wrappers (:class:`~guardrails.ServingGuard`)
            inspect it instead of checking the arguments again.
        """
        builders: dict[str, Callable[..., GuardRequest]] = {
            "recommend": self._prepare_recommend,
            "similar_items": self._prepare_similar_items,
            "similar_users": self._prepare_similar_users,
        }
        build = builders.get(method)
        if build is None:
            raise fail("method", "Guard.prepare", "'recommend', 'similar_items' or 'similar_users'", method)
        return build(**arguments)

    def _limits(self, exclude, keep, names: tuple[str, str], where: str, n: int):
        """The call's exclusions (``filter_items``) and sorted candidates (``items``)."""
        if exclude is not None and keep is not None:
            raise ValidationError(
                f"The '{names[0]}' and '{names[1]}' parameters of {where} cannot both be set. "
                "Got both instead."
            )
        call_mask = None if exclude is None else check_ids(exclude, names[0], where, n)[0]
        restrict = None if keep is None else np.unique(check_ids(keep, names[1], where, n)[0])
        return call_mask, restrict

    def _prepare_recommend(
        self,
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
        m = self.model_
        N = check_int(N, "N", where)
        call_mask, restrict = self._limits(filter_items, items, ("filter_items", "items"), where, m.n_items)
        if user_factors is not None and (recalculate_user or not isinstance(m, FactorModel)):
            raise ValidationError(
                "The 'user_factors' parameter of Guard.recommend needs a factor model and "
                "recalculate_user=False. Got it with "
                f"{'recalculate_user=True' if recalculate_user else 'an item-item model'} instead."
            )
        any_id = recalculate_user or isinstance(m, ItemItemModel) or user_factors is not None
        userids, scalar = check_ids(userid, "userid", where, _ANY_ID if any_id else m.n_users)
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
        dtype: Any
        if isinstance(m, FactorModel):
            if recalculate_user:
                queries = m.recalculate_user(userids, rows)

                def requery(sub, strip):
                    r = rows if sub is None else rows[sub]
                    u = userids if sub is None else userids[sub]
                    return m.recalculate_user(u, _without(r, strip))

            elif user_factors is not None:
                queries = user_factors
            else:
                queries = m.user_factors[userids]
            kind, dtype = "dot", np.float32
        else:
            queries = rows

            def requery(sub, strip):
                r = rows if sub is None else rows[sub]
                return _without(r, strip)

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

    def _prepare_similar_items(
        self, *, itemid, N, recalculate_item, item_users, filter_items, items, viewer, surface, record
    ) -> GuardRequest:
        where = "Guard.similar_items"
        m = self.model_
        N = check_int(N, "N", where)
        call_mask, restrict = self._limits(filter_items, items, ("filter_items", "items"), where, m.n_items)
        itemids, scalar = check_ids(itemid, "itemid", where, _ANY_ID if recalculate_item else m.n_items)
        viewers = _viewer_ids(viewer, itemids.size, where)
        queries: Any = None  # factor models: the compiled state's normalised rows, at run time
        dtype: Any
        if isinstance(m, FactorModel):
            if recalculate_item:
                source = m.source
                if source is None or not hasattr(source, "recalculate_item"):
                    raise UnsupportedModelError("recalculate_item needs an implicit model that supports it.")
                try:
                    factors = np.asarray(source.recalculate_item(itemids, item_users), dtype=np.float32)
                except NotImplementedError as exc:
                    raise UnsupportedModelError(
                        f"{type(source).__name__} does not support recalculate_item."
                    ) from exc
                queries = _normalized(factors.reshape(itemids.size, -1))
            kind, dtype = "cos", np.float32
        else:
            if recalculate_item:
                raise UnsupportedModelError("Item-item models do not support recalculate_item.")
            queries = sp.csr_matrix(
                (np.ones(itemids.size), itemids, np.arange(itemids.size + 1)), shape=(itemids.size, m.n_items)
            )
            kind, dtype = "sim", np.float64
        # The viewed account is the viewer's context (not an interaction): filters that
        # read a viewer's risk (the circuit breaker) count the profile being viewed.
        inside = itemids < m.n_items
        context = sp.csr_matrix(
            (np.ones(int(inside.sum()), np.float32), itemids[inside], np.r_[0, np.cumsum(inside)]),
            shape=(itemids.size, m.n_items),
        )
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
            record=bool(record),
            model=m,
        )

    def _prepare_similar_users(self, *, userid, N, filter_users, users, surface, record) -> GuardRequest:
        where = "Guard.similar_users"
        m = self.model_
        if not isinstance(m, FactorModel):
            raise UnsupportedModelError("similar_users needs a factor model; item-item models have no user factors.")
        N = check_int(N, "N", where)
        call_mask, restrict = self._limits(filter_users, users, ("filter_users", "users"), where, m.n_users)
        userids, scalar = check_ids(userid, "userid", where, m.n_users)
        return GuardRequest(
            method="similar_users",
            ids=userids,
            scalar=scalar,
            N=N,
            n_candidates=m.n_users,
            viewers=ViewerBatch(userids, None, surface, userids.size),
            kind="users",
            queries=None,  # the compiled state's normalised user rows, at run time
            dtype=np.float32,
            call_mask=call_mask,
            restrict=restrict,
            record=bool(record),
            model=m,
        )

    def __repr__(self) -> str:
        return (
            f"Guard({type(self._state.model).__name__}, policy={self.policy.version}, "
            f"filters={len(self.policy)})"
        )


def _check_backfill(backfill, model, where: str) -> np.ndarray | None:
    """Backfill scores as a float64 array of shape (n_items,), for item-item models only."""
    if backfill is None:
        return None
    if not isinstance(model, ItemItemModel):
        raise fail(
            "backfill",
            where,
            "None for a factor model (it scores every item, so no slate is short)",
            backfill,
        )
    arr = np.asarray(backfill)
    what = f"an array of {model.n_items} finite floats (one per item)"
    if arr.shape != (model.n_items,) or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise fail("backfill", where, what, backfill)
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise fail("backfill", where, what, "an array with NaN or infinite values", describe=False)
    arr.setflags(write=False)
    return arr


def _without(rows: sp.csr_matrix, strip: sp.csr_matrix) -> sp.csr_matrix:
    """``rows`` with the cells of ``strip`` removed (interactions left out of a query)."""
    out = sp.csr_matrix(rows - rows.multiply(strip != 0))
    out.eliminate_zeros()
    return out


def _viewer_ids(viewer, n: int, where: str) -> np.ndarray | None:
    """``viewer`` of ``similar_items``: one viewer for every query id, or one per id."""
    if viewer is None:
        return None
    ids, scalar = check_ids(viewer, "viewer", where, _ANY_ID)
    if scalar:
        return np.full(n, ids[0], dtype=np.int64)
    if ids.size != n:
        raise fail("viewer", where, f"one viewer per query id ({n})", f"{ids.size} viewers", describe=False)
    return ids
