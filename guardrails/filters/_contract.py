"""The one check of what a filter compiles.

Every compiled output of a filter passes through here before the kernel sees it: the
policy checks each part when it compiles, the conformance kit (:mod:`guardrails.testing`)
and the plug-in registry check through the same functions, so a filter that passes the
kit cannot fail differently in a policy. A misaligned mask is never applied.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import is_int_vector
from ..core._exact import cell_positions
from ..core.plan import PlanPart
from ..exceptions import ConformanceError, ValidationError
from .base import (
    FAILURE_MODES,
    MODES,
    CapFilter,
    CapSpec,
    Catalog,
    CohortFilter,
    CohortTable,
    FilterProtocol,
    ProfileQueryFilter,
    QueryFilter,
    ViewerBatch,
)

__all__ = [
    "as_parts",
    "check_part",
    "check_table",
    "check_caps",
    "compile_static",
    "compile_viewer_parts",
    "assign_cohorts",
    "compile_queries",
    "check_conformance",
    "random_viewers",
    "example_parts",
]


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
    if not isinstance(part.reason, str) or not part.reason:
        raise ValidationError(
            f"Filter {part.name!r} compiled a part without a reason code; every part needs one."
        )
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
    if n_viewers is None and (part.viewer_mask is not None or vp is not None):
        raise ValidationError(f"Filter {part.name!r} compiled per-viewer arrays in compile_global.")
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


# ---------------------------------------------------------------------------- compile steps
def compile_static(
    f: FilterProtocol, catalog: Catalog, name: str
) -> tuple[tuple[PlanPart, ...], CohortTable | None, CapSpec | None]:
    """What ``f`` compiles once per policy and snapshot, checked: global parts, cohort
    table and share cap.

    Raises
    ------
    ValidationError
        For anything that does not fit the catalogue or breaks the protocol.
    """
    parts = tuple(check_part(p, catalog, None) for p in as_parts(f.compile_global(catalog), name))
    table = None
    if hasattr(f, "compile_cohorts"):
        if not isinstance(f, CohortFilter):
            raise ValidationError(
                f"Filter {name!r} implements compile_cohorts without assign_cohorts; a filter "
                "with cohorts must implement both."
            )
        table = check_table(f.compile_cohorts(catalog), catalog, name)
    caps = check_caps(f.compile_caps(catalog), catalog, name) if isinstance(f, CapFilter) else None
    return parts, table, caps


def compile_viewer_parts(
    f: FilterProtocol,
    catalog: Catalog,
    viewers: ViewerBatch,
    name: str,
    restore: np.ndarray | None = None,
) -> tuple[PlanPart, ...]:
    """The per-viewer parts of ``f`` for one batch, checked (see :func:`check_part`)."""
    return tuple(
        check_part(p, catalog, viewers.size, restore)
        for p in as_parts(f.compile_viewers(catalog, viewers), name)
    )


def assign_cohorts(
    f: CohortFilter, catalog: Catalog, viewers: ViewerBatch, table: CohortTable, name: str
) -> np.ndarray:
    """The cohort of every viewer of the batch (``-1``: none), checked against ``table``."""
    g = np.asarray(f.assign_cohorts(catalog, viewers))
    k = table.n_cohorts
    if g.shape != (viewers.size,) or not is_int_vector(g, low=-1, high=k):
        raise ValidationError(
            f"Filter {name!r} assigned cohorts of shape {g.shape} or out of range; expected "
            f"ints in [-1, {k}) of shape ({viewers.size},)."
        )
    return g.astype(np.int64)


def compile_queries(
    f: FilterProtocol, catalog: Catalog, viewers: ViewerBatch, name: str
) -> sp.csr_matrix | None:
    """Cells ``f`` leaves out of the viewers' queries (``None``: none), checked.

    A batch with interactions (``recommend``) asks a :class:`QueryFilter` for
    interactions to leave out; a batch of profile views (no interactions, the viewed
    profile in ``context_items``) asks a :class:`ProfileQueryFilter` for viewed profiles
    to leave out. Either may only leave out cells the viewers' queries are built from.
    """
    if viewers.user_items is not None:
        if not isinstance(f, QueryFilter):
            return None
        s = f.compile_queries(catalog, viewers)
        ui = viewers.user_items
    elif viewers.context_items is not None and isinstance(f, ProfileQueryFilter):
        s = f.compile_profile_queries(catalog, viewers)
        ui = viewers.context_items
    else:
        return None
    if s is None:
        return None
    if not sp.issparse(s) or s.shape != ui.shape:
        raise ValidationError(
            f"Filter {name!r} compiled query cells of shape {getattr(s, 'shape', None)}; they "
            f"must be a sparse matrix of the interactions' shape {ui.shape}."
        )
    s = sp.csr_matrix(s)
    s.eliminate_zeros()
    if not s.nnz:
        return None
    if not _cells_within(s, sp.csr_matrix(ui)):
        raise ValidationError(
            f"Filter {name!r} compiled query cells outside the viewers' interactions (or "
            "the profile they view); it may only leave out cells of the viewers' queries."
        )
    return s


def _cells_within(s: sp.csr_matrix, ui: sp.csr_matrix) -> bool:
    """Every stored cell of ``s`` is a stored cell of ``ui`` (same shape, both CSR).

    Runs on every call that strips interactions, so it compares cell keys
    (``row * n_cols + col``) of the rows ``s`` has cells in, instead of building sparse
    intermediates or reading every row of ``ui``.
    """
    n = ui.shape[1]
    rows = np.flatnonzero(np.diff(s.indptr))
    if not rows.size:
        return True
    s_at, s_counts = cell_positions(s.indptr, rows)
    u_at, u_counts = cell_positions(ui.indptr, rows)
    if not u_at.size:
        return False
    s_keys = np.repeat(rows * n, s_counts) + s.indices[s_at]
    u_keys = np.sort(np.repeat(rows * n, u_counts) + ui.indices[u_at])
    pos = np.minimum(np.searchsorted(u_keys, s_keys), u_keys.size - 1)
    return bool(np.array_equal(u_keys[pos], s_keys))


# ---------------------------------------------------------------------------- conformance
def random_viewers(
    n_candidates: int,
    n_users: int,
    m: int,
    *,
    seed: int = 0,
    density: float = 0.1,
    surface=None,
    new_users: bool = True,
) -> ViewerBatch:
    """A random :class:`ViewerBatch`: ids (some beyond ``n_users``: new accounts) and interactions."""
    rng = np.random.default_rng(seed)
    hi = n_users + (3 if new_users else 0)
    userids = rng.integers(0, max(1, hi), size=m).astype(np.int64)
    ui = sp.random(
        m, n_candidates, density=density, format="csr", random_state=rng, dtype=np.float32
    )
    ui.data[:] = np.ceil(ui.data * 3)
    return ViewerBatch(userids, sp.csr_matrix(ui), surface, m)


def example_parts(example) -> tuple:
    """``(filter, catalog)`` from a filter or a ``(filter, catalog)`` pair (``example()``).

    Without a catalogue, an item catalogue sized from the filter's ``risk`` array when it
    has one, else of 30 candidates.
    """
    if isinstance(example, tuple) and len(example) == 2:
        f, catalog = example
    else:
        f, catalog = example, None
    if catalog is None:
        risk = getattr(f, "risk_", getattr(f, "risk", None))
        catalog = Catalog("items", int(risk.shape[0]) if isinstance(risk, np.ndarray) else 30)
    return f, catalog


def _fail(f, check: str, detail: str) -> ConformanceError:
    return ConformanceError(
        f"Filter {getattr(f, 'name', f)!r} fails conformance check {check!r}: {detail}"
    )


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def _dense(a) -> np.ndarray:
    return np.asarray(a.todense()) if sp.issparse(a) else np.asarray(a)


def _viewer_summary(
    f, catalog: Catalog, viewers: ViewerBatch, table: CohortTable | None, restore
) -> dict[str, np.ndarray]:
    """Everything per-viewer ``f`` compiles for a batch, checked, as dense arrays."""
    m, n = viewers.size, catalog.n
    name = f.name
    out = {"drop": np.zeros((m, n), dtype=bool), "pen": np.zeros((m, n), dtype=np.float64)}
    try:
        for p in compile_viewer_parts(f, catalog, viewers, name, restore):
            if p.viewer_mask is not None:
                out["drop"] |= _dense(p.viewer_mask) != 0
            if p.viewer_penalty is not None:
                out["pen"] += _dense(p.viewer_penalty)
    except ValidationError as exc:
        raise _fail(f, "compile_viewers", str(exc)) from exc
    if table is not None:
        try:
            out["cohort"] = assign_cohorts(f, catalog, viewers, table, name)
        except ValidationError as exc:
            raise _fail(f, "assign_cohorts", str(exc)) from exc
    cells = viewers.user_items if viewers.user_items is not None else viewers.context_items
    step = "compile_queries" if viewers.user_items is not None else "compile_profile_queries"
    if cells is not None and isinstance(
        f, QueryFilter if viewers.user_items is not None else ProfileQueryFilter
    ):
        try:
            q = compile_queries(f, catalog, viewers, name)
        except ValidationError as exc:
            raise _fail(f, step, str(exc)) from exc
        out["strip"] = np.zeros(cells.shape, dtype=bool) if q is None else _dense(q) != 0
    return out


def check_conformance(f, catalog: Catalog, viewers: ViewerBatch) -> None:
    """The filter contract on one filter, catalogue and batch of viewers.

    Checks the protocol (name, reason, fingerprint, settings), everything the filter
    compiles (through the same checks a policy applies), determinism, and that compiling
    a batch equals compiling each of its rows. Used by
    :func:`guardrails.testing.check_filter` and by plug-in registration.

    Raises
    ------
    ConformanceError
        Naming the filter and the check that failed.
    """
    if not isinstance(f, FilterProtocol):
        raise _fail(
            f, "protocol", "missing name, reason, compile_global, compile_viewers or fingerprint"
        )
    if not isinstance(f.name, str) or not f.name or not isinstance(f.reason, str) or not f.reason:
        raise _fail(f, "protocol", "name and reason must be non-empty strings")
    fp = f.fingerprint()
    if not isinstance(fp, bytes) or fp != f.fingerprint():
        raise _fail(f, "fingerprint", "fingerprint() must return the same bytes on every call")
    for attr, choices in (("mode", MODES), ("failure", FAILURE_MODES)):
        v = getattr(f, attr, choices[0])
        if v not in choices:
            raise _fail(f, "settings", f"{attr} must be one of {choices}, got {v!r}")

    # Static parts: the policy's own checks, then determinism.
    try:
        g1, table, caps = compile_static(f, catalog, f.name)
        g2, _, _ = compile_static(f, catalog, f.name)
    except ValidationError as exc:
        check = "compile_global"
        if "cohort" in str(exc):
            check = "compile_cohorts"
        elif "caps" in str(exc):
            check = "compile_caps"
        raise _fail(f, check, str(exc)) from exc
    if len(g1) != len(g2) or any(
        not _same(a.hard_mask, b.hard_mask) or not _same(a.penalty, b.penalty)
        for a, b in zip(g1, g2, strict=True)
    ):
        raise _fail(f, "determinism", "compile_global must return the same plan on every call")
    if caps is not None and not 0 <= caps.max_share <= 1:
        raise _fail(f, "compile_caps", "the share of a CapSpec must be in [0, 1]")

    # Per-viewer parts: checked like a policy checks them, deterministic, batch == rows;
    # on the batch given and on the same viewers viewing profiles (similar_items).
    pens = [p.penalty for p in g1 if p.penalty is not None]
    restore = np.sum(pens, axis=0) if pens else None
    for batch in (viewers, profile_views(viewers, catalog.n)):
        _check_viewer_parts(f, catalog, batch, table, restore)


def profile_views(viewers: ViewerBatch, n_candidates: int, *, seed: int = 0) -> ViewerBatch:
    """The batch's viewers viewing one random profile each (as ``similar_items`` passes
    them): no interactions, the viewed candidate in ``context_items``."""
    rng = np.random.default_rng(seed)
    m = viewers.size
    viewed = rng.integers(0, max(n_candidates, 1), size=m)
    ctx = sp.csr_matrix((np.ones(m, np.float32), viewed, np.arange(m + 1)), shape=(m, n_candidates))
    return ViewerBatch(viewers.userids, None, viewers.surface, m, ctx)


def _check_viewer_parts(f, catalog: Catalog, viewers: ViewerBatch, table, restore) -> None:
    """Per-viewer parts of one batch: deterministic, and the batch equals its rows."""
    whole = _viewer_summary(f, catalog, viewers, table, restore)
    again = _viewer_summary(f, catalog, viewers, table, restore)
    for k in whole:
        if not np.array_equal(whole[k], again[k]):
            raise _fail(f, "determinism", f"per-viewer {k} differs between two identical calls")
    for r in range(viewers.size):
        one = _viewer_summary(f, catalog, viewers.take(np.array([r])), table, restore)
        for k in whole:
            if not np.allclose(whole[k][r : r + 1], one[k], rtol=0, atol=1e-6):
                raise _fail(
                    f,
                    "batch consistency",
                    f"row {r}'s per-viewer {k} differs from compiling it alone",
                )
