"""The Filter protocol: how a filter compiles its part of a scoring plan.

A filter is an object with a stable ``name``, a ``reason`` code, and two compile steps:

``compile_global(catalog) -> PlanPart | None``
    Viewer-independent actions over the whole candidate catalogue (a hard mask, an
    additive penalty). Compiled once per policy and snapshot, then cached by the Guard.
``compile_viewers(catalog, viewers) -> PlanPart | None``
    Per-viewer actions for one batch of viewers (sparse masks, sparse penalties), one
    row per viewer in the batch. Compiled on every call, so it must be vectorized.

and a ``fingerprint()`` that returns bytes identifying its parameters and data; the
policy version is a hash of its filters' fingerprints.

A compile step may return one :class:`~guardrails.core.plan.PlanPart`, a sequence of them
(for graded actions with their own reason codes: a drop part and a demote part), or
``None``. A *drop* is a mask, a *demote* is a non-negative penalty; the kernel applies
masks after penalties, so the strictest action always wins (drop beats demote beats
allow) whatever the order of the filters.

Optional steps, each a runtime-checkable protocol (:class:`CohortFilter`,
:class:`CapFilter`, :class:`QueryFilter`, :class:`ProfileQueryFilter`) so that a minimal
filter needs none of them
and type checkers see the ones it has:

``compile_cohorts(catalog) -> CohortTable | None`` and ``assign_cohorts(catalog, viewers)``
    Actions per *viewer cohort*: a table of masks and penalties, one row per cohort,
    compiled once per policy and snapshot, and the cohort of each viewer of a batch
    (``-1`` for none). The Guard scores each cohort against its own pre-masked candidate
    space, so a rule that removes most of the catalogue for a few viewers (minors) costs
    nothing for the others. The table must depend only on the filter and the catalogue.
``compile_caps(catalog) -> CapSpec | None``
    A share cap applied at selection time, with backfill (see :class:`CapSpec`).
``compile_queries(catalog, viewers) -> csr_matrix | None``
    Interactions to leave out of the viewers' query rows before scoring (used by the
    circuit breaker to switch off expansion from flagged interests). Called for batches
    with interactions (``recommend``).
``compile_profile_queries(catalog, viewers) -> csr_matrix | None``
    For a batch of profile views (``similar_items``, ``similar_users``: no interactions,
    the viewed profile in ``context_items``), the viewed profiles to leave out of their
    own list's query (used by :class:`~guardrails.filters.ContextRisk` to rank a risky
    profile's list without it). A separate step, so that a query filter written for
    ``recommend`` is never handed a batch without interactions.

A factor model's query left empty is the model's typical user; an item-item query left
empty reaches nothing but the Guard's backfill.

and settings, also optional: ``mode`` (``"enforce"``, ``"shadow"`` or ``"off"``),
``failure`` (``"fail_closed"`` or ``"fail_open"``), ``surfaces`` (a tuple of surface
names the filter applies to, or ``None`` for all) and ``protected`` (``True`` for
child-safety filters, which can be neither held back nor failed open).

Subclass :class:`Filter` for the defaults, or implement the same methods on any class
(the protocol is structural: :class:`FilterProtocol`). Check a new filter with
:func:`guardrails.testing.check_filter`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from .._validation import check_bool, check_choice, fail
from ..core.plan import PlanPart

__all__ = [
    "Catalog",
    "ViewerBatch",
    "Filter",
    "FilterProtocol",
    "CohortFilter",
    "CapFilter",
    "QueryFilter",
    "ProfileQueryFilter",
    "CohortTable",
    "CapSpec",
    "array_fingerprint",
    "MODES",
    "FAILURE_MODES",
]

#: Catalogue kinds a filter may be compiled against.
CATALOG_KINDS = ("items", "users")
#: Modes of a filter and of a policy.
MODES = ("enforce", "shadow", "off")
#: What happens when a filter cannot compile (for example its labels are missing).
FAILURE_MODES = ("fail_closed", "fail_open")
#: Constructor arguments every built-in filter takes (see :meth:`Filter._settings`).
_COMMON = ("name", "reason", "mode", "failure", "surfaces")


@dataclass(frozen=True)
class Catalog:
    """The candidates a plan ranks.

    Parameters
    ----------
    kind : {"items", "users"}
        ``"items"`` for ``recommend`` and ``similar_items``; ``"users"`` for
        ``similar_users``.
    n : int
        Number of candidates (model items, or model users).
    snapshot : object, optional
        The safety-signal snapshot the Guard holds, for filters that read labels from
        it; ``None`` when the Guard has none.
    """

    kind: str
    n: int
    snapshot: Any = None

    def check_sized(self, where: str, name: str, length: int) -> None:
        """Raise a typed error unless a per-candidate array has ``n`` entries."""
        if length != self.n:
            raise fail(
                name,
                where,
                f"sized to the {self.kind} catalogue ({self.n} entries)",
                f"{length} entries",
                describe=False,
            )

    def check_indices(self, where: str, name: str, ids: np.ndarray) -> None:
        """Raise a typed error unless sorted, non-negative ``ids`` all index this catalogue."""
        if ids.size and ids[-1] >= self.n:
            raise fail(
                name,
                where,
                f"indices in [0, {self.n}) of the {self.kind} catalogue",
                f"ids up to {int(ids[-1])}",
                describe=False,
            )


@dataclass(frozen=True, eq=False)
class ViewerBatch:
    """The viewers of one call.

    Parameters
    ----------
    userids : ndarray of int64, shape (m,), or None
        The viewers' user indices; ``None`` when the call has no viewer (for example
        ``similar_items`` without a ``viewer``). Ids of new accounts may lie beyond the
        model's users when ``recalculate_user=True``.
    user_items : csr_matrix, shape (m, n_items), or None
        The viewers' interactions as passed in the call (not only stored history).
    surface : str or None
        Where the slate is shown, for example ``"suggested_accounts"``.
    n_rows : int, optional
        Rows of the batch when neither ``userids`` nor ``user_items`` says (for example
        ``similar_items`` without a viewer).
    context_items : csr_matrix, shape (m, n_items), or None
        What the viewer is looking at, without having interacted with it: the profile
        whose "suggested accounts" ``similar_items`` computes (for ``similar_users``,
        the queried account, in the users' id space). Filters that read a
        viewer's risk count it (see :attr:`interactions`); relationship filters do not
        treat it as a follow.
    """

    userids: np.ndarray | None
    user_items: sp.csr_matrix | None = None
    surface: str | None = None
    n_rows: int | None = None
    context_items: sp.csr_matrix | None = None

    @property
    def interactions(self) -> sp.csr_matrix | None:
        """``user_items`` and ``context_items`` together: what a viewer's risk reads."""
        if self.context_items is None:
            return self.user_items
        if self.user_items is None:
            return self.context_items
        return sp.csr_matrix(self.user_items + self.context_items)

    @property
    def size(self) -> int:
        if self.n_rows is not None:
            return int(self.n_rows)
        if self.userids is not None:
            return int(self.userids.shape[0])
        if self.user_items is not None:
            return int(self.user_items.shape[0])
        return 0

    def take(self, rows: np.ndarray) -> ViewerBatch:
        """The sub-batch of the given rows."""
        return ViewerBatch(
            None if self.userids is None else self.userids[rows],
            None if self.user_items is None else self.user_items[rows],
            self.surface,
            None if self.n_rows is None else int(np.asarray(rows).shape[0]),
            None if self.context_items is None else self.context_items[rows],
        )


@dataclass(frozen=True, eq=False)
class CohortTable:
    """Actions per viewer cohort, compiled once per policy and snapshot.

    Parameters
    ----------
    name, reason : str
        The filter's name and the reason code of its actions.
    hard_masks : ndarray of bool, shape (n_cohorts, n_candidates), optional
        ``hard_masks[c, i]``: candidate ``i`` is never returned to viewers of cohort ``c``.
    penalties : ndarray of float32, shape (n_cohorts, n_candidates), optional
        Non-negative demotion of candidate ``i`` for viewers of cohort ``c``.
    labels : tuple of str
        A name per cohort, for explanations.
    """

    name: str
    reason: str
    hard_masks: np.ndarray | None = None
    penalties: np.ndarray | None = None
    labels: tuple[str, ...] = ()

    @property
    def n_cohorts(self) -> int:
        a = self.hard_masks if self.hard_masks is not None else self.penalties
        return 0 if a is None else int(a.shape[0])


@dataclass(frozen=True, eq=False)
class CapSpec:
    """At most a share of a slate from one group, applied at selection time.

    Parameters
    ----------
    name, reason : str
        The filter's name and the reason code recorded for capped items.
    groups : ndarray of int64, shape (n_candidates,)
        Group of every candidate; ``-1`` for candidates the cap does not count.
    max_share : float
        At most ``max(min_count, floor(max_share * N))`` items of a slate of ``N`` come
        from any one group; the slate is backfilled from the next eligible items.
    min_count : int
        Lower bound on the per-group allowance.
    """

    name: str
    reason: str
    groups: np.ndarray
    max_share: float
    min_count: int = 0

    def allowance(self, N: int) -> int:
        return max(int(self.min_count), int(np.floor(self.max_share * N + 1e-9)))


@runtime_checkable
class FilterProtocol(Protocol):
    """Structural type of a filter; see the module docstring."""

    name: str
    reason: str

    def compile_global(self, catalog: Catalog) -> PlanPart | None: ...

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None: ...

    def fingerprint(self) -> bytes: ...


@runtime_checkable
class CohortFilter(Protocol):
    """Optional steps of a filter with actions per viewer cohort (see the module docstring)."""

    def compile_cohorts(self, catalog: Catalog) -> CohortTable | None: ...

    def assign_cohorts(self, catalog: Catalog, viewers: ViewerBatch) -> np.ndarray: ...


@runtime_checkable
class CapFilter(Protocol):
    """Optional step of a filter with a share cap applied at selection time."""

    def compile_caps(self, catalog: Catalog) -> CapSpec | None: ...


@runtime_checkable
class QueryFilter(Protocol):
    """Optional step of a filter that leaves interactions out of the viewers' queries."""

    def compile_queries(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix | None: ...


@runtime_checkable
class ProfileQueryFilter(Protocol):
    """Optional step of a filter that leaves viewed profiles out of their own list's
    query (``similar_items``, ``similar_users``)."""

    def compile_profile_queries(
        self, catalog: Catalog, viewers: ViewerBatch
    ) -> sp.csr_matrix | None: ...


def array_fingerprint(*arrays) -> bytes:
    """A SHA-256 digest of arrays (dense or sparse), shapes and dtypes included."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
        elif sp.issparse(a):
            c = sp.csr_matrix(a)
            h.update(f"csr{c.shape}{c.dtype}".encode())
            for part in (c.indptr, c.indices, c.data):
                h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(a, np.ndarray):
            h.update(f"nd{a.shape}{a.dtype}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.digest()


class Filter:
    """Base class for filters: no-op compile steps and a fingerprint of ``params()``.

    Subclasses set ``name`` (a stable class attribute) and ``reason`` (an instance
    attribute, overridable per instance), override one or both compile steps, and return
    their parameters and arrays from ``params()``.
    """

    name: str = "filter"
    reason: str = "filtered"
    mode: str = "enforce"
    failure: str = "fail_closed"
    surfaces: tuple[str, ...] | None = None
    #: A child-safety rule: it can be neither held back (:class:`~guardrails.Holdback`)
    #: nor set ``failure="fail_open"`` (both refused with a
    #: :class:`~guardrails.exceptions.ValidationError`), and a failure to compile it
    #: always raises :class:`~guardrails.exceptions.FailClosedError`. A constructor
    #: argument of the filters that take it.
    protected: bool = False
    #: Policy-file kind (see :data:`guardrails.filters.registry.KINDS`) of every
    #: constructor argument besides the common settings; ``None``: not in policy files.
    config_spec: ClassVar[dict[str, str] | None] = None
    #: Instance attributes that memoise derived state: left out when pickled (a worker
    #: rebuilds them on first use, and a memo of a batch means nothing elsewhere).
    _transient: ClassVar[tuple[str, ...]] = ()

    def _settings(
        self,
        *,
        name: str | None,
        reason: str,
        mode: str,
        failure: str,
        surfaces,
        where: str,
    ) -> None:
        """Validate and store the common settings of a built-in filter."""
        if name is not None:
            if not is_filter_name(name):
                raise fail(
                    "name", where, "a non-empty string of letters, digits, '_' and '-'", name
                )
            self.name = name
        if not isinstance(reason, str) or not reason:
            raise fail("reason", where, "a non-empty string", reason)
        self.reason = reason
        self.mode = check_choice(mode, "mode", where, MODES)
        self.failure = check_choice(failure, "failure", where, FAILURE_MODES)
        self.surfaces = check_surfaces(surfaces, where)
        if self.protected and self.failure == "fail_open":
            raise fail(
                "failure",
                where,
                "'fail_closed' for a child-safety filter (it may never be skipped)",
                failure,
            )

    def _protect(self, protected, where: str) -> None:
        """Validate and store the ``protected`` setting of a filter that takes it (called
        before :meth:`_settings`, which then refuses ``failure="fail_open"``)."""
        self.protected = check_bool(protected, "protected", where)

    def _keep_arguments(self, arguments: dict) -> None:
        """Store the constructor arguments named in ``config_spec`` as given.

        Called first thing in ``__init__`` with ``locals()``: what the spec names is what
        the filter keeps and what a policy file writes, so the two cannot drift apart.
        """
        for key in type(self).config_spec or ():
            setattr(self, key, arguments[key])

    def _apply_settings(self, arguments: dict, where: str) -> None:
        """:meth:`_settings` from the constructor's ``locals()``: its common arguments
        (``name``, ``reason``, ``mode``, ``failure``, ``surfaces``) as they stand."""
        self._settings(**{key: arguments[key] for key in _COMMON}, where=where)

    def _fitted(self, *keys: str) -> tuple:
        """The validated values (``key_``) of ``keys``, by default of every
        ``config_spec`` key in order: the ``params()`` of a filter whose arguments are
        all it compiles from. ``protected`` is a setting (in every fingerprint), not a
        fitted value."""
        keys = keys or tuple(k for k in type(self).config_spec or () if k != "protected")
        return tuple(getattr(self, key + "_") for key in keys)

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        return None

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        return None

    def params(self) -> tuple:
        return ()

    def fingerprint(self) -> bytes:
        return array_fingerprint(
            type(self).__qualname__,
            self.name,
            self.reason,
            self.mode,
            self.failure,
            self.surfaces,
            self.protected,
            *self.params(),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, reason={self.reason!r})"

    def __getstate__(self):  # type: ignore[no-untyped-def]
        state = super().__getstate__()
        if self._transient and isinstance(state, dict):
            state = {k: v for k, v in state.items() if k not in self._transient}
        return state


def is_filter_name(name) -> bool:
    """Whether ``name`` can name a filter: a non-empty str of letters, digits, '_' and '-'
    (a built-in's ``name=`` setting, a plug-in's class-level ``name``)."""
    return isinstance(name, str) and bool(name) and name.replace("_", "").replace("-", "").isalnum()


def check_surfaces(surfaces, where: str) -> tuple[str, ...] | None:
    """Validate a filter's ``surfaces`` setting: ``None`` or a sorted tuple of names."""
    if surfaces is None:
        return None
    if isinstance(surfaces, str):
        surfaces = (surfaces,)
    try:
        out = tuple(surfaces)
    except TypeError as exc:
        raise fail("surfaces", where, "None or a sequence of surface names", surfaces) from exc
    if not out or not all(isinstance(s, str) and s for s in out):
        raise fail("surfaces", where, "None or a non-empty sequence of surface names", surfaces)
    return tuple(sorted(set(out)))
