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

from .._validation import check_float, check_int, check_vector, fail, is_int_vector
from ..core.plan import PlanPart
from ..exceptions import FailClosedError, GuardrailsWarning
from ._actions import ACTION_CODE, ACTIONS, action_part, check_action
from ._risk import check_damping, propagate_seed_risk, seed_mask
from .base import Catalog, CohortTable, Filter, ViewerBatch
from .primitive import viewer_values
from .viewers import RelationshipRule, ShareCap, ViewerCircuitBreaker

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


def _plain_or_snapshot(
    catalog: Catalog,
    arr: np.ndarray | None,
    *,
    where: str,
    name: str,
    attribute: str,
    missing: str,
    dtype=None,
) -> np.ndarray:
    """A per-candidate array: ``arr``, the plain array given to the filter as ``name``, or
    without it ``catalog.snapshot.<attribute>``; checked against the catalogue's size.

    Raises :class:`FailClosedError` with the message ``missing`` when neither is there.
    """
    if arr is None:
        snap = catalog.snapshot
        read = None if snap is None else getattr(snap, attribute, None)
        if read is None:
            raise FailClosedError(missing)
        name, arr = "snapshot", np.asarray(read, dtype=dtype)
    catalog.check_sized(where, name, arr.shape[0])
    return arr


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
        self._keep_arguments(locals())
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
        self.action_ = check_action(action, where)
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        self.protected = any(is_child_safety(c) for c in self.categories_)
        if failure is None:
            failure = "fail_closed" if self.protected else "fail_open"
        if reason is None:
            reason = f"label:{self.categories_[0]}" if self.categories_ else "label_severity"
        self._apply_settings(locals(), where)

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
        return _plain_or_snapshot(
            catalog,
            self.severity_,
            where="BlockLabeled",
            name="severity",
            attribute="max_severity",
            missing=f"BlockLabeled {self.name!r} cannot read label severity: no snapshot with "
            "max_severity and no plain severity were given.",
        )

    def matches(self, catalog: Catalog) -> np.ndarray:
        """Bool mask of the candidates this filter acts on, shape ``(catalog.n,)``."""
        mask = np.zeros(catalog.n, dtype=bool)
        for cat in self.categories_:
            mask |= self._category(catalog, cat)
        if self.min_severity_ is not None:
            mask |= self._severity(catalog) >= self.min_severity_
        return mask

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        return action_part(
            self.name, self.reason, self.action_, self.matches(catalog), self.weight_
        )


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
        self._keep_arguments(locals())
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
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return self._fitted(
            "risk", "seeds", "threshold", "demote_threshold", "demote_weight", "demote_reason"
        )

    def risk_for(self, catalog: Catalog) -> np.ndarray:
        return _plain_or_snapshot(
            catalog,
            self.risk_,
            where="SuppressNeighborhood",
            name="risk",
            attribute="risk",
            missing=f"SuppressNeighborhood {self.name!r} has no risk: pass risk=, seeds= with "
            "graph=, or give the Guard a snapshot with a risk array.",
            dtype=np.float32,
        )

    def compile_global(self, catalog: Catalog) -> list[PlanPart]:
        risk = self.risk_for(catalog)
        drop = risk >= self.threshold_
        if self.seeds_ is not None:
            drop = drop | self.seeds_
        parts = []
        p = action_part(self.name, self.reason, "drop", drop, 0.0)
        if p is not None:
            parts.append(p)
        if self.demote_threshold_ is not None and self.demote_weight_ > 0:
            band = (risk >= self.demote_threshold_) & ~drop
            p = action_part(
                self.name, self.demote_reason_, "demote", band, self.demote_weight_ * risk
            )
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
    if not is_int_vector(arr):
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
    protected : bool, keyword-only
        A child-safety rule (:attr:`Filter.protected <guardrails.filters.Filter.protected>`).
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
        "protected": "bool",
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
        protected: bool = False,
        reason: str = "cohort_rule",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
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
            if isinstance(v, str) and v in ACTION_CODE:
                codes[idx] = ACTION_CODE[v]
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
        self._protect(protected, where)
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return self._fitted(
            "matrix",
            "viewer_cohorts",
            "candidate_cohorts",
            "viewer_labels",
            "candidate_labels",
            "weight",
            "unknown_viewer",
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
        return viewer_values(self.viewer_cohorts_, viewers.userids, unknown)


def warn_skipped(name: str, exc: BaseException) -> None:
    """Warn that a fail-open filter was skipped (never silently)."""
    warnings.warn(
        f"Filter {name!r} could not compile and fails open, so it was skipped: {exc}",
        GuardrailsWarning,
        stacklevel=4,
    )
