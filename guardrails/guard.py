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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._calls import (
    ANY_ID,
    GuardCalls,
    GuardRequest,
    GuardResult,
    ModelSwapped,
    normalized_rows,
    prepare_request,
)
from ._validation import check_csr, check_ids, check_int, fail
from .core.kernel import FactorSpace, SimilaritySpace, guarded_topk
from .core.plan import Plan
from .exceptions import ValidationError
from .filters.base import Catalog, ViewerBatch
from .filters.primitive import id_cells
from .models import FactorModel, ItemItemModel, adapt_model
from .policy import CompiledPolicy, DecisionCounters, Explanation, Policy, as_policy

__all__ = ["Guard", "GuardResult", "GuardRequest", "GuardCalls"]

_INT32_IDS = int(np.iinfo(np.int32).max)
_KEEP: Any = object()


def _id_dtype(model) -> type:
    """implicit's id dtype (int32) while every catalogue of ``model`` fits in it."""
    return np.int32 if max(model.n_items, model.n_users) <= _INT32_IDS else np.int64


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


_NORMALISING = threading.Lock()


def _normalised(state: _Compiled, name: str, factors: np.ndarray) -> np.ndarray:
    """``state.<name>``: unit-length rows of ``factors``, computed once, on first use."""
    got = getattr(state, name)
    if got is None:
        with _NORMALISING:
            got = getattr(state, name)
            if got is None:
                got = normalized_rows(factors)
                object.__setattr__(state, name, got)
    return got


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
        ``block_rows * n_items`` scores (a tile of them where the kernel's fused path
        runs). Chosen from the catalogue size when omitted
        (:func:`guardrails.core.guarded_topk`).
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
        Scores for the slates the model cannot rank itself. A common source is
        popularity, ``np.asarray(user_items.sum(axis=0)).ravel()`` over the training
        interactions. Either way its items are drawn from the items the policy and the
        call leave eligible (never a suppressed one), ordered by ``backfill - penalty``
        then id.

        - Item-item models: it fills slates with fewer than ``N`` reachable eligible
          items (by default such slates are short, as in implicit). Backfilled items come
          after every reachable one and carry their model score (0, minus penalties).
        - Factor models score every item, so no slate is short; the backfill ranks the
          rows a policy leaves with no query of their own, which are otherwise ranked for
          the model's typical user (the mean of its user factors): a ``recommend`` viewer
          (with ``recalculate_user``) whose every interaction the policy left out, and a
          ``similar_items`` profile left out of its own list's query
          (:class:`~guardrails.filters.ContextRisk` ``strip_context``). Such rows carry
          ``backfill - penalty`` as their scores, compared in float32 as the model's
          scores are (counts above 2**24 that differ by less than float32 resolves
          tie, and go to the lower id). ``similar_users`` ranks users, not items, and
          keeps the typical user.

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
        """The backfill scores, shape (n_items,), or None (see the ``backfill`` argument)."""
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
            if upol is not None:
                users = compiled(upol, Catalog("users", m.n_users, snapshot))
        state = _Compiled(
            policy, upol, snapshot, items, users, cos_items, cos_users, raw, m, fill, key
        )
        # Build the recommend space of the common variant now, so the first call pays
        # nothing. similar_items' space (a normalised copy of the item factors, compacted)
        # is built by its first call: a Guard that only recommends, as behind an ANN index
        # over tens of millions of items, does not hold two more copies of the factors.
        enforced = items.active(None)[0]
        base = items.variant(enforced)
        if isinstance(m, FactorModel):
            base.space(("dot", key), self._builder(state, "dot"))
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
        if kind == "fill":
            # The backfill as a one-factor space: a query of 1 scores each item by it.
            return lambda h, p: FactorSpace.build(
                np.asarray(state.fill, dtype=np.float32)[:, None],
                hard_mask=h,
                penalty=p,
                restrict=restrict,
                block_width=width(h, m.n_items),
            )
        if kind == "dot":
            return lambda h, p: FactorSpace.build(
                m.item_factors, hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_items)
            )
        if kind == "cos":
            return lambda h, p: FactorSpace.build(
                self._cos_items(state), hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_items)
            )
        if kind == "users":
            return lambda h, p: FactorSpace.build(
                self._cos_users(state), hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_users)
            )
        return lambda h, p: SimilaritySpace.build(
            m.similarity, hard_mask=h, penalty=p, restrict=restrict, block_width=width(h, m.n_items)
        )

    def _cos_items(self, state: _Compiled) -> np.ndarray:
        return _normalised(state, "cos_items", state.model_.item_factors)

    def _cos_users(self, state: _Compiled) -> np.ndarray:
        return _normalised(state, "cos_users", state.model_.user_factors)

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
            raise ModelSwapped(
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
            queries = self._cos_items(state)[request.ids]
        spaces: dict = {}
        # The share cap runs two kernel calls per viewer group on the same rows: slice the
        # call's exclusions for those rows once (keyed by the rows array itself).
        excluded: list = [None, None]

        def exclude_rows(sub):
            if sub is None:
                return exclude
            if excluded[0] is not sub:
                excluded[0], excluded[1] = sub, exclude[sub]
            return excluded[1]

        def space_of(variant, k):
            """The variant's candidate space of kind ``k``: cached on the compiled policy,
            or built for this call only (items=, or a ranking that is not the model's)."""
            if restrict is None and request.ranking is None:
                return variant.space((k, state.model_key), self._builder(state, k))
            space = spaces.get((k, variant.key))
            if space is None:
                build = self._builder(state, k, restrict, request.ranking)
                space = build(variant.hard_mask, variant.penalty)
                spaces[(k, variant.key)] = space
            return space

        def topk(variant, sub, masks, pens, strip, n):
            space = space_of(variant, kind)
            emptied = None
            if strip is not None and requery is not None:
                q, emptied = requery(sub, strip, queries)
            else:
                q = queries if sub is None else queries[sub]
            ms = list(masks)
            if exclude is not None:
                ms.append(exclude_rows(sub))
            kernel: dict[str, Any] = {
                "call_mask": request.call_mask,
                "viewer_masks": ms,
                "viewer_penalties": pens,
                "block_rows": self.block_rows,
                "num_threads": self.num_threads,
                "score_dtype": request.dtype,
            }
            groups = getattr(variant, "row_groups", None)
            if retrieves:
                out = self.retrieval.topk(space, q, n, hard_mask=variant.hard_mask, **kernel)
            else:
                out = guarded_topk(space, q, n, groups=groups, **kernel)
            if kind == "sim" and state.fill is not None:
                out = self._backfill(space, state.fill, q, n, out, request.call_mask, ms, list(pens))
            elif state.fill is not None and emptied is not None and emptied.any():
                out = _ranked_by_fill(
                    space_of(variant, "fill"), out, np.flatnonzero(emptied), n, groups, kernel
                )
            return out

        retrieves = (
            self.retrieval is not None
            and kind == "dot"
            and restrict is None
            and request.ranking is None
            and self.retrieval.matches(state.model_.n_items, state.model_.n_factors)
        )
        # Viewer groups may share one kernel call on factor spaces scored exactly (the
        # policy then passes a SharedCall as the variant); item-item spaces and ANN
        # retrieval take one call per group.
        topk.shares_groups = kind != "sim" and not retrieves  # type: ignore[attr-defined]
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
        viewed: int | None = None,
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
            ``"users"``: why ``itemid`` is, or would be, left out of ``userid``'s
            ``similar_users`` list (the queried account ``userid`` is the profile viewed).
        viewed : int, optional, keyword-only
            The profile being viewed, as ``similar_items`` passes it (its item): filters
            that read the viewing context (the circuit breaker, ``ContextRisk``) read it.

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
            uids, _ = check_ids(userid, "userid", where, ANY_ID)
            if uids.size != 1:
                raise fail("userid", where, "a single id or None", userid)
        rows = None if user_items is None else check_csr(user_items, "user_items", where, shape=(1, m.n_items))
        # The viewed profile, as the Guard's calls pass it: similar_users' queried account,
        # or similar_items' item.
        context = None
        if candidates == "users" and uids is not None:
            context = id_cells(uids, n)
        elif viewed is not None:
            seen, _ = check_ids(viewed, "viewed", where, n)
            if seen.size != 1:
                raise fail("viewed", where, "a single id or None", viewed)
            context = id_cells(seen, n)
        viewers = ViewerBatch(uids, rows, surface, 1, context)
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
            New backfill scores (see the constructor); kept from the current state when
            omitted (then the catalogue size must not change, or pass new scores or
            ``None``).
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
        return prepare_request(self.model_, method, **arguments)

    def __repr__(self) -> str:
        return (
            f"Guard({type(self._state.model).__name__}, policy={self.policy.version}, "
            f"filters={len(self.policy)})"
        )


def _ranked_by_fill(space, out, rows: np.ndarray, n: int, groups, kernel: dict):
    """``out`` with ``rows`` (the rows a policy left with no query of their own) ranked by
    the backfill scores instead: the fixed one-column space ``space`` of the same variant,
    run through the same kernel with the same call mask and the rows' own viewer masks
    and penalties, so that these rows honour the policy as every other row does."""
    ids, scores = out
    kw = dict(kernel)
    kw["viewer_masks"] = [mk[rows] for mk in kernel["viewer_masks"] if mk is not None]
    kw["viewer_penalties"] = [p[rows] for p in kernel["viewer_penalties"] if p is not None]
    if groups is not None:
        groups = replace(groups, of_row=groups.of_row[rows])
    f_ids, f_scores = guarded_topk(
        space, np.ones((rows.size, 1), dtype=np.float32), n, groups=groups, **kw
    )
    ids, scores = np.array(ids, copy=True), np.array(scores, copy=True)
    ids[rows], scores[rows] = f_ids, f_scores.astype(scores.dtype, copy=False)
    return ids, scores


def _check_backfill(backfill, model, where: str) -> np.ndarray | None:
    """Backfill scores as a float64 array of shape (n_items,)."""
    if backfill is None:
        return None
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
