"""The one check of what a filter compiles.

Every compiled output of a filter passes through here before the kernel sees it: the
policy checks each part when it compiles, the conformance kit (:mod:`guardrails.testing`)
and the plug-in registry check through the same functions, so a filter that passes the
kit cannot fail differently in a policy. A misaligned mask is never applied.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..core.plan import PlanPart
from ..exceptions import ValidationError
from .base import CapSpec, Catalog, CohortTable

__all__ = ["as_parts", "check_part", "check_table", "check_caps"]


def as_parts(out, name: str) -> tuple[PlanPart, ...]:
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


def check_part(
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


def check_table(t, catalog: Catalog, name: str) -> CohortTable | None:
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


def check_caps(c, catalog: Catalog, name: str) -> CapSpec | None:
    if c is None:
        return None
    if not isinstance(c, CapSpec) or c.groups.shape != (catalog.n,):
        raise ValidationError(
            f"Filter {name!r} compiled caps that are not a CapSpec with groups of shape ({catalog.n},)."
        )
    return c
