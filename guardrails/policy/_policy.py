"""Policy and its settings: an ordered, immutable set of filters with modes,
surfaces, holdback and failure modes (see :mod:`guardrails.policy` for the semantics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import check_choice, check_float, fail
from ..core.plan import Plan
from ..core.threads import PicklableLock
from ..exceptions import ValidationError
from ..filters.base import FAILURE_MODES, MODES, Catalog, FilterProtocol, ViewerBatch
from ._compiled import CompiledPolicy

__all__ = ["SCHEMA_VERSION", "FilterSettings", "Holdback", "Policy", "as_policy"]

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
        self._compiled_lock = PicklableLock()

    # ------------------------------------------------------------------ basics
    def __getstate__(self) -> dict:
        # Compiled policies are per-process caches (and large): they are rebuilt on use.
        return {**self.__dict__, "_compiled": {}}

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
        return self.compiled(catalog).global_plan()

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> Plan:
        """Per-viewer parts of the enforced filters for one batch (every surface)."""
        cp = self.compiled(catalog)
        idx = cp.active(None)[0]
        parts = []
        for i in idx:
            parts.extend(cp.viewer_parts(i, viewers))
        return Plan(catalog.n, tuple(parts))


def as_policy(policy: Policy | Iterable[FilterProtocol] | None) -> Policy:
    """Accept a Policy, a list of filters, or None (no filters)."""
    if policy is None:
        return Policy(())
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, FilterProtocol):
        return Policy((policy,))
    return Policy(tuple(policy))
