"""Built-in safety filters: labels, neighbourhoods, cohorts, circuit breaker, caps.

Every filter accepts plain arrays, so it can be built and tested without the signals
store or the expansion module; :class:`BlockLabeled` and :class:`SuppressNeighborhood`
also read a snapshot (``catalog.snapshot``) through a small interface:

``snapshot.has(category) -> ndarray of bool, shape (n,)``
    Accounts carrying a label of that category.
``snapshot.max_severity -> ndarray of float32, shape (n,)``
    Highest label severity per account.
``snapshot.risk -> ndarray of float32, shape (n,)`` (optional)
    Propagated neighbourhood risk.
``snapshot.version -> str``
    Recorded in every decision.

Actions are graded: ``"drop"`` (a mask: never returned) and ``"demote"`` (a non-negative
penalty subtracted from the score). The strictest action wins across filters.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_csr, check_float, check_int, check_vector, fail
from ..core.plan import PlanPart
from ..exceptions import FailClosedError
from ._risk import check_damping, propagate_seed_risk, seed_mask, viewer_share
from .base import CapSpec, Catalog, CohortTable, Filter, ViewerBatch
from .primitive import viewer_rows

__all__ = [
    "CHILD_SAFETY_CATEGORIES",
    "is_child_safety",
    "ACTIONS",
    "BlockLabeled",
    "SuppressNeighborhood",
    "CohortRule",
    "ViewerCircuitBreaker",
    "ShareCap",
    "RelationshipRule",
]

#: Label categories treated as child safety: filters on them are ``protected`` (never
#: failed open, never held back) and fail closed by default.
CHILD_SAFETY_CATEGORIES = frozenset(
    {
        "csam",
        "csam_seller",
        "cse",
        "child_safety",
        "child_sexual_abuse",
        "child_sexual_exploitation",
        "minor_sexualization",
        "grooming",
        "sextortion",
    }
)

_CHILD_PREFIXES = ("csam", "cse", "child", "minor", "grooming", "sextortion")


def is_child_safety(category: str) -> bool:
    """Whether a label category is a child-safety category (by name or prefix)."""
    c = category.lower()
    return c in CHILD_SAFETY_CATEGORIES or c.startswith(_CHILD_PREFIXES)


#: Graded actions, weakest first; "strictest wins" means the largest code wins.
ACTIONS = ("allow", "demote", "drop")
_ACTION_CODE = {a: i for i, a in enumerate(ACTIONS)}


def _action(value, where: str, name: str = "action") -> str:
    return check_choice(value, name, where, ("drop", "demote"))


def _part(name: str, reason: str, action: str, mask: np.ndarray, weight) -> PlanPart | None:
    """A drop (mask) or demote (penalty) part over ``mask``."""
    if not mask.any():
        return None
    if action == "drop":
        return PlanPart(name, reason, hard_mask=mask)
    if np.isscalar(weight):
        pen = np.where(mask, np.float32(weight), np.float32(0.0)).astype(np.float32)
    else:
        pen = np.where(mask, weight, 0.0).astype(np.float32)
    return PlanPart(name, reason, penalty=pen)


# ---------------------------------------------------------------------------- labels
class BlockLabeled(Filter):
    """Drop (or demote) accounts that carry labels of given categories or severity.

    Parameters
    ----------
    categories : sequence of str
        Label categories that trigger the action (for example ``["csam"]``).
    min_severity : float, optional, keyword-only
        Also act on accounts whose highest label severity is at least this.
    labels : dict of str to array-like of bool, or 2-d array, optional, keyword-only
        Plain labels instead of the snapshot: a mapping of category to a bool mask of
        shape ``(n_candidates,)``, or an array of shape ``(n_candidates, n_categories)``
        with ``label_names`` naming its columns.
    label_names : sequence of str, optional, keyword-only
        Column names of a 2-d ``labels`` array.
    severity : array-like of float, shape (n_candidates,), optional, keyword-only
        Plain highest severity per account, instead of ``snapshot.max_severity``.
    action : {"drop", "demote"}, keyword-only
    weight : float, keyword-only
        Demotion in score units (``action="demote"``).
    reason : str, keyword-only
        Reason code; defaults to ``"label:<first category>"``.
    failure : {"fail_closed", "fail_open"}, optional, keyword-only
        What to do when the labels cannot be read (no snapshot, or a category the
        snapshot does not know). Defaults to ``"fail_closed"`` when any category is a
        child-safety category (then ``"fail_open"`` is refused) and ``"fail_open"``
        (skip with a warning, counted) otherwise.
    mode, surfaces, name : keyword-only
        Common filter settings.

    Raises
    ------
    FailClosedError
        At compile time, when labels cannot be read and the filter fails closed.
    """

    name = "block_labeled"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "categories": "strs",
        "min_severity": "float",
        "labels": "labels",
        "label_names": "strs",
        "severity": "vector",
        "action": "str",
        "weight": "float",
    }

    def __init__(
        self,
        categories=(),
        *,
        min_severity: float | None = None,
        labels=None,
        label_names=None,
        severity=None,
        action: str = "drop",
        weight: float = 1.0,
        reason: str | None = None,
        failure: str | None = None,
        mode: str = "enforce",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self.categories = categories
        self.min_severity = min_severity
        self.labels = labels
        self.label_names = label_names
        self.severity = severity
        self.action = action
        self.weight = weight
        where = "BlockLabeled"
        if isinstance(categories, str):
            categories = (categories,)
        cats = tuple(categories)
        if not all(isinstance(c, str) and c for c in cats):
            raise fail("categories", where, "a sequence of non-empty category names", categories)
        self.categories_ = tuple(dict.fromkeys(cats))
        self.min_severity_ = (
            None if min_severity is None else check_float(min_severity, "min_severity", where)
        )
        if not self.categories_ and self.min_severity_ is None:
            raise fail("categories", where, "non-empty unless min_severity is set", categories)
        self.labels_ = None if labels is None else _check_labels(labels, label_names, where)
        self.severity_ = None if severity is None else check_vector(severity, "severity", where)
        self.action_ = _action(action, where)
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        self.protected = any(is_child_safety(c) for c in self.categories_)
        if failure is None:
            failure = "fail_closed" if self.protected else "fail_open"
        if reason is None:
            reason = f"label:{self.categories_[0]}" if self.categories_ else "label_severity"
        self._settings(
            name=name, reason=reason, mode=mode, failure=failure, surfaces=surfaces, where=where
        )

    def params(self) -> tuple:
        lab = (
            ()
            if self.labels_ is None
            else tuple(x for k in sorted(self.labels_) for x in (k, self.labels_[k]))
        )
        return (
            self.categories_,
            self.min_severity_,
            *lab,
            self.severity_,
            self.action_,
            self.weight_,
        )

    def _category(self, catalog: Catalog, cat: str) -> np.ndarray:
        if self.labels_ is not None and cat in self.labels_:
            arr = self.labels_[cat]
            catalog.check_sized("BlockLabeled", "labels", arr.shape[0])
            return arr
        snap = catalog.snapshot
        if snap is None or not hasattr(snap, "has"):
            raise FailClosedError(
                f"BlockLabeled {self.name!r} cannot read label category {cat!r}: the Guard has no "
                "snapshot and no plain labels were given."
            )
        known = getattr(snap, "categories", None)
        if known is not None and cat not in known:
            raise FailClosedError(
                f"BlockLabeled {self.name!r} cannot read label category {cat!r}: the snapshot "
                f"(version {getattr(snap, 'version', None)!r}) does not carry it."
            )
        try:
            arr = np.asarray(snap.has(cat))
        except (KeyError, LookupError, ValueError) as exc:
            raise FailClosedError(
                f"BlockLabeled {self.name!r} cannot read label category {cat!r} from the snapshot: {exc}"
            ) from exc
        if arr.dtype != bool or arr.ndim != 1:
            raise FailClosedError(
                f"BlockLabeled {self.name!r}: snapshot.has({cat!r}) returned {arr.dtype} of shape "
                f"{arr.shape}, not a 1-d bool array."
            )
        catalog.check_sized("BlockLabeled", "snapshot", arr.shape[0])
        return arr

    def _severity(self, catalog: Catalog) -> np.ndarray:
        if self.severity_ is not None:
            catalog.check_sized("BlockLabeled", "severity", self.severity_.shape[0])
            return self.severity_
        snap = catalog.snapshot
        sev = None if snap is None else getattr(snap, "max_severity", None)
        if sev is None:
            raise FailClosedError(
                f"BlockLabeled {self.name!r} cannot read label severity: no snapshot with "
                "max_severity and no plain severity were given."
            )
        sev = np.asarray(sev)
        catalog.check_sized("BlockLabeled", "snapshot", sev.shape[0])
        return sev

    def matches(self, catalog: Catalog) -> np.ndarray:
        """Bool mask of the candidates this filter acts on, shape ``(catalog.n,)``."""
        mask = np.zeros(catalog.n, dtype=bool)
        for cat in self.categories_:
            mask |= self._category(catalog, cat)
        if self.min_severity_ is not None:
            mask |= self._severity(catalog) >= self.min_severity_
        return mask

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        return _part(self.name, self.reason, self.action_, self.matches(catalog), self.weight_)


def _check_labels(labels, label_names, where: str) -> dict[str, np.ndarray]:
    what = "a dict of category to 1-d bool arrays, or a 2-d array with label_names"
    if isinstance(labels, dict):
        out = {}
        for k, v in labels.items():
            a = np.asarray(v)
            if (
                not isinstance(k, str)
                or a.ndim != 1
                or not (a.dtype == bool or np.issubdtype(a.dtype, np.integer))
            ):
                raise fail("labels", where, what, labels)
            out[k] = a.astype(bool)
        lengths = {a.shape[0] for a in out.values()}
        if len(lengths) > 1:
            raise fail(
                "labels",
                where,
                "arrays of one length",
                f"lengths {sorted(lengths)}",
                describe=False,
            )
        return out
    arr = np.asarray(labels)
    if arr.ndim != 2 or label_names is None or len(label_names) != arr.shape[1]:
        raise fail("labels", where, what, labels)
    return {str(n): arr[:, j].astype(bool) for j, n in enumerate(label_names)}


# ---------------------------------------------------------------------------- neighbourhood
class SuppressNeighborhood(Filter):
    """Drop accounts whose propagated risk crosses a threshold; demote the band below it.

    Parameters
    ----------
    risk : array-like of float, shape (n_candidates,), optional
        Propagated risk in [0, 1]. Without it, risk is computed from ``seeds`` and
        ``graph``, or read from ``snapshot.risk`` at compile time.
    threshold : float, keyword-only
        Candidates with ``risk >= threshold`` are dropped.
    demote_threshold : float, optional, keyword-only
        Candidates with ``demote_threshold <= risk < threshold`` are demoted by
        ``demote_weight * risk``.
    demote_weight : float, keyword-only
    seeds : array-like of bool or int, optional, keyword-only
        Flagged accounts (dropped whatever the threshold).
    graph : sparse matrix, shape (n, n), optional, keyword-only
        Follow or interaction graph for propagation from ``seeds``.
    alpha : float in (0, 1), optional, keyword-only
        Damping of the propagation from ``seeds`` over ``graph`` (the weight of each
        further hop); ``None`` uses :data:`guardrails.expand.DEFAULT_DAMPING`.
    reason, demote_reason : str, keyword-only
    mode, failure, surfaces, name : keyword-only
    """

    name = "suppress_neighborhood"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "risk": "vector",
        "threshold": "float",
        "demote_threshold": "float",
        "demote_weight": "float",
        "seeds": "indices",
        "graph": "csr",
        "alpha": "float",
        "demote_reason": "str",
    }

    def __init__(
        self,
        risk=None,
        *,
        threshold: float = 0.3,
        demote_threshold: float | None = None,
        demote_weight: float = 1.0,
        seeds=None,
        graph=None,
        alpha: float | None = None,
        reason: str = "risk_neighborhood",
        demote_reason: str = "risk_neighborhood_demoted",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self.risk = risk
        self.threshold = threshold
        self.demote_threshold = demote_threshold
        self.demote_weight = demote_weight
        self.seeds = seeds
        self.graph = graph
        self.alpha = alpha
        self.demote_reason = demote_reason
        where = "SuppressNeighborhood"
        self.threshold_ = check_float(
            threshold, "threshold", where, low=0.0, high=1.0, low_open=True
        )
        self.demote_threshold_ = (
            None
            if demote_threshold is None
            else check_float(
                demote_threshold, "demote_threshold", where, low=0.0, high=self.threshold_
            )
        )
        self.demote_weight_ = check_float(demote_weight, "demote_weight", where, low=0.0)
        self.alpha_ = None if alpha is None else check_damping(alpha, "alpha", where)
        if risk is not None:
            self.risk_ = check_vector(risk, "risk", where, low=0.0, high=1.0)
        elif graph is not None:
            if seeds is None:
                raise fail("seeds", where, "given together with graph", None)
            self.risk_ = propagate_seed_risk(seeds, graph, alpha=self.alpha_, where=where)
        else:
            self.risk_ = None
        n = None if self.risk_ is None else self.risk_.shape[0]
        if seeds is not None:
            if n is None:
                raise fail(
                    "seeds",
                    where,
                    "given together with risk or graph",
                    "seeds alone",
                    describe=False,
                )
            self.seeds_ = seed_mask(seeds, n, "seeds", where)
        else:
            self.seeds_ = None
        if not isinstance(demote_reason, str) or not demote_reason:
            raise fail("demote_reason", where, "a non-empty string", demote_reason)
        self.demote_reason_ = demote_reason
        self._settings(
            name=name, reason=reason, mode=mode, failure=failure, surfaces=surfaces, where=where
        )

    def params(self) -> tuple:
        return (
            self.risk_,
            self.seeds_,
            self.threshold_,
            self.demote_threshold_,
            self.demote_weight_,
            self.demote_reason_,
        )

    def risk_for(self, catalog: Catalog) -> np.ndarray:
        if self.risk_ is not None:
            catalog.check_sized("SuppressNeighborhood", "risk", self.risk_.shape[0])
            return self.risk_
        snap = catalog.snapshot
        risk = None if snap is None else getattr(snap, "risk", None)
        if risk is None:
            raise FailClosedError(
                f"SuppressNeighborhood {self.name!r} has no risk: pass risk=, seeds= with graph=, "
                "or give the Guard a snapshot with a risk array."
            )
        risk = np.asarray(risk, dtype=np.float32)
        catalog.check_sized("SuppressNeighborhood", "snapshot", risk.shape[0])
        return risk

    def compile_global(self, catalog: Catalog) -> list[PlanPart]:
        risk = self.risk_for(catalog)
        drop = risk >= self.threshold_
        if self.seeds_ is not None:
            drop = drop | self.seeds_
        parts = []
        p = _part(self.name, self.reason, "drop", drop, 0.0)
        if p is not None:
            parts.append(p)
        if self.demote_threshold_ is not None and self.demote_weight_ > 0:
            band = (risk >= self.demote_threshold_) & ~drop
            p = _part(self.name, self.demote_reason_, "demote", band, self.demote_weight_ * risk)
            if p is not None:
                parts.append(p)
        return parts


# ---------------------------------------------------------------------------- cohorts
def _names(value, n: int, name: str, where: str, prefix: str) -> tuple[str, ...]:
    if value is None:
        return tuple(f"{prefix}{i}" for i in range(n))
    out = tuple(value)
    if len(out) != n or not all(isinstance(x, str) and x for x in out) or len(set(out)) != n:
        raise fail(name, where, f"{n} distinct non-empty names", value)
    return out


def _cohort_ids(value, name: str, where: str, n_cohorts: int) -> np.ndarray:
    arr = np.asarray(value)
    what = f"a 1-d array of ints in [-1, {n_cohorts}) (-1: no cohort)"
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise fail(name, where, what, value)
    if arr.size and (arr.min() < -1 or arr.max() >= n_cohorts):
        raise fail(name, where, what, f"values in [{arr.min()}, {arr.max()}]", describe=False)
    return arr.astype(np.int64)


class CohortRule(Filter):
    """A viewer-cohort x candidate-cohort matrix of actions.

    For example, with viewer cohorts ``["adult", "minor", "adult_flagged_by_minor"]`` and
    candidate cohorts ``["adult", "minor"]``::

        matrix = [["allow", "allow"],    # adult viewers
                  ["drop",  "allow"],    # minors never get adult accounts suggested
                  ["allow", "drop"]]     # flagged adults never get minors suggested

    Parameters
    ----------
    viewer_cohorts : array-like of int, shape (n_users,)
        Cohort of every viewer, ``-1`` for none (no action).
    candidate_cohorts : array-like of int, shape (n_candidates,)
        Cohort of every candidate, ``-1`` for none (never acted on).
    matrix : array-like of str or int, shape (n_viewer_cohorts, n_candidate_cohorts)
        ``"allow"``, ``"demote"`` or ``"drop"`` (or 0, 1, 2).
    viewer_labels, candidate_labels : sequence of str, optional, keyword-only
        Cohort names, for explanations and policy files.
    weight : float, keyword-only
        Demotion in score units for ``"demote"`` cells.
    unknown_viewer : "strictest" or int, keyword-only
        Cohort of viewers beyond ``viewer_cohorts`` (new accounts) and of calls without
        a viewer. ``"strictest"`` (default) applies the strictest action of any cohort
        to each candidate cohort: a viewer we know nothing about might be a minor.
    reason : str, keyword-only
    mode, failure, surfaces, name : keyword-only
    """

    name = "cohort_rule"

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "viewer_cohorts": "ints",
        "candidate_cohorts": "ints",
        "matrix": "matrix",
        "viewer_labels": "strs",
        "candidate_labels": "strs",
        "weight": "float",
        "unknown_viewer": "str_or_int",
    }

    def __init__(
        self,
        viewer_cohorts,
        candidate_cohorts,
        matrix,
        *,
        viewer_labels=None,
        candidate_labels=None,
        weight: float = 1.0,
        unknown_viewer="strictest",
        reason: str = "cohort_rule",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self.viewer_cohorts = viewer_cohorts
        self.candidate_cohorts = candidate_cohorts
        self.matrix = matrix
        self.viewer_labels = viewer_labels
        self.candidate_labels = candidate_labels
        self.weight = weight
        self.unknown_viewer = unknown_viewer
        where = "CohortRule"
        mat = np.asarray(matrix, dtype=object)
        if mat.ndim != 2 or mat.size == 0:
            raise fail(
                "matrix",
                where,
                "a non-empty 2-d array of actions 'allow', 'demote', 'drop'",
                matrix,
            )
        codes = np.empty(mat.shape, dtype=np.int8)
        for idx, v in np.ndenumerate(mat):
            if isinstance(v, str) and v in _ACTION_CODE:
                codes[idx] = _ACTION_CODE[v]
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) <= 2:
                codes[idx] = int(v)
            else:
                raise fail(
                    "matrix",
                    where,
                    "a 2-d array of actions 'allow', 'demote', 'drop' (or 0, 1, 2)",
                    f"{v!r} at {idx}",
                    describe=False,
                )
        self.matrix_ = codes
        n_v, n_c = codes.shape
        self.viewer_cohorts_ = _cohort_ids(viewer_cohorts, "viewer_cohorts", where, n_v)
        self.candidate_cohorts_ = _cohort_ids(candidate_cohorts, "candidate_cohorts", where, n_c)
        self.viewer_labels_ = _names(viewer_labels, n_v, "viewer_labels", where, "viewer_cohort_")
        self.candidate_labels_ = _names(
            candidate_labels, n_c, "candidate_labels", where, "candidate_cohort_"
        )
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        if isinstance(unknown_viewer, str):
            if unknown_viewer == "strictest":
                self.unknown_viewer_: int | str = "strictest"
            elif unknown_viewer in self.viewer_labels_:
                self.unknown_viewer_ = self.viewer_labels_.index(unknown_viewer)
            else:
                raise fail(
                    "unknown_viewer",
                    where,
                    "'strictest', a viewer cohort index or label",
                    unknown_viewer,
                )
        else:
            self.unknown_viewer_ = check_int(
                unknown_viewer, "unknown_viewer", where, low=0, high=n_v - 1
            )
        self._settings(
            name=name, reason=reason, mode=mode, failure=failure, surfaces=surfaces, where=where
        )

    def params(self) -> tuple:
        return (
            self.matrix_,
            self.viewer_cohorts_,
            self.candidate_cohorts_,
            self.viewer_labels_,
            self.candidate_labels_,
            self.weight_,
            self.unknown_viewer_,
        )

    def actions(self) -> np.ndarray:
        """Action codes per cohort row: the matrix, plus the strictest row last."""
        return np.vstack([self.matrix_, self.matrix_.max(axis=0, keepdims=True)])

    def compile_cohorts(self, catalog: Catalog) -> CohortTable | None:
        catalog.check_sized("CohortRule", "candidate_cohorts", self.candidate_cohorts_.shape[0])
        acts = self.actions()  # (n_v + 1, n_c)
        cc = self.candidate_cohorts_
        known = cc >= 0
        per = np.zeros((acts.shape[0], catalog.n), dtype=np.int8)
        per[:, known] = acts[:, cc[known]]
        drop = per == 2
        demote = per == 1
        pens = None
        if demote.any() and self.weight_ > 0:
            pens = np.where(demote, np.float32(self.weight_), np.float32(0.0)).astype(np.float32)
        masks = drop if drop.any() else None
        if masks is None and pens is None:
            return None
        return CohortTable(
            self.name, self.reason, masks, pens, (*self.viewer_labels_, "unknown_viewer")
        )

    def assign_cohorts(self, catalog: Catalog, viewers: ViewerBatch) -> np.ndarray:
        unknown = (
            self.matrix_.shape[0]
            if self.unknown_viewer_ == "strictest"
            else int(self.unknown_viewer_)
        )
        if viewers.userids is None:
            return np.full(viewers.size, unknown, dtype=np.int64)
        u = viewers.userids
        inside = u < self.viewer_cohorts_.shape[0]
        out = np.full(u.shape[0], unknown, dtype=np.int64)
        out[inside] = self.viewer_cohorts_[u[inside]]
        return out


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
    reason : str, keyword-only
    mode, failure, surfaces, name : keyword-only
    """

    name = "viewer_circuit_breaker"

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
        reason: str = "viewer_circuit_breaker",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self.risk = risk
        self.item_threshold = item_threshold
        self.trip = trip
        self.pool_threshold = pool_threshold
        self.pool = pool
        self.viewer_risk = viewer_risk
        self.min_interactions = min_interactions
        self.strip_interactions = strip_interactions
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
        if pool is not None:
            p = np.asarray(pool)
            if p.dtype != bool or p.shape != self.risk_.shape:
                raise fail("pool", where, f"a bool mask of length {self.risk_.shape[0]}", pool)
            self.pool_ = p.copy()
        else:
            self.pool_ = None
        self.viewer_risk_ = (
            None
            if viewer_risk is None
            else check_vector(viewer_risk, "viewer_risk", where, low=0.0, high=1.0)
        )
        self.min_interactions_ = check_int(min_interactions, "min_interactions", where, low=1)
        if not isinstance(strip_interactions, bool):
            raise fail("strip_interactions", where, "a bool", strip_interactions)
        self.strip_interactions_ = strip_interactions
        self._settings(
            name=name, reason=reason, mode=mode, failure=failure, surfaces=surfaces, where=where
        )

    def params(self) -> tuple:
        return (
            self.risk_,
            self.item_threshold_,
            self.trip_,
            self.pool_threshold_,
            self.pool_,
            self.viewer_risk_,
            self.min_interactions_,
            self.strip_interactions_,
        )

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
            u = viewers.userids
            inside = u < self.viewer_risk_.shape[0]
            stored = np.zeros(m, dtype=np.float64)
            stored[inside] = self.viewer_risk_[u[inside]]
            out = np.maximum(out, stored)
        return out

    def tripped(self, viewers: ViewerBatch) -> np.ndarray:
        """Bool mask of the batch's tripped viewers (memoised for the last batch)."""
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is viewers:
            return memo[1]
        out = self.viewer_risk_of(viewers) >= self.trip_
        self._memo = (viewers, out)
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_memo", None)
        return state

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
        outside = (~self.low_risk_pool()).astype(np.float32)
        keep_rows = sp.diags(trip.astype(np.float32))
        strip = (keep_rows @ (ui != 0).astype(np.float32)) @ sp.diags(outside)
        strip = sp.csr_matrix(strip)
        strip.eliminate_zeros()
        return strip


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
        self.max_share = max_share
        self.risk = risk
        self.threshold = threshold
        self.communities = communities
        self.min_count = min_count
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
            if (
                c.ndim != 1
                or not (c.size == 0 or np.issubdtype(c.dtype, np.integer))
                or (c.size and c.min() < -1)
            ):
                raise fail("communities", where, "a 1-d array of ints >= -1", communities)
            self.communities_ = c.astype(np.int64)
        else:
            self.communities_ = None
        default_min = 0 if self.risk_ is not None else 1
        self.min_count_ = (
            default_min if min_count is None else check_int(min_count, "min_count", where, low=0)
        )
        self._settings(
            name=name, reason=reason, mode=mode, failure=failure, surfaces=surfaces, where=where
        )

    def params(self) -> tuple:
        return (self.max_share_, self.risk_, self.threshold_, self.communities_, self.min_count_)

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
        self.targets = targets
        self.follows = follows
        self.use_call_interactions = use_call_interactions
        self.action = action
        self.weight = weight
        where = "RelationshipRule"
        t = np.asarray(targets)
        if t.dtype == bool:
            if t.ndim != 1:
                raise fail("targets", where, "a 1-d bool mask or an array of indices", targets)
            self.targets_ = np.flatnonzero(t).astype(np.int64)
            self.n_candidates_: int | None = int(t.shape[0])
        else:
            if (
                t.ndim != 1
                or not (t.size == 0 or np.issubdtype(t.dtype, np.integer))
                or (t.size and t.min() < 0)
            ):
                raise fail(
                    "targets", where, "a 1-d bool mask or an array of non-negative indices", targets
                )
            self.targets_ = np.unique(t.astype(np.int64))
            self.n_candidates_ = None
        self.follows_ = None
        if follows is not None:
            f = check_csr(follows, "follows", where)
            self.follows_ = sp.csr_matrix(
                (np.ones(f.nnz, dtype=np.float32), f.indices, f.indptr), shape=f.shape
            )
        if not isinstance(use_call_interactions, bool):
            raise fail("use_call_interactions", where, "a bool", use_call_interactions)
        self.use_call_interactions_ = use_call_interactions
        self.action_ = _action(action, where)
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        self._settings(
            name=name, reason=reason, mode=mode, failure=failure, surfaces=surfaces, where=where
        )

    def params(self) -> tuple:
        return (
            self.targets_,
            self.n_candidates_,
            self.follows_,
            self.use_call_interactions_,
            self.action_,
            self.weight_,
        )

    def _check(self, catalog: Catalog) -> None:
        if self.n_candidates_ is not None:
            catalog.check_sized("RelationshipRule", "targets", self.n_candidates_)
        if self.targets_.size and self.targets_[-1] >= catalog.n:
            raise fail(
                "targets",
                "RelationshipRule",
                f"indices in [0, {catalog.n})",
                f"ids up to {self.targets_[-1]}",
                describe=False,
            )
        if self.follows_ is not None:
            catalog.check_sized("RelationshipRule", "follows", self.follows_.shape[1])

    def followed(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix:
        """Bool-valued CSR ``(m, n)`` of the relationships known for the batch."""
        m, n = viewers.size, catalog.n
        out = sp.csr_matrix((m, n), dtype=np.float32)
        if self.follows_ is not None and viewers.userids is not None:
            out = out + viewer_rows(self.follows_, viewers.userids)
        ui = viewers.user_items
        if self.use_call_interactions_ and ui is not None and ui.shape[1] == n:
            out = out + (ui != 0).astype(np.float32)
        return sp.csr_matrix(out)

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
            fol = self.followed(catalog, viewers)
            is_target = np.zeros(n, dtype=np.float32)
            is_target[self.targets_] = 1.0
            back = sp.csr_matrix((fol > 0).astype(np.float32) @ sp.diags(is_target))
            back.eliminate_zeros()
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


def warn_skipped(name: str, exc: BaseException) -> None:
    """Warn that a fail-open filter was skipped (never silently)."""
    from ..exceptions import GuardrailsWarning

    warnings.warn(
        f"Filter {name!r} could not compile and fails open, so it was skipped: {exc}",
        GuardrailsWarning,
        stacklevel=4,
    )
