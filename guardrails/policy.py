"""Policy: an ordered set of filters compiled into one scoring plan.

A :class:`Policy` is immutable. Its version is a content hash of its settings and its
filters' fingerprints, so two policies with the same filters, parameters and data have
the same version, and every result and decision records the version it was computed
with.

Semantics
---------
- **Precedence.** The strictest action wins, whatever the order: a drop (mask) beats a
  demote (penalty) beats allow. Decisions name the first filter, in policy order, that
  took the strictest action on an item.
- **Modes**, per filter and for the whole policy: ``"enforce"``; ``"shadow"`` (the filter
  is computed and what it would change is recorded, but the served slate is the one
  without it: with the whole policy in shadow, slates are byte-identical to an unguarded
  Guard's); ``"off"`` (ignored; the policy-wide ``"off"`` is a kill switch).
- **Surfaces.** A filter with ``surfaces`` set applies only to calls on those surfaces;
  a call without a surface gets every filter (the strictest reading).
- **Holdback.** A :class:`Holdback` exempts a deterministic, salted fraction of viewers
  from named filters for experiments; child-safety (``protected``) filters can never be
  held back.
- **Failure modes.** A filter that cannot compile (missing labels, a missing snapshot)
  raises :class:`~guardrails.exceptions.FailClosedError` when its failure mode is
  ``"fail_closed"`` (the default, and the only choice for protected filters); with
  ``"fail_open"`` it is skipped with a :class:`~guardrails.exceptions.GuardrailsWarning`
  and counted, never silently.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._validation import check_choice, check_float, fail
from .core.plan import Plan, PlanPart
from .exceptions import FailClosedError, ValidationError
from .filters.base import (
    FAILURE_MODES,
    MODES,
    CapSpec,
    Catalog,
    CohortTable,
    FilterProtocol,
    ViewerBatch,
)

__all__ = [
    "Policy",
    "Holdback",
    "Decision",
    "Explanation",
    "FilterVerdict",
    "DecisionCounters",
    "CompiledPolicy",
    "as_policy",
    "default_policy",
    "load_policy",
    "save_policy",
    "policy_from_dict",
    "policy_to_dict",
    "SCHEMA_VERSION",
]

#: Version of the policy-file schema this release reads and writes.
SCHEMA_VERSION = 1


# ============================================================================ settings
@dataclass(frozen=True)
class FilterSettings:
    """Resolved settings of one filter in a policy."""

    name: str
    mode: str
    failure: str
    surfaces: tuple[str, ...] | None
    protected: bool

    def applies(self, surface: str | None) -> bool:
        return self.surfaces is None or surface is None or surface in self.surfaces


class Holdback:
    """A deterministic, salted fraction of viewers exempt from some filters.

    Parameters
    ----------
    fraction : float
        Share of viewers held back, in [0, 0.5].
    salt : str, keyword-only
        Experiment salt; a viewer's assignment depends only on its id and the salt.
    filters : sequence of str, keyword-only
        Names of the filters the held-back viewers are exempt from. Protected
        (child-safety) filters cannot be named.
    """

    def __init__(self, fraction: float, *, salt: str, filters: Sequence[str]):
        where = "Holdback"
        self.fraction = check_float(fraction, "fraction", where, low=0.0, high=0.5)
        if not isinstance(salt, str) or not salt:
            raise fail("salt", where, "a non-empty string", salt)
        self.salt = salt
        if isinstance(filters, str):
            filters = (filters,)
        names = tuple(filters)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise fail("filters", where, "a non-empty sequence of filter names", filters)
        self.filters = tuple(sorted(set(names)))
        self._salt64 = np.uint64(
            int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little")
        )

    def held(self, userids: np.ndarray | None, m: int) -> np.ndarray:
        """Bool mask of held-back viewers, shape ``(m,)``; no viewer means not held back."""
        if userids is None or self.fraction == 0.0:
            return np.zeros(m, dtype=bool)
        with np.errstate(over="ignore"):
            x = userids.astype(np.uint64) ^ self._salt64
            # splitmix64: a well-mixed, platform-independent hash of the id.
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
        return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < self.fraction

    def fingerprint(self) -> bytes:
        return repr(("holdback", self.fraction, self.salt, self.filters)).encode()

    def __repr__(self) -> str:
        return f"Holdback({self.fraction}, salt={self.salt!r}, filters={list(self.filters)!r})"


# ============================================================================ policy
class Policy:
    """An ordered, immutable set of filters.

    Parameters
    ----------
    filters : sequence of Filter
        In order of precedence for attribution; a candidate removed by any enforced
        filter is removed, penalties add up.
    name : str, keyword-only
        A label for reports.
    mode : {"enforce", "shadow", "off"}, keyword-only
        Policy-wide mode: ``"shadow"`` puts every enforced filter in shadow, ``"off"``
        switches everything off (kill switch).
    filter_modes : dict of str to str, optional, keyword-only
        Per-filter mode overrides by filter name.
    holdback : Holdback, optional, keyword-only

    Raises
    ------
    ValidationError
        For objects that are not filters, duplicate filter names, bad modes, or a holdback
        naming unknown or protected filters.
    """

    def __init__(
        self,
        filters: Sequence[FilterProtocol] = (),
        *,
        name: str = "policy",
        mode: str = "enforce",
        filter_modes: dict[str, str] | None = None,
        holdback: Holdback | None = None,
    ):
        where = "Policy"
        filters = tuple(filters)
        for i, f in enumerate(filters):
            if not isinstance(f, FilterProtocol):
                raise ValidationError(
                    f"The 'filters' parameter of Policy must be a sequence of filters implementing "
                    f"compile_global, compile_viewers and fingerprint. Got {type(f).__name__} at "
                    f"position {i} instead."
                )
        if not isinstance(name, str) or not name:
            raise fail("name", where, "a non-empty string", name)
        self.filters = filters
        self.name = name
        self.mode = check_choice(mode, "mode", where, MODES)
        overrides = dict(filter_modes or {})
        settings = []
        seen: set[str] = set()
        for f in filters:
            fname = getattr(f, "name", None)
            if not isinstance(fname, str) or not fname:
                raise fail("filters", where, "filters with a non-empty string name", f)
            if fname in seen:
                raise fail(
                    "filters",
                    where,
                    "filters with distinct names (pass name=... to tell two apart)",
                    f"two filters named {fname!r}",
                    describe=False,
                )
            seen.add(fname)
            fmode = check_choice(
                overrides.pop(fname, getattr(f, "mode", "enforce")), "filter_modes", where, MODES
            )
            failure = check_choice(
                getattr(f, "failure", "fail_closed"), "failure", f"filter {fname!r}", FAILURE_MODES
            )
            surfaces = getattr(f, "surfaces", None)
            if surfaces is not None:
                surfaces = tuple(surfaces)
            protected = bool(getattr(f, "protected", False))
            if protected and failure != "fail_closed":
                raise fail(
                    "failure", f"filter {fname!r}", "'fail_closed' for a protected filter", failure
                )
            settings.append(FilterSettings(fname, fmode, failure, surfaces, protected))
        if overrides:
            raise fail(
                "filter_modes",
                where,
                f"a dict keyed by filter names {sorted(seen)}",
                sorted(overrides),
            )
        if holdback is not None:
            if not isinstance(holdback, Holdback):
                raise fail("holdback", where, "a Holdback or None", holdback)
            for hname in holdback.filters:
                if hname not in seen:
                    raise fail(
                        "holdback",
                        where,
                        f"a Holdback naming filters of this policy {sorted(seen)}",
                        hname,
                    )
                if next(s for s in settings if s.name == hname).protected:
                    raise fail(
                        "holdback",
                        where,
                        "a Holdback that names no protected (child-safety) filter",
                        hname,
                    )
        self.holdback = holdback
        self.settings: tuple[FilterSettings, ...] = tuple(settings)
        self._filter_modes = {
            s.name: s.mode for s in settings if s.mode != getattr(f, "mode", "enforce")
        }
        h = hashlib.sha256(b"guardrails-policy-v2")
        h.update(repr((self.mode, holdback.fingerprint() if holdback else None)).encode())
        for f, s in zip(filters, settings, strict=True):
            h.update(repr((s.name, s.mode, s.failure, s.surfaces, s.protected)).encode())
            h.update(f.fingerprint())
        self._version = h.hexdigest()[:16]
        self._compiled: dict[tuple, CompiledPolicy] = {}
        self._compiled_lock = threading.Lock()

    # ------------------------------------------------------------------ basics
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_compiled"] = {}
        del state["_compiled_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._compiled_lock = threading.Lock()

    @property
    def version(self) -> str:
        """Content hash of the settings and filters (16 hex digits)."""
        return self._version

    def __len__(self) -> int:
        return len(self.filters)

    def __iter__(self):
        return iter(self.filters)

    def __getitem__(self, name: str):
        for f in self.filters:
            if f.name == name:
                return f
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"Policy({list(self.filters)!r}, name={self.name!r}, mode={self.mode!r}, version={self.version!r})"

    def replace(self, **changes) -> Policy:
        """A copy with some of ``filters``, ``name``, ``mode``, ``filter_modes``, ``holdback`` changed."""
        kw = {
            "filters": self.filters,
            "name": self.name,
            "mode": self.mode,
            "filter_modes": {s.name: s.mode for s in self.settings},
            "holdback": self.holdback,
        }
        unknown = set(changes) - set(kw)
        if unknown:
            raise fail("changes", "Policy.replace", f"keys among {sorted(kw)}", sorted(unknown))
        if "filters" in changes and "filter_modes" not in changes:
            kw["filter_modes"] = None
        kw.update(changes)
        return Policy(kw.pop("filters"), **kw)

    def with_mode(self, mode: str) -> Policy:
        """The same filters with a policy-wide mode (``"off"`` is the kill switch)."""
        return self.replace(mode=mode)

    def effective_mode(self, i: int) -> str:
        """Mode of filter ``i`` after the policy-wide mode."""
        m = self.settings[i].mode
        if self.mode == "off" or m == "off":
            return "off"
        if self.mode == "shadow":
            return "shadow"
        return m

    # ------------------------------------------------------------------ compile
    def compiled(self, catalog: Catalog) -> CompiledPolicy:
        """The policy compiled against a catalogue, cached per catalogue and snapshot."""
        key = (catalog.kind, catalog.n, id(catalog.snapshot))
        with self._compiled_lock:
            cp = self._compiled.get(key)
            if cp is None or cp.catalog.snapshot is not catalog.snapshot:
                cp = CompiledPolicy(self, catalog)
                if len(self._compiled) > 8:
                    self._compiled.clear()
                self._compiled[key] = cp
            return cp

    def compile_global(self, catalog: Catalog) -> Plan:
        """Global parts of the enforced filters (every surface, no holdback)."""
        cp = self.compiled(catalog)
        idx = cp.active(None)[0]
        return Plan(catalog.n, tuple(p for i in idx for p in cp.global_parts[i]))

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> Plan:
        """Per-viewer parts of the enforced filters for one batch (every surface)."""
        cp = self.compiled(catalog)
        idx = cp.active(None)[0]
        parts = []
        for i in idx:
            parts.extend(cp.viewer_parts(i, viewers))
        return Plan(catalog.n, tuple(parts))


def _as_parts(out, name: str) -> tuple[PlanPart, ...]:
    if out is None:
        return ()
    if isinstance(out, PlanPart):
        return () if out.empty else (out,)
    if isinstance(out, (list, tuple)):
        parts = []
        for p in out:
            if not isinstance(p, PlanPart):
                raise ValidationError(
                    f"Filter {name!r} compiled a {type(p).__name__}; a compile step must return a "
                    "PlanPart, a sequence of PlanParts or None."
                )
            if not p.empty:
                parts.append(p)
        return tuple(parts)
    raise ValidationError(
        f"Filter {name!r} compiled a {type(out).__name__}; a compile step must return a PlanPart, "
        "a sequence of PlanParts or None."
    )


def _checked(
    part: PlanPart, catalog: Catalog, n_viewers: int | None, restore: np.ndarray | None = None
) -> PlanPart:
    """Reject a part whose arrays do not fit the catalogue: never apply a misaligned mask.

    Negative per-viewer penalties are accepted only where they give back at most the
    filter's own global penalty (``restore``), so a filter's net effect is never a boost.
    """
    n = catalog.n
    for attr in ("hard_mask", "penalty"):
        a = getattr(part, attr)
        if a is not None and (not isinstance(a, np.ndarray) or a.shape != (n,)):
            raise ValidationError(
                f"Filter {part.name!r} compiled a {attr} of shape {getattr(a, 'shape', None)} for a "
                f"{catalog.kind} catalogue of {n}; it must have shape ({n},)."
            )
    if part.hard_mask is not None and part.hard_mask.dtype != bool:
        raise ValidationError(
            f"Filter {part.name!r} compiled a hard_mask of dtype {part.hard_mask.dtype}; it must be bool."
        )
    for attr in ("viewer_mask", "viewer_penalty"):
        a = getattr(part, attr)
        if a is not None and (not sp.issparse(a) or n_viewers is None or a.shape != (n_viewers, n)):
            raise ValidationError(
                f"Filter {part.name!r} compiled a {attr} of shape {getattr(a, 'shape', None)}; it must be "
                f"a CSR matrix of shape ({n_viewers}, {n})."
            )
    vp = part.viewer_penalty
    if vp is not None and vp.nnz and np.isfinite(vp.data).all() and vp.data.min() < 0:
        vp = sp.csr_matrix(vp)
        neg = vp.data < 0
        cols = vp.indices[neg]
        if restore is None or (-vp.data[neg] > restore[cols] * (1 + 1e-6) + 1e-7).any():
            raise ValidationError(
                f"Filter {part.name!r} compiled a viewer_penalty with negative values beyond its own "
                "global penalty; penalties must be non-negative (a demotion never boosts)."
            )
        vp = None
    for attr, vals in (
        ("penalty", part.penalty),
        ("viewer_penalty", None if vp is None else vp.data),
    ):
        if vals is not None and vals.size and (not np.isfinite(vals).all() or vals.min() < 0):
            raise ValidationError(
                f"Filter {part.name!r} compiled a {attr} with negative or non-finite values; penalties "
                "must be finite and non-negative (a demotion never boosts)."
            )
    return part


def _check_table(t, catalog: Catalog, name: str) -> CohortTable | None:
    if t is None:
        return None
    if not isinstance(t, CohortTable):
        raise ValidationError(
            f"Filter {name!r} compiled cohorts of type {type(t).__name__}; expected a CohortTable."
        )
    g = t.n_cohorts
    for attr in ("hard_masks", "penalties"):
        a = getattr(t, attr)
        if a is not None and (a.ndim != 2 or a.shape != (g, catalog.n)):
            raise ValidationError(
                f"Filter {name!r} compiled cohort {attr} of shape {a.shape}; it must have shape ({g}, {catalog.n})."
            )
    if t.hard_masks is not None and t.hard_masks.dtype != bool:
        raise ValidationError(
            f"Filter {name!r} compiled cohort hard_masks of dtype {t.hard_masks.dtype}; it must be bool."
        )
    if t.penalties is not None and (not np.isfinite(t.penalties).all() or (t.penalties < 0).any()):
        raise ValidationError(f"Filter {name!r} compiled negative or non-finite cohort penalties.")
    return t


def _check_caps(c, catalog: Catalog, name: str) -> CapSpec | None:
    if c is None:
        return None
    if not isinstance(c, CapSpec) or c.groups.shape != (catalog.n,):
        raise ValidationError(
            f"Filter {name!r} compiled caps that are not a CapSpec with groups of shape ({catalog.n},)."
        )
    return c


# ============================================================================ decisions
@dataclass(frozen=True)
class Decision:
    """Why one candidate was removed from, or demoted in, one viewer's slate.

    Attributes
    ----------
    viewer : int or None
        The viewer's user index (``None`` for calls without a viewer); for
        ``similar_items`` without a viewer, the query item is in ``query``.
    row : int
        Row of the batch.
    item : int
        The candidate's index.
    filter : str
        The deciding filter (the first, in policy order, with the strictest action).
    action : {"drop", "demote", "cap", "requery"}
        ``"requery"``: the viewer's query left out interactions (circuit breaker), which
        changed the ranking of items that were not themselves acted on.
    reason : str
    mode : {"enforce", "shadow", "holdback"}
        ``"shadow"`` and ``"holdback"`` decisions describe what enforcement would have
        done; the served slate did not change.
    in_slate : bool
        ``True`` for a demoted candidate that still made the slate.
    policy_version, snapshot_version : str
    surface : str or None
    """

    viewer: int | None
    row: int
    item: int
    filter: str
    action: str
    reason: str
    mode: str
    in_slate: bool
    policy_version: str
    snapshot_version: str | None
    surface: str | None


class DecisionCounters:
    """Aggregated, always-on counters of what a Guard's policy did (thread-safe).

    Counter names are ``"<filter>/<what>"`` and a few totals: ``calls``, ``rows``,
    ``padded`` (slate slots left empty for lack of eligible items). Per filter:
    ``viewers`` (viewers in one of its cohorts), ``viewer_cells`` (per-viewer masked or
    demoted cells), ``capped`` (items skipped by a share cap), ``stripped`` (query
    interactions left out), ``skipped_fail_open`` (compiles skipped), and for shadow and
    holdback filters ``would_remove`` (items that enforcement would have removed).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._c: dict[str, int] = {}

    def __getstate__(self) -> dict:
        return {"_c": self.snapshot()}

    def __setstate__(self, state: dict) -> None:
        self._c = dict(state["_c"])
        self._lock = threading.Lock()

    def add(self, counts: dict[str, int]) -> None:
        with self._lock:
            for k, v in counts.items():
                if v:
                    self._c[k] = self._c.get(k, 0) + int(v)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._c.items()))

    def reset(self) -> None:
        with self._lock:
            self._c.clear()

    def __repr__(self) -> str:
        return f"DecisionCounters({self.snapshot()!r})"


@dataclass(frozen=True)
class FilterVerdict:
    """What one filter does to one (viewer, candidate) pair."""

    filter: str
    mode: str
    action: str
    reason: str | None
    penalty: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    """Why a candidate is (or would be) suppressed for a viewer.

    Attributes
    ----------
    viewer, item : int
    action : {"allow", "demote", "drop"}
        What the served slate does (enforced filters only; ``"allow"`` does not promise
        the item makes the top N).
    would_action : {"allow", "demote", "drop"}
        What full enforcement would do (shadow and held-back filters included).
    deciding_filter, reason : str or None
        The first enforced filter with the strictest action, and its reason code.
    verdicts : tuple of FilterVerdict
        One per filter, in policy order (``"allow"`` where the filter does nothing).
    capped_by : tuple of str
        Share caps that count this candidate (whether it is capped depends on the slate).
    policy_version, snapshot_version, surface
    """

    viewer: int | None
    item: int
    action: str
    would_action: str
    deciding_filter: str | None
    reason: str | None
    verdicts: tuple[FilterVerdict, ...]
    capped_by: tuple[str, ...]
    policy_version: str
    snapshot_version: str | None
    surface: str | None

    def __str__(self) -> str:
        lines = [
            f"item {self.item} for viewer {self.viewer} on surface {self.surface!r}: {self.action}"
            + (f" by {self.deciding_filter} ({self.reason})" if self.deciding_filter else "")
            + (
                f"; full enforcement would {self.would_action}"
                if self.would_action != self.action
                else ""
            )
        ]
        for v in self.verdicts:
            if v.action != "allow" or v.note:
                pen = f" penalty={v.penalty:.4g}" if v.action == "demote" else ""
                lines.append(
                    f"  - {v.filter} [{v.mode}]: {v.action} ({v.reason}){pen} {v.note}".rstrip()
                )
        if self.capped_by:
            lines.append(f"  - counted by share caps: {', '.join(self.capped_by)}")
        lines.append(f"  policy {self.policy_version}, snapshot {self.snapshot_version}")
        return "\n".join(lines)


_RANK = {"allow": 0, "demote": 1, "cap": 1, "drop": 2}


# ============================================================================ compiled
@dataclass(eq=False)
class Variant:
    """One candidate space: the global plan of a set of filters plus cohort rows."""

    key: tuple
    hard_mask: np.ndarray | None
    penalty: np.ndarray | None
    spaces: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def space(self, kind: str, build: Callable[[np.ndarray | None, np.ndarray | None], Any]):
        """The candidate space of ``kind``, built once with ``build(hard_mask, penalty)``."""
        s = self.spaces.get(kind)
        if s is None:
            with self.lock:
                s = self.spaces.get(kind)
                if s is None:
                    s = build(self.hard_mask, self.penalty)
                    self.spaces[kind] = s
        return s


#: topk(variant, rows, viewer_masks, viewer_penalties, strip, n) -> (ids, scores)
TopK = Callable[[Variant, np.ndarray | None, list, list, Any, int], tuple[np.ndarray, np.ndarray]]


@dataclass(eq=False)
class _CallCache:
    """Per-call compiled viewer state, shared by the served, shadow and audit slates."""

    viewers: ViewerBatch
    parts: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    strips: dict = field(default_factory=dict)
    held: np.ndarray | None = None


@dataclass(eq=False)
class _Slate:
    ids: np.ndarray
    scores: np.ndarray
    on: np.ndarray  # bool (m, n_filters): filter active for the row
    capped: list  # (row, item, filter index)

    def acts(self, r: int) -> tuple[int, ...]:
        return tuple(np.flatnonzero(self.on[r]).tolist())


class CompiledPolicy:
    """A policy compiled against one catalogue and snapshot; owns the variant cache.

    Global parts, cohort tables and caps are compiled eagerly, so a fail-closed filter
    fails when the policy or snapshot is swapped in, not on a live call.
    """

    _MAX_VARIANTS = 256

    def __init__(self, policy: Policy, catalog: Catalog):
        self.policy = policy
        self.catalog = catalog
        self.skipped: list[str | None] = []
        self.global_parts: list[tuple[PlanPart, ...]] = []
        self.tables: list[CohortTable | None] = []
        self.caps: list[CapSpec | None] = []
        for i, f in enumerate(policy.filters):
            st = policy.settings[i]
            if policy.effective_mode(i) == "off":
                self.global_parts.append(())
                self.tables.append(None)
                self.caps.append(None)
                self.skipped.append(None)
                continue
            try:
                parts = tuple(
                    _checked(p, catalog, None)
                    for p in _as_parts(f.compile_global(catalog), st.name)
                )
                for p in parts:
                    if p.viewer_mask is not None or p.viewer_penalty is not None:
                        raise ValidationError(
                            f"Filter {st.name!r} compiled per-viewer arrays in compile_global."
                        )
                ct = getattr(f, "compile_cohorts", None)
                table = _check_table(ct(catalog), catalog, st.name) if ct is not None else None
                cc = getattr(f, "compile_caps", None)
                caps = _check_caps(cc(catalog), catalog, st.name) if cc is not None else None
                skipped = None
            except Exception as exc:  # noqa: BLE001 - routed by the filter's failure mode
                parts, table, caps = (), None, None
                skipped = self._failure(st, exc)
            self.global_parts.append(parts)
            self.tables.append(table)
            self.caps.append(caps)
            self.skipped.append(skipped)
        self._variants: dict[tuple, Variant] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _failure(st: FilterSettings, exc: Exception) -> str:
        if st.failure == "fail_open" and not st.protected:
            from .filters.safety import warn_skipped

            warn_skipped(st.name, exc)
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (FailClosedError, ValidationError)):
            raise exc
        raise FailClosedError(
            f"Filter {st.name!r} failed to compile ({type(exc).__name__}: {exc}) and fails closed; "
            "refusing to serve without it."
        ) from exc

    # ------------------------------------------------------------------ structure
    def active(self, surface: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Indices of the enforced and of the shadow filters that apply on ``surface``."""
        enf, sh = [], []
        for i, st in enumerate(self.policy.settings):
            if self.skipped[i] is not None or not st.applies(surface):
                continue
            m = self.policy.effective_mode(i)
            if m == "enforce":
                enf.append(i)
            elif m == "shadow":
                sh.append(i)
        return tuple(enf), tuple(sh)

    def variant(
        self,
        filters: tuple[int, ...],
        cohorts: tuple[tuple[int, int], ...] = (),
        split: tuple[int, bool] | None = None,
    ) -> Variant:
        """The candidate space of the global parts of ``filters`` plus cohort rows.

        ``split=(i, inside)`` further keeps only the candidates inside (or outside) the
        single group of share cap ``i``.
        """
        key = (tuple(i for i in filters if self.global_parts[i]), cohorts, split)
        v = self._variants.get(key)
        if v is not None:
            return v
        with self._lock:
            v = self._variants.get(key)
            if v is None:
                n = self.catalog.n
                hard = None
                pen = None
                for i in key[0]:
                    for p in self.global_parts[i]:
                        if p.hard_mask is not None:
                            hard = p.hard_mask.copy() if hard is None else (hard | p.hard_mask)
                        if p.penalty is not None:
                            pen = p.penalty.astype(np.float64) if pen is None else pen + p.penalty
                for i, g in cohorts:
                    t = self.tables[i]
                    if t.hard_masks is not None:
                        hard = t.hard_masks[g].copy() if hard is None else (hard | t.hard_masks[g])
                    if t.penalties is not None:
                        pen = (
                            t.penalties[g].astype(np.float64)
                            if pen is None
                            else pen + t.penalties[g]
                        )
                if split is not None:
                    ci, inside = split
                    out = (self.caps[ci].groups < 0) if inside else (self.caps[ci].groups >= 0)
                    hard = out.copy() if hard is None else (hard | out)
                if hard is None and n == 0:
                    hard = np.zeros(0, dtype=bool)
                v = Variant(key, hard, None if pen is None else pen.astype(np.float32))
                if len(self._variants) >= self._MAX_VARIANTS:
                    self._variants.clear()
                self._variants[key] = v
        return v

    def viewer_parts(self, i: int, viewers: ViewerBatch) -> tuple[PlanPart, ...]:
        f = self.policy.filters[i]
        st = self.policy.settings[i]
        restore = None
        pens = [p.penalty for p in self.global_parts[i] if p.penalty is not None]
        if pens:
            restore = np.sum(pens, axis=0) if len(pens) > 1 else pens[0]
        try:
            return tuple(
                _checked(p, self.catalog, viewers.size, restore)
                for p in _as_parts(f.compile_viewers(self.catalog, viewers), st.name)
            )
        except Exception as exc:  # noqa: BLE001
            self._failure(st, exc)
            return ()

    def _cached_parts(self, cache: _CallCache, i: int) -> tuple[PlanPart, ...]:
        if i not in cache.parts:
            cache.parts[i] = self.viewer_parts(i, cache.viewers)
        return cache.parts[i]

    def _cached_groups(self, cache: _CallCache, i: int) -> np.ndarray | None:
        if self.tables[i] is None:
            return None
        if i not in cache.groups:
            f = self.policy.filters[i]
            try:
                g = np.asarray(f.assign_cohorts(self.catalog, cache.viewers), dtype=np.int64)
                if g.shape != (cache.viewers.size,) or (
                    g.size and (g.min() < -1 or g.max() >= self.tables[i].n_cohorts)
                ):
                    raise ValidationError(
                        f"Filter {self.policy.settings[i].name!r} assigned cohorts of shape {g.shape} or out of "
                        f"range; expected ints in [-1, {self.tables[i].n_cohorts}) of shape ({cache.viewers.size},)."
                    )
            except Exception as exc:  # noqa: BLE001
                self._failure(self.policy.settings[i], exc)
                g = np.full(cache.viewers.size, -1, dtype=np.int64)
            cache.groups[i] = g
        return cache.groups[i]

    def _cached_strip(self, cache: _CallCache, i: int):
        if i not in cache.strips:
            f = self.policy.filters[i]
            cq = getattr(f, "compile_queries", None)
            s = None
            if cq is not None and cache.viewers.user_items is not None:
                try:
                    s = cq(self.catalog, cache.viewers)
                except Exception as exc:  # noqa: BLE001
                    self._failure(self.policy.settings[i], exc)
                    s = None
                if s is not None:
                    if not sp.issparse(s) or s.shape != cache.viewers.user_items.shape:
                        raise ValidationError(
                            f"Filter {self.policy.settings[i].name!r} compiled query cells of the wrong shape."
                        )
                    s = sp.csr_matrix(s)
                    if not s.nnz:
                        s = None
            cache.strips[i] = s
        return cache.strips[i]

    # ------------------------------------------------------------------ execution
    def run(
        self,
        viewers: ViewerBatch,
        topk: TopK,
        N: int,
        limit: int,
        *,
        record: bool = False,
        counters: DecisionCounters | None = None,
        snapshot_version: str | None = None,
        query_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[Decision, ...], dict]:
        """Serve one batch: group viewers, run the kernel per variant, apply caps.

        Parameters
        ----------
        viewers : ViewerBatch
        topk : callable
            ``topk(variant, rows, viewer_masks, viewer_penalties, strip, n)`` runs the
            kernel for the batch rows ``rows`` (``None``: all) with ``n`` columns.
        N : int
            Slate length (columns of the result).
        limit : int
            Most columns ``topk`` can return (the number of candidates).
        record : bool
            Also compute the unguarded slate and return per-item decisions.

        Returns
        -------
        ids, scores : ndarrays, shape (m, N)
        decisions : tuple of Decision
        info : dict
            Per-call counts (the same that go to ``counters``).
        """
        cache = _CallCache(viewers)
        surface = viewers.surface
        enf, sh = self.active(surface)
        hb = self.policy.holdback
        held_names = set(hb.filters) if hb is not None else set()
        if hb is not None and any(self.policy.settings[i].name in held_names for i in enf):
            cache.held = hb.held(viewers.userids, viewers.size)
        served = self._slate(cache, enf, topk, N, limit, honour_holdback=True)
        counts: dict[str, int] = {
            "calls": 1,
            "rows": viewers.size,
            "padded": int((served.ids < 0).sum()),
        }
        self._count(cache, enf + sh, served, counts)
        decisions: list[Decision] = []
        pv = self.policy.version
        would_mode = "shadow" if sh else "holdback"
        if sh or (cache.held is not None and cache.held.any()):
            full = self._slate(cache, enf + sh, topk, N, limit, honour_holdback=False)
            rr, ii = _missing(full.ids, served.ids)
            bf, ba = self._attribute_many(cache, full, rr, ii)
            hits = self._cap_hits(full, rr, ii)
            capped_set = {(r, it): fi for r, it, fi in full.capped}
            capped_set.update(
                {(int(r), int(it)): int(h) for r, it, h in zip(rr, ii, hits, strict=True) if h >= 0}
            )
            for i, strip in cache.strips.items():
                if strip is not None:
                    for r in np.flatnonzero(np.diff(strip.indptr) > 0).tolist():
                        for it in ii[rr == r].tolist():
                            capped_set.setdefault((r, it), i)
            for j in range(rr.size):
                fi = int(bf[j]) if ba[j] > 0 else capped_set.get((int(rr[j]), int(ii[j])), -1)
                if fi >= 0:
                    key = f"{self.policy.settings[fi].name}/would_remove"
                    counts[key] = counts.get(key, 0) + 1
            if record:
                decisions.extend(
                    self._decisions(
                        cache,
                        served.ids,
                        full,
                        pv,
                        snapshot_version,
                        surface,
                        mode=would_mode,
                        query_ids=query_ids,
                    )
                )
        if record:
            base = self._slate(cache, (), topk, N, limit, honour_holdback=False)
            decisions.extend(
                self._decisions(
                    cache,
                    base.ids,
                    served,
                    pv,
                    snapshot_version,
                    surface,
                    mode="enforce",
                    query_ids=query_ids,
                )
            )
        if counters is not None:
            counters.add(counts)
        return served.ids, served.scores, tuple(decisions), counts

    def _slate(
        self,
        cache: _CallCache,
        active: tuple[int, ...],
        topk: TopK,
        N: int,
        limit: int,
        *,
        honour_holdback: bool,
    ) -> _Slate:
        m = cache.viewers.size
        held = cache.held if honour_holdback else None
        names = [s.name for s in self.policy.settings]
        hb_set = set(self.policy.holdback.filters) if self.policy.holdback is not None else set()
        with_tables = [i for i in active if self.tables[i] is not None]
        cols = []
        if held is not None:
            cols.append(held.astype(np.int64))
        for i in with_tables:
            cols.append(self._cached_groups(cache, i))
        if cols and m > 1:
            keys = np.stack(cols, axis=1)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            inv = inv.ravel()
            groups = [(np.flatnonzero(inv == k), uniq[k]) for k in range(uniq.shape[0])]
            if len(groups) == 1:
                groups = [(None, uniq[0])]
        else:
            groups = [
                (
                    None,
                    np.array([c[0] for c in cols], dtype=np.int64)
                    if cols and m
                    else np.zeros(len(cols), dtype=np.int64),
                )
            ]
        ids = np.full((m, N), -1, dtype=np.int64)
        scores = None
        on = np.zeros((m, len(self.policy.filters)), dtype=bool)
        capped: list = []
        for rows, key in groups:
            off = 0
            is_held = False
            if held is not None:
                is_held = bool(key[0]) if m else False
                off = 1
            act = tuple(i for i in active if not (is_held and names[i] in hb_set))
            cohort = []
            for j, i in enumerate(with_tables):
                g = int(key[off + j]) if m else -1
                if g >= 0 and i in act:
                    cohort.append((i, g))
            variant = self.variant(act, tuple(cohort))
            masks, pens = [], []
            strip = None
            for i in act:
                for p in self._cached_parts(cache, i):
                    if p.viewer_mask is not None:
                        masks.append(p.viewer_mask if rows is None else p.viewer_mask[rows])
                    if p.viewer_penalty is not None:
                        pens.append(p.viewer_penalty if rows is None else p.viewer_penalty[rows])
                s = self._cached_strip(cache, i)
                if s is not None:
                    s = s if rows is None else s[rows]
                    strip = s if strip is None else strip + s
            caps = [(i, self.caps[i]) for i in act if self.caps[i] is not None]
            if caps:
                gi, gs, gc = self._capped_topk(
                    topk, act, tuple(cohort), variant, rows, masks, pens, strip, N, limit, caps
                )
            else:
                gi, gs = topk(variant, rows, masks, pens, strip, min(N, limit))
                gc = []
            if scores is None:
                scores = np.full((m, N), -np.inf, dtype=gs.dtype)
            w = gi.shape[1]
            if rows is None:
                ids[:, :w] = gi
                scores[:, :w] = gs
                on[:, list(act)] = True
                capped.extend(gc)
            else:
                ids[rows, :w] = gi
                scores[rows, :w] = gs
                if act:
                    on[np.ix_(rows, list(act))] = True
                capped.extend((int(rows[r]), it, fi) for r, it, fi in gc)
        if scores is None:
            scores = np.full((m, N), -np.inf, dtype=np.float32)
        return _Slate(ids, scores, on, capped)

    def _capped_topk(self, topk, act, cohort, variant, rows, masks, pens, strip, N, limit, caps):
        """Top-N under share caps.

        One cap with a single group (a risky share): exact and without re-fetching, by
        merging the top ``N`` outside the group with the top ``allowance`` inside it
        (scores are exact and independent of the batch, so the merge equals greedy
        selection over the full ranking). Otherwise: over-fetch, greedy selection,
        re-fetch of the rows left short.
        """
        if len(caps) == 1 and int(caps[0][1].groups.max(initial=-1)) == 0:
            ci, cap = caps[0]
            allow = min(cap.allowance(N), N)
            out_v = self.variant(act, cohort, (ci, False))
            ids, scores = topk(out_v, rows, masks, pens, strip, min(N, limit))
            if allow > 0:
                in_v = self.variant(act, cohort, (ci, True))
                ids_in, sc_in = topk(in_v, rows, masks, pens, strip, min(allow, limit))
                ids, scores = _merge_slates(ids, scores, ids_in, sc_in, N)
            return ids, scores, []
        return _capped_topk(topk, variant, rows, masks, pens, strip, N, limit, caps)

    def _count(self, cache: _CallCache, idx: tuple[int, ...], served: _Slate, counts: dict) -> None:
        names = [s.name for s in self.policy.settings]
        for i in idx:
            g = cache.groups.get(i)
            if g is not None:
                counts[f"{names[i]}/viewers"] = int((g >= 0).sum())
            for p in cache.parts.get(i, ()):
                for a in (p.viewer_mask, p.viewer_penalty):
                    if a is not None:
                        counts[f"{names[i]}/viewer_cells"] = counts.get(
                            f"{names[i]}/viewer_cells", 0
                        ) + int(a.nnz)
            s = cache.strips.get(i)
            if s is not None:
                counts[f"{names[i]}/stripped"] = int(s.nnz)
        for _, _, fi in served.capped:
            k = f"{names[fi]}/capped"
            counts[k] = counts.get(k, 0) + 1
        N = served.ids.shape[1]
        if N:
            valid = served.ids >= 0
            safe = np.where(valid, served.ids, 0)
            for i in idx:
                cap = self.caps[i]
                if cap is None:
                    continue
                G = np.where(valid, cap.groups[safe], -1)
                allow = cap.allowance(N)
                if cap.groups.max(initial=-1) == 0:
                    binding = (G == 0).sum(axis=1) >= allow
                else:
                    k = int(cap.groups.max(initial=-1)) + 1
                    rr = np.repeat(np.arange(G.shape[0]), N)
                    gg = G.ravel()
                    ok = gg >= 0
                    cnt = np.zeros((G.shape[0], max(k, 1)), dtype=np.int64)
                    np.add.at(cnt, (rr[ok], gg[ok]), 1)
                    binding = (cnt >= allow).any(axis=1)
                on = served.on[:, i]
                counts[f"{names[i]}/capped_rows"] = int((binding & on).sum())
        for i, sk in enumerate(self.skipped):
            if sk is not None:
                counts[f"{names[i]}/skipped_fail_open"] = 1

    # ------------------------------------------------------------------ attribution
    def pair_actions(
        self, cache: _CallCache, i: int, rows: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Action codes (0 allow, 1 demote, 2 drop) and penalties of filter ``i`` on pairs."""
        k = rows.size
        act = np.zeros(k, dtype=np.int8)
        pen = np.zeros(k, dtype=np.float64)
        if k == 0:
            return act, pen
        for p in self.global_parts[i]:
            if p.hard_mask is not None:
                act[p.hard_mask[items]] = 2
            if p.penalty is not None:
                pen += p.penalty[items]
        g = self._cached_groups(cache, i)
        if g is not None:
            t = self.tables[i]
            gr = g[rows]
            has = gr >= 0
            if t.hard_masks is not None and has.any():
                hit = np.zeros(k, dtype=bool)
                hit[has] = t.hard_masks[gr[has], items[has]]
                act[hit] = 2
            if t.penalties is not None and has.any():
                pen[has] += t.penalties[gr[has], items[has]]
        for p in self._cached_parts(cache, i):
            if p.viewer_mask is not None:
                hit = np.asarray(p.viewer_mask[rows, items]).ravel() != 0
                act[hit] = 2
            if p.viewer_penalty is not None:
                pen += np.asarray(p.viewer_penalty[rows, items]).ravel()
        act[(act < 1) & (pen > 0)] = 1
        return act, pen

    def _cap_hits(self, slate: _Slate, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """For each (row, item): the first active share cap whose group of the item is full
        in that row's slate (the reason the item is missing), else ``-1``."""
        out = np.full(rows.size, -1, dtype=np.int64)
        if rows.size == 0:
            return out
        N = slate.ids.shape[1]
        valid = slate.ids >= 0
        safe = np.where(valid, slate.ids, 0)
        for i, cap in enumerate(self.caps):
            if cap is None:
                continue
            on = slate.on[rows, i]
            g = cap.groups[items]
            cand = on & (g >= 0) & (out < 0)
            if not cand.any():
                continue
            G = np.where(valid, cap.groups[safe], -1)
            full = (G[rows[cand]] == g[cand][:, None]).sum(axis=1) >= cap.allowance(N)
            idx = np.flatnonzero(cand)[full]
            out[idx] = i
        return out

    def _attribute_many(
        self, cache, slate: _Slate, rows: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Deciding filter and strictest action code of every (row, item) pair.

        The strictest action wins; among filters with the same action, the first in
        policy order decides. Filters not active for a row (surface, holdback) are ignored.
        """
        nf = len(self.policy.filters)
        on = slate.on
        best_act = np.zeros(rows.size, dtype=np.int8)
        best_f = np.full(rows.size, -1, dtype=np.int64)
        if rows.size == 0:
            return best_f, best_act
        for i in range(nf):
            if not on[:, i].any():
                continue
            a, _ = self.pair_actions(cache, i, rows, items)
            a = np.where(on[rows, i], a, 0)
            better = a > best_act
            best_f[better] = i
            best_act[better] = a[better]
        return best_f, best_act

    def _decisions(
        self, cache, before: np.ndarray, after: _Slate, pv, sv, surface, *, mode: str, query_ids
    ) -> list[Decision]:
        """Decisions for every id of ``before`` missing from ``after``, and demoted ids kept."""
        out = []
        rr, ii = _missing(after.ids, before)
        # Demoted items that stayed in the slate.
        kr, kc = np.nonzero(after.ids >= 0)
        kept_items = after.ids[kr, kc]
        capped_set = {(r, it): fi for r, it, fi in after.capped}
        uid = cache.viewers.userids
        requeried: dict[int, int] = {}
        for i, strip in sorted(cache.strips.items(), reverse=True):
            if strip is not None:
                for r in np.flatnonzero(np.diff(strip.indptr) > 0).tolist():
                    if after.on[r, i]:
                        requeried[r] = i

        def viewer_of(r: int):
            return None if uid is None else int(uid[r])

        names = [s.name for s in self.policy.settings]
        hb_set = set(self.policy.holdback.filters) if self.policy.holdback is not None else set()
        enforced = set(self.active(surface)[0])

        def dmode(i: int, r: int) -> str:
            if mode == "enforce":
                return "enforce"
            if i not in enforced:
                return "shadow"
            return (
                "holdback"
                if (names[i] in hb_set and cache.held is not None and cache.held[r])
                else "enforce"
            )

        for in_slate, rows_, items_ in ((False, rr, ii), (True, kr, kept_items)):
            if rows_.size == 0:
                continue
            best_f, best_act = self._attribute_many(cache, after, rows_, items_)
            hits = self._cap_hits(after, rows_, items_) if not in_slate else np.full(rows_.size, -1)
            for j in range(rows_.size):
                r, it = int(rows_[j]), int(items_[j])
                if in_slate:
                    if best_act[j] != 1:
                        continue
                    fi, action = int(best_f[j]), "demote"
                elif best_act[j] == 2:
                    fi, action = int(best_f[j]), "drop"
                elif hits[j] >= 0:
                    fi, action = int(hits[j]), "cap"
                elif (r, it) in capped_set:
                    fi, action = capped_set[(r, it)], "cap"
                elif best_act[j] == 1:
                    fi, action = int(best_f[j]), "demote"
                elif r in requeried:
                    fi, action = requeried[r], "requery"
                else:
                    # Penalties never boost and caps only skip, so an item that is neither
                    # dropped, demoted, capped nor re-queried cannot be pushed out; record
                    # it anyway so that nothing ever goes missing silently.
                    fi, action = -1, "displaced"
                if fi >= 0:
                    reason = self._reason(fi, cache, r, it, action)
                    fname = names[fi]
                    md = dmode(fi, r)
                else:
                    reason, fname, md = "displaced", "(none)", mode
                out.append(
                    Decision(
                        viewer_of(r), r, it, fname, action, reason, md, in_slate, pv, sv, surface
                    )
                )
        return out

    def _reason(self, i: int, cache, r: int, item: int, action: str) -> str:
        if action == "cap":
            return self.caps[i].reason
        if action == "requery":
            return f"{getattr(self.policy.filters[i], 'reason', 'filtered')}:interests_stripped"
        rows = np.array([r], dtype=np.int64)
        items = np.array([item], dtype=np.int64)
        want = 2 if action == "drop" else 1
        for p in self.global_parts[i]:
            if want == 2 and p.hard_mask is not None and p.hard_mask[item]:
                return p.reason
            if want == 1 and p.penalty is not None and p.penalty[item] > 0:
                return p.reason
        t = self.tables[i]
        if t is not None:
            return t.reason
        for p in self._cached_parts(cache, i):
            a = p.viewer_mask if want == 2 else p.viewer_penalty
            if a is not None and np.asarray(a[rows, items]).ravel()[0] != 0:
                return p.reason
        return getattr(self.policy.filters[i], "reason", "filtered")

    # ------------------------------------------------------------------ explain
    def explain(
        self, viewers: ViewerBatch, item: int, *, snapshot_version: str | None = None
    ) -> Explanation:
        """Why ``item`` is or would be suppressed for the single viewer of ``viewers``."""
        cache = _CallCache(viewers)
        surface = viewers.surface
        enf, sh = self.active(surface)
        hb = self.policy.holdback
        held = bool(hb.held(viewers.userids, 1)[0]) if hb is not None else False
        rows = np.zeros(1, dtype=np.int64)
        items = np.array([item], dtype=np.int64)
        verdicts = []
        served_best, served_f, served_reason = 0, None, None
        would_best = 0
        capped_by = []
        for i, st in enumerate(self.policy.settings):
            mode = self.policy.effective_mode(i)
            note = ""
            if self.skipped[i] is not None:
                verdicts.append(
                    FilterVerdict(
                        st.name, mode, "allow", None, 0.0, f"skipped (fail_open): {self.skipped[i]}"
                    )
                )
                continue
            if mode == "off":
                verdicts.append(FilterVerdict(st.name, "off", "allow", None, 0.0, "off"))
                continue
            if not st.applies(surface):
                verdicts.append(
                    FilterVerdict(st.name, mode, "allow", None, 0.0, f"not on surface {surface!r}")
                )
                continue
            a, pen = self.pair_actions(cache, i, rows, items)
            code = int(a[0])
            action = ("allow", "demote", "drop")[code]
            reason = self._reason(i, cache, 0, item, action) if code else None
            is_held = held and hb is not None and st.name in hb.filters
            if is_held:
                note = "viewer held back"
            if self.caps[i] is not None and self.caps[i].groups[item] >= 0:
                capped_by.append(st.name)
            verdicts.append(
                FilterVerdict(
                    st.name, "holdback" if is_held else mode, action, reason, float(pen[0]), note
                )
            )
            would_best = max(would_best, code)
            if i in enf and not is_held and code > served_best:
                served_best, served_f, served_reason = code, st.name, reason
        names = ("allow", "demote", "drop")
        return Explanation(
            None if viewers.userids is None else int(viewers.userids[0]),
            int(item),
            names[served_best],
            names[would_best],
            served_f,
            served_reason,
            tuple(verdicts),
            tuple(capped_by),
            self.policy.version,
            snapshot_version,
            surface,
        )


def _missing(after: np.ndarray, before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and id of every valid id of ``before`` that is not in the same row of ``after``."""
    m = before.shape[0]
    if m == 0 or before.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    big = np.int64(max(int(before.max(initial=0)), int(after.max(initial=0))) + 2)
    rb = np.repeat(np.arange(m, dtype=np.int64), before.shape[1])
    kb = rb * big + (before.ravel() + 1)
    ra = np.repeat(np.arange(m, dtype=np.int64), after.shape[1])
    ka = ra * big + (after.ravel() + 1)
    miss = (before.ravel() >= 0) & ~np.isin(kb, ka)
    return rb[miss], before.ravel()[miss]


def _merge_slates(a_ids, a_sc, b_ids, b_sc, N: int):
    """Row-wise merge of two best-first slates into the best ``N`` (score desc, id asc)."""
    ids = np.concatenate([a_ids, b_ids], axis=1)
    sc = np.concatenate([a_sc, b_sc], axis=1)
    valid = ids >= 0
    key_sc = np.where(valid, sc, -np.inf)
    key_id = np.where(valid, ids, np.iinfo(np.int64).max)
    order = np.lexsort((key_id, -key_sc.astype(np.float64)), axis=1)[:, :N]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_sc = np.take_along_axis(sc, order, axis=1)
    pad = np.take_along_axis(valid, order, axis=1)
    out_ids[~pad] = -1
    out_sc[~pad] = -np.inf
    if out_ids.shape[1] < N:
        w = N - out_ids.shape[1]
        out_ids = np.concatenate([out_ids, np.full((ids.shape[0], w), -1, np.int64)], axis=1)
        out_sc = np.concatenate([out_sc, np.full((ids.shape[0], w), -np.inf, sc.dtype)], axis=1)
    return out_ids, out_sc


def _capped_topk(topk: TopK, variant, rows, masks, pens, strip, N: int, limit: int, caps):
    """Top-N under share caps: over-fetch, greedy-select, re-fetch the rows left short."""
    n_rows = None
    fetch = min(limit, max(2 * N, N + 8))
    out_ids = out_scores = None
    pending = None  # local row positions still to fill
    capped: list = []
    while True:
        sub = rows if pending is None else (pending if rows is None else rows[pending])
        sm = masks if pending is None else [x[pending] for x in masks]
        spn = pens if pending is None else [x[pending] for x in pens]
        sst = strip if (pending is None or strip is None) else strip[pending]
        ids, scores = topk(variant, sub, sm, spn, sst, fetch)
        if out_ids is None:
            n_rows = ids.shape[0]
            out_ids = np.full((n_rows, N), -1, dtype=np.int64)
            out_scores = np.full((n_rows, N), -np.inf, dtype=scores.dtype)
        sel_ids, sel_scores, skipped = _greedy(ids, scores, caps, N)
        local = np.arange(ids.shape[0]) if pending is None else pending
        out_ids[local] = sel_ids
        out_scores[local] = sel_scores
        short = (sel_ids < 0).any(axis=1) & (ids >= 0).all(axis=1)
        if not short.any() or fetch >= limit:
            capped.extend((int(local[r]), it, fi) for r, it, fi in skipped)
            break
        # Rows that filled are final; keep their capped records.
        done = ~short
        capped.extend((int(local[r]), it, fi) for r, it, fi in skipped if done[r])
        pending = local[short]
        fetch = min(limit, fetch * 2)
    return out_ids, out_scores, capped


def _greedy(ids: np.ndarray, scores: np.ndarray, caps, N: int):
    """Best-first selection under caps; returns (ids, scores, skipped) with skipped above the last pick."""
    r, F = ids.shape
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    ok = valid.copy()
    if len(caps) == 1:
        _, cap = caps[0]
        g = np.where(valid, cap.groups[safe], -1)
        allow = cap.allowance(N)
        # Rank of every item within its (row, group), in slate order.
        key = np.arange(r, dtype=np.int64)[:, None] * (int(cap.groups.max(initial=0)) + 2) + (g + 1)
        flat = key.ravel()
        order = np.argsort(flat, kind="stable")
        sk = flat[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
        run_start = np.repeat(starts, np.diff(np.r_[starts, sk.size]))
        rank = np.empty_like(flat)
        rank[order] = np.arange(sk.size) - run_start
        rank = rank.reshape(r, F)
        over = (g >= 0) & (rank >= allow)
        ok &= ~over
        over_f = np.where(over, caps[0][0], -1)
    else:
        over_f = np.full((r, F), -1, dtype=np.int64)
        for row in range(r):
            counts = [dict() for _ in caps]
            for c in range(F):
                if not valid[row, c]:
                    continue
                it = int(ids[row, c])
                blocked = -1
                for j, (fi, cap) in enumerate(caps):
                    gg = int(cap.groups[it])
                    if gg >= 0 and counts[j].get(gg, 0) >= cap.allowance(N):
                        blocked = fi
                        break
                if blocked >= 0:
                    ok[row, c] = False
                    over_f[row, c] = blocked
                    continue
                for j, (_, cap) in enumerate(caps):
                    gg = int(cap.groups[it])
                    if gg >= 0:
                        counts[j][gg] = counts[j].get(gg, 0) + 1
    pos = np.cumsum(ok, axis=1) - 1
    take = ok & (pos < N)
    out_ids = np.full((r, N), -1, dtype=np.int64)
    out_scores = np.full((r, N), -np.inf, dtype=scores.dtype)
    rr, cc = np.nonzero(take)
    out_ids[rr, pos[rr, cc]] = ids[rr, cc]
    out_scores[rr, pos[rr, cc]] = scores[rr, cc]
    # Skipped items that ranked above the last selected item of the row (or anywhere if short).
    last = np.where(take.any(axis=1), F - 1 - np.argmax(take[:, ::-1], axis=1), -1)
    full = take.sum(axis=1) >= N
    sr, sc = np.nonzero(over_f >= 0)
    keep = ~full[sr] | (sc < last[sr])
    skipped = [
        (int(a), int(ids[a, b]), int(over_f[a, b])) for a, b in zip(sr[keep], sc[keep], strict=True)
    ]
    return out_ids, out_scores, skipped


def as_policy(policy: Policy | Iterable[FilterProtocol] | None) -> Policy:
    """Accept a Policy, a list of filters, or None (no filters)."""
    if policy is None:
        return Policy(())
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, FilterProtocol):
        return Policy((policy,))
    return Policy(tuple(policy))


# ============================================================================ defaults
#: Lift (risk over the catalogue's typical risk, its median) at or above which an account
#: is in a flagged neighbourhood and dropped: a walk from it meets flagged accounts four
#: times as often as a walk from a typical account. Risk from personalised PageRank has a
#: background level that grows with the amount of seed evidence (more seeds, more visits
#: everywhere), so a lift over the background means the same thing whatever the seeds.
DEFAULT_DROP_LIFT = 4.0
#: Lift at or above which an account is demoted (graded by its risk), not dropped: the
#: moderate band, mostly ordinary accounts near camouflage follows.
DEFAULT_DEMOTE_LIFT = 2.0
#: Lift at or below which an account is "no riskier than typical": the low-risk pool
#: (the less risky half of the catalogue) that tripped viewers and risky profiles are
#: served from.
DEFAULT_POOL_LIFT = 1.0
#: Absolute floor of the drop threshold, so a catalogue with (almost) no risk drops
#: nothing on noise.
DEFAULT_DROP_FLOOR = 0.02
#: Confidence given to an account only because it uses a flagged term (hashtag): the
#: terms have innocent uses too, so term use alone is half the evidence of a label.
DEFAULT_TERM_WEIGHT = 0.5
#: Share of a viewer's interactions on dropped accounts that trips the breaker.
DEFAULT_TRIP = 0.3
#: Term risk of an account that uses a flagged term itself (one hop on the term graph:
#: at least damping / 5 for an account with five terms, one of them flagged); accounts
#: further away are not soft seeds.
_TERM_DIRECT = 0.1
#: Largest share of the catalogue neighbourhood suppression may drop (a collateral cap).
_DROP_CAP = {"strict": 0.10, "balanced": 0.05}


def default_policy(
    *,
    n_items: int | None = None,
    seeds=None,
    graph=None,
    interactions=None,
    account_terms=None,
    seed_terms=None,
    risk=None,
    viewer_risk=None,
    minors=None,
    minor_viewers=None,
    viewer_cohorts=None,
    candidate_cohorts=None,
    cohort_matrix=None,
    cohort_labels: tuple[Sequence[str], Sequence[str]] | None = None,
    label_categories: Sequence[str] = ("csam",),
    snapshot_labels: bool = False,
    strictness: str = "strict",
    discovery_surfaces: Sequence[str] | None = None,
    name: str = "default",
) -> Policy:
    """A strong protective policy from what a platform typically has.

    Parameters
    ----------
    n_items : int, optional, keyword-only
        Catalogue size; checked against the other arrays when given.
    seeds : array-like of bool or int, optional, keyword-only
        Flagged accounts (candidate indices); always dropped.
    graph : sparse matrix, shape (n_items, n_items), optional, keyword-only
        Follow graph between candidates (accounts following accounts); risk propagates
        over it both ways (:func:`guardrails.expand.propagate`).
    interactions : sparse matrix, shape (n_users, n_items), optional, keyword-only
        The model's user-item interaction matrix: risk spreads along co-engagement
        (:func:`guardrails.expand.coengagement_risk`: accounts followed by the same
        followers as flagged accounts), and every user gets a stored risk (the share of
        their interactions on flagged neighbourhoods) for the circuit breakers.
    account_terms : sparse matrix, shape (n_items, n_terms), optional, keyword-only
        Terms (hashtags, link domains) each account uses; with ``seed_terms``.
    seed_terms : array-like of int, optional, keyword-only
        Flagged terms (columns of ``account_terms``). Accounts using them become soft
        seeds of weight :data:`DEFAULT_TERM_WEIGHT` times their term risk
        (:func:`guardrails.expand.term_risk`) for the graph and co-engagement
        propagation; this is what survives when labelled accounts are banned and come
        back under new ids. An account is never dropped for its own terms alone.
    risk : array-like of float, shape (n_items,), optional, keyword-only
        Precomputed propagated risk, instead of propagation from seeds and terms.
    viewer_risk : array-like of float, shape (n_users,), optional, keyword-only
        Precomputed stored viewer risk on the breaker's scale (share of a viewer's
        interactions on flagged neighbourhoods).
    minors : array-like of bool or int, shape (n_items,), optional, keyword-only
        Candidates that are minors' accounts (a vulnerable cohort, from the platform's
        age signals). They are never suggested to a viewer with any interaction on a
        flagged neighbourhood (call or stored), never to a tripped viewer or on a risky
        profile; they are not dropped for their own neighbourhood risk (buyers following
        them is what makes it high: they are the network's targets, not its members).
    minor_viewers : array-like of bool or int, shape (n_users,), optional, keyword-only
        Viewers who are minors: they never get candidates at or above the demotion
        floor (the flagged band), and new viewers (unknown ids) are treated the same.
    viewer_cohorts, candidate_cohorts, cohort_matrix, cohort_labels : optional
        An extra :class:`~guardrails.filters.CohortRule`.
    label_categories : sequence of str, keyword-only
        With ``snapshot_labels=True``, categories that :class:`BlockLabeled` drops,
        reading the Guard's snapshot (failing closed for child-safety categories).
    strictness : {"strict", "balanced"}, keyword-only
        The collateral cap of neighbourhood suppression (at most 10 % or 5 % of the
        catalogue dropped) and the demotion weight (0.5 or 0.25).
    discovery_surfaces : sequence of str, optional, keyword-only
        Surfaces where the share cap applies (default: all).
    name : str, keyword-only

    Returns
    -------
    Policy
        In order: labels (if asked), neighbourhood suppression, graded risk demotion of
        the band below it, the viewer circuit breaker, the minors' protection breaker
        and cohort rule (with ``minors`` / ``minor_viewers``), a risky-share cap, and
        the extra cohort rule (if given).

    Notes
    -----
    Propagated risk (personalised PageRank, :mod:`guardrails.expand`) has a background
    level that grows with the amount of seed evidence, so the thresholds are *lifts*
    over the catalogue's typical (median) risk ``b``; they mean the same on a platform
    the policy has never seen, with no tuning:

    - drop: ``risk >= max(0.02, 4 * b)`` (:data:`DEFAULT_DROP_LIFT`): a walk from the
      account meets flagged accounts four times as often as a walk from a typical one;
      raised if needed so that at most 10 % (``"balanced"``: 5 %) of the catalogue is
      dropped (a collateral cap); seeds are always dropped;
    - demote: ``2 * b <= risk < drop`` (:data:`DEFAULT_DEMOTE_LIFT`) by
      ``0.5 * sqrt(risk)`` score units: demoted, not dropped, because this band is
      mostly ordinary accounts near camouflage follows;
    - circuit breaker: a viewer with at least 30 % (:data:`DEFAULT_TRIP`) of their
      interactions (in the call, or stored from ``interactions``) on dropped candidates
      is tripped and gets only the low-risk pool (``risk <= b``, the less risky half;
      seeds and minors excluded); their risky interactions are left out of the query.
      For ``similar_items`` the Guard passes the viewed account as the viewer's context
      (``ViewerBatch.context_items``, which the breaker reads), so the profile of a
      dropped account suggests only the pool, whoever views it (a new account gives the
      breaker nothing else to read);
    - minors (``minors=``): a second breaker, ``protect_minors``, trips on a single
      interaction on a dropped candidate and then drops minors' accounts; minors'
      accounts carry no neighbourhood risk of their own (it comes from buyers following
      them), so ordinary viewers keep seeing them; ``minor_viewers=`` adds a
      ``CohortRule`` that keeps the whole band at or above ``2 * b`` away from minors
      and from viewers the policy does not know (new accounts might be minors);
    - risky share cap: at most 10 % of a slate from candidates at or above ``2 * b``.

    Raises
    ------
    ValidationError
        When there is neither risk nor seeds (or flagged terms) with a graph and/or
        interactions.
    """
    from ._validation import check_vector
    from .filters._risk import seed_mask, viewer_share
    from .filters.primitive import DemoteRisk
    from .filters.safety import (
        BlockLabeled,
        CohortRule,
        ShareCap,
        SuppressNeighborhood,
        ViewerCircuitBreaker,
    )

    where = "default_policy"
    strictness = check_choice(strictness, "strictness", where, ("strict", "balanced"))
    q_cap = _DROP_CAP[strictness]
    demote_weight = {"strict": 0.5, "balanced": 0.25}[strictness]
    has_terms = account_terms is not None and seed_terms is not None
    if (account_terms is None) != (seed_terms is None):
        raise fail(
            "seed_terms",
            where,
            "given together with account_terms",
            "only one of them",
            describe=False,
        )
    if risk is not None:
        risk = check_vector(risk, "risk", where, low=0.0, high=1.0)
    else:
        if (seeds is None and not has_terms) or (graph is None and interactions is None):
            raise fail(
                "risk",
                where,
                "given, or seeds (or account_terms with seed_terms) given with a graph "
                "and/or interactions",
                None,
            )
        risk = _default_risk(
            seeds, graph, interactions, account_terms if has_terms else None, seed_terms, where
        )
    n = risk.shape[0]
    if n_items is not None and n_items != n:
        raise fail("n_items", where, f"equal to the length of the risk ({n})", n_items)
    seed_arg = None if seeds is None else seed_mask(seeds, n, "seeds", where)
    minor_mask = None if minors is None else seed_mask(minors, n, "minors", where)
    if minor_mask is not None and minor_mask.any():
        # Minors' accounts are the network's targets: protected by viewer rules below,
        # not dropped or demoted for the risk that buyers' follows give them.
        risk = np.where(minor_mask & ~(seed_arg if seed_arg is not None else False), 0.0, risk)
        risk = risk.astype(np.float32)
    rest = risk if seed_arg is None or seed_arg.all() else risk[~seed_arg]

    def top(q: float) -> float:
        return float(np.quantile(rest, 1.0 - q)) if rest.size else 1.0

    base = float(np.median(rest)) if rest.size else 0.0
    drop_t = min(1.0, max(DEFAULT_DROP_FLOOR, DEFAULT_DROP_LIFT * base, top(q_cap) + 1e-7))
    demote_t = min(drop_t, max(DEFAULT_DEMOTE_LIFT * base, 1e-6))
    pool_t = min(demote_t, DEFAULT_POOL_LIFT * base)
    risky = risk >= drop_t
    if seed_arg is not None:
        risky |= seed_arg
    if viewer_risk is not None:
        viewer_risk = check_vector(viewer_risk, "viewer_risk", where, low=0.0, high=1.0)
    elif interactions is not None:
        from ._validation import check_csr

        ui = check_csr(interactions, "interactions", where)
        if ui.shape[1] == n:
            viewer_risk = viewer_share(ui, risky)[0].astype(np.float32)
    pool = risk <= pool_t
    if seed_arg is not None:
        pool &= ~seed_arg
    if minor_mask is not None:
        pool &= ~minor_mask
    filters: list = []
    if snapshot_labels:
        filters.append(BlockLabeled(tuple(label_categories), name="block_labeled"))
    filters.append(SuppressNeighborhood(risk, threshold=drop_t, seeds=seed_arg))
    filters.append(DemoteRisk(risk, weight=demote_weight, curve="sqrt", floor=demote_t))
    breaker_risk = np.where(risky, np.float32(1.0), risk).astype(np.float32)
    filters.append(
        ViewerCircuitBreaker(
            breaker_risk,
            item_threshold=drop_t,
            trip=DEFAULT_TRIP,
            pool=pool,
            viewer_risk=viewer_risk,
        )
    )
    if minor_mask is not None and minor_mask.any():
        # Any sign of the network (one interaction on a dropped candidate, in the call
        # or stored) and minors' accounts are never suggested: a second breaker whose
        # pool is everything but the minors, tripping on any risky interaction.
        stored = None
        if viewer_risk is not None:
            stored = (viewer_risk > 0).astype(np.float32)
        filters.append(
            ViewerCircuitBreaker(
                breaker_risk,
                item_threshold=drop_t,
                trip=1e-6,
                pool=~minor_mask,
                viewer_risk=stored,
                strip_interactions=False,
                reason="minors_protected",
                name="protect_minors",
            )
        )
    if minor_viewers is not None:
        mv = np.asarray(minor_viewers)
        if mv.dtype != bool:  # indices: as many viewers as the stored risk, or up to the last
            size = viewer_risk.shape[0] if viewer_risk is not None else int(mv.max(initial=-1)) + 1
            mv = seed_mask(mv, size, "minor_viewers", where)
        cand = np.where(risk >= demote_t, 0, -1).astype(np.int64)
        if seed_arg is not None:
            cand[seed_arg] = 0
        filters.append(
            CohortRule(
                mv.astype(np.int64),
                cand,
                [["allow"], ["drop"]],
                viewer_labels=("adult", "minor"),
                candidate_labels=("flagged_band",),
                reason="minor_viewer_protected",
                name="minor_viewers",
            )
        )
    filters.append(
        ShareCap(
            max_share=0.1,
            risk=risk,
            threshold=max(demote_t, 1e-6),
            surfaces=discovery_surfaces,
            name="share_cap_risky",
        )
    )
    if cohort_matrix is not None:
        vl, cl = cohort_labels if cohort_labels is not None else (None, None)
        filters.append(
            CohortRule(
                viewer_cohorts,
                candidate_cohorts,
                cohort_matrix,
                viewer_labels=vl,
                candidate_labels=cl,
            )
        )
    return Policy(filters, name=name)


def _default_risk(seeds, graph, interactions, account_terms, seed_terms, where):
    """Item risk from labelled seeds and flagged terms over the graph and/or interactions.

    Seeds weigh 1; accounts using flagged terms are soft seeds of weight
    ``DEFAULT_TERM_WEIGHT * term_risk`` (direct users only: term risk at least
    ``_TERM_DIRECT``). Both spread over the follow graph (both ways) and over
    co-engagement; the sources are combined with ``max``. A soft seed's own weight is
    then taken off its risk, so an account is never suppressed for its own terms alone:
    its risk is what its neighbourhood says.
    """
    from ._validation import check_csr
    from .expand import coengagement_risk, propagate, term_risk
    from .filters._risk import seed_mask

    n = None
    if graph is not None:
        graph = check_csr(graph, "graph", where)
        if graph.shape[0] != graph.shape[1]:
            raise fail("graph", where, "a square sparse matrix (n, n)", graph)
        n = graph.shape[0]
    if interactions is not None:
        interactions = check_csr(interactions, "interactions", where)
        if n is not None and interactions.shape[1] != n:
            raise fail(
                "interactions",
                where,
                f"a matrix with {n} columns (one per candidate)",
                interactions,
            )
        n = interactions.shape[1]
    s = np.zeros(n, dtype=bool) if seeds is None else seed_mask(seeds, n, "seeds", where)
    w = s.astype(np.float32)
    soft = np.zeros(n, dtype=np.float32)
    if account_terms is not None:
        at = check_csr(account_terms, "account_terms", where)
        if at.shape[0] != n:
            raise fail("account_terms", where, f"a matrix with {n} rows (one per candidate)", at)
        st = np.asarray(seed_terms)
        if st.ndim != 1 or not (st.size == 0 or np.issubdtype(st.dtype, np.integer)):
            raise fail("seed_terms", where, "a 1-d array of term indices", seed_terms)
        if st.size and (st.min() < 0 or st.max() >= at.shape[1]):
            raise fail("seed_terms", where, f"indices in [0, {at.shape[1]})", seed_terms)
        if st.size:
            acc, _ = term_risk(abs(at), seed_terms=st.astype(np.int64))
            acc = np.asarray(acc, dtype=np.float32)
            soft = np.where(acc >= _TERM_DIRECT, DEFAULT_TERM_WEIGHT * acc, 0.0)
            soft = np.where(s, 0.0, soft).astype(np.float32)
            w = np.maximum(w, soft)
    if not (w > 0).any():
        return np.zeros(n, dtype=np.float32)
    idx = np.flatnonzero(w > 0)
    parts = []
    if graph is not None:
        parts.append(
            np.asarray(propagate(abs(graph), idx, weights=w[idx], direction="both"), np.float32)
        )
    if interactions is not None:
        item_risk, _ = coengagement_risk(abs(interactions), idx, weights=w[idx])
        parts.append(np.asarray(item_risk, dtype=np.float32))
    risk = np.maximum.reduce(parts) if len(parts) > 1 else parts[0]
    risk = np.clip(risk - soft, 0.0, 1.0).astype(np.float32)
    risk[s] = 1.0
    return risk


# ============================================================================ TOML
from .filters.registry import policy_from_dict, policy_to_dict  # noqa: E402


def load_policy(path, *, data: dict | None = None) -> Policy:
    """Read a policy file (TOML).

    Parameters
    ----------
    path : str or PathLike
        The policy file.
    data : dict of str to array, optional, keyword-only
        Arrays referenced by name in the file (``risk = "risk"``). A reference not in
        ``data`` that ends in ``.npy`` or ``.npz`` is loaded relative to the file,
        without pickle.

    Raises
    ------
    PolicyFileError
        Unknown keys, bad values or a newer schema, with the file and key named.
    """
    import os
    import tomllib

    from .exceptions import PolicyFileError

    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(f"Policy file {path!r} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise PolicyFileError(f"Policy file {path!r} cannot be read: {exc}") from exc
    return policy_from_dict(
        doc, data=data, source=path, base_dir=os.path.dirname(os.path.abspath(path))
    )


def save_policy(policy: Policy, path, *, data_dir: str | None = None) -> dict[str, str]:
    """Write a policy file (TOML), with its arrays as ``.npy``/``.npz`` files beside it.

    Parameters
    ----------
    policy : Policy
        A policy of built-in (or registered, configurable) filters.
    path : str or PathLike
    data_dir : str, optional, keyword-only
        Directory for the arrays, relative to the file's directory; defaults to
        ``"<file stem>.data"``.

    Returns
    -------
    dict of str to str
        Array reference -> file written.
    """
    import os

    from .filters.registry import dump_toml

    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    rel = data_dir if data_dir is not None else f"{stem}.data"
    written: dict[str, str] = {}

    def store(name: str, arr) -> str:
        os.makedirs(os.path.join(base, rel), exist_ok=True)
        if sp.issparse(arr):
            ref = f"{rel}/{name}.npz"
            sp.save_npz(os.path.join(base, ref), sp.csr_matrix(arr), compressed=True)
        else:
            ref = f"{rel}/{name}.npy"
            np.save(os.path.join(base, ref), np.asarray(arr), allow_pickle=False)
        written[ref] = os.path.join(base, ref)
        return ref

    doc = policy_to_dict(policy, store=store)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dump_toml(doc))
    return written
