"""Policy: an ordered set of filters compiled into one scoring plan.

The policy version is a content hash of its filters' fingerprints, so two policies with
the same filters, parameters and data have the same version, and every result records
the version it was computed with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .core.plan import Plan, PlanPart
from .exceptions import ValidationError
from .filters.base import Catalog, FilterProtocol, ViewerBatch

__all__ = ["Policy", "as_policy"]


class Policy:
    """An ordered, immutable set of filters.

    Parameters
    ----------
    filters : sequence of Filter
        Applied in order; a candidate removed by any filter is removed, penalties add up.
    name : str, keyword-only
        A label for reports.
    """

    def __init__(self, filters: Sequence[FilterProtocol] = (), *, name: str = "policy"):
        filters = tuple(filters)
        for i, f in enumerate(filters):
            if not isinstance(f, FilterProtocol):
                raise ValidationError(
                    f"The 'filters' parameter of Policy must be a sequence of filters implementing "
                    f"compile_global, compile_viewers and fingerprint. Got {type(f).__name__} at "
                    f"position {i} instead."
                )
        self.filters = filters
        self.name = name
        h = hashlib.sha256(b"guardrails-policy-v1")
        for f in filters:
            h.update(f.fingerprint())
        self._version = h.hexdigest()[:16]

    @property
    def version(self) -> str:
        """Content hash of the filters (16 hex digits)."""
        return self._version

    def __len__(self) -> int:
        return len(self.filters)

    def __iter__(self):
        return iter(self.filters)

    def __repr__(self) -> str:
        return f"Policy({list(self.filters)!r}, name={self.name!r})"

    def compile_global(self, catalog: Catalog) -> Plan:
        parts = [p for p in (f.compile_global(catalog) for f in self.filters) if p is not None]
        return Plan(catalog.n, tuple(_checked(p, catalog, None) for p in parts))

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> Plan:
        parts = [p for p in (f.compile_viewers(catalog, viewers) for f in self.filters) if p is not None]
        return Plan(catalog.n, tuple(_checked(p, catalog, viewers.size) for p in parts))


def _checked(part: PlanPart, catalog: Catalog, n_viewers: int | None) -> PlanPart:
    """Reject a part whose arrays do not fit the catalogue: never apply a misaligned mask."""
    n = catalog.n
    for attr in ("hard_mask", "penalty"):
        a = getattr(part, attr)
        if a is not None and a.shape != (n,):
            raise ValidationError(
                f"Filter {part.name!r} compiled a {attr} of shape {a.shape} for a {catalog.kind} "
                f"catalogue of {n}; it must have shape ({n},)."
            )
    for attr in ("viewer_mask", "viewer_penalty"):
        a = getattr(part, attr)
        if a is not None and (n_viewers is None or a.shape != (n_viewers, n)):
            raise ValidationError(
                f"Filter {part.name!r} compiled a {attr} of shape {a.shape}; it must have shape "
                f"({n_viewers}, {n})."
            )
    return part


def as_policy(policy: Policy | Iterable[FilterProtocol] | None) -> Policy:
    """Accept a Policy, a list of filters, or None (no filters)."""
    if policy is None:
        return Policy(())
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, FilterProtocol):
        return Policy((policy,))
    return Policy(tuple(policy))
