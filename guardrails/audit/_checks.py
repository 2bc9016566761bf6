"""Checks of own-data arrays: each refusal one :class:`~guardrails.ValidationError` naming
the file, the field and what was expected (used by :mod:`guardrails.audit.data`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import canonical_csr, is_int_vector
from ..exceptions import ValidationError


def bad(source: str, field: str, what: str, got: str) -> ValidationError:
    """The one refusal shape: the file (``source``), the field, what it must be, what it is."""
    return ValidationError(f"The {field!r} field of {source} must be {what}. Got {got} instead.")


def shown(arr: np.ndarray) -> str:
    """An array described by shape and dtype, for a refusal's "Got ..."."""
    return f"an array of shape {arr.shape} and dtype {arr.dtype}"


def check_weights(m: sp.csr_matrix, source: str, field: str) -> None:
    what = "finite, non-negative weights"
    if m.dtype.kind not in "biuf":
        raise bad(source, field, what, f"dtype {m.dtype}")
    data = m.data
    n_nan = int(np.count_nonzero(~np.isfinite(data))) if data.dtype.kind == "f" else 0
    if n_nan:
        raise bad(source, field, what, f"{n_nan} NaN or infinite values")
    n_neg = int(np.count_nonzero(data < 0))
    if n_neg:
        raise bad(source, field, what, f"{n_neg} negative values (smallest {data.min():g})")


def check_matrix(
    m, source: str, shape: tuple[int | None, int | None], names: tuple[str, str]
) -> sp.csr_matrix:
    """A CSR matrix with finite non-negative weights, of ``shape`` (None: any)."""
    if not sp.issparse(m):
        got = shown(np.asarray(m)) if hasattr(m, "shape") else type(m).__name__
        raise bad(source, "format", "a scipy.sparse CSR matrix", got)
    if m.format != "csr":
        raise bad(source, "format", "'csr' (save a scipy.sparse.csr_matrix)", repr(str(m.format)))
    for axis, (want, name) in enumerate(zip(shape, names, strict=True)):
        if want is not None and m.shape[axis] != want:
            raise bad(
                source,
                "shape",
                f"({shape[0] if shape[0] is not None else 'any'}, "
                f"{shape[1] if shape[1] is not None else 'any'}): axis {axis} is {name}",
                str(tuple(int(s) for s in m.shape)),
            )
    check_weights(m, source, "data")
    m = canonical_csr(sp.csr_matrix(m, dtype=np.float32))
    m.eliminate_zeros()
    return m


def ids_mask(value, n: int, source: str, field: str, *, what_ids: str) -> np.ndarray:
    """Indices in [0, n) or a bool mask of length n, as a bool mask."""
    arr = np.asarray(value)
    what = f"{what_ids}: indices in [0, {n}) or a bool mask of length {n}"
    if arr.dtype == bool:
        if arr.ndim != 1 or arr.shape[0] != n:
            raise bad(source, field, what, shown(arr))
        return arr.copy()
    if not is_int_vector(arr):
        raise bad(source, field, what, shown(arr))
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        wrong = arr[(arr < 0) | (arr >= n)]
        raise bad(source, field, what, f"{wrong.size} ids out of range (first: {int(wrong[0])})")
    out = np.zeros(n, dtype=bool)
    out[arr.astype(np.int64)] = True
    return out


def factors_array(value, rows: int, source: str, field: str, k: int | None = None) -> np.ndarray:
    """Finite float factors of shape ``(rows, k)`` (any ``k`` when None), as float32."""
    arr = np.asarray(value)
    cols = "k" if k is None else str(k)
    what = f"a float array of shape ({rows}, {cols}) with finite values"
    if arr.ndim != 2 or arr.dtype.kind != "f" or arr.shape[0] != rows:
        raise bad(source, field, what, shown(arr))
    if k is not None and arr.shape[1] != k:
        raise bad(source, field, what, shown(arr))
    if not np.isfinite(arr).all():
        raise bad(source, field, what, f"{int((~np.isfinite(arr)).sum())} NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def seed_categories(categories, seeds, src: str) -> np.ndarray:
    """One category per seed, aligned with the sorted unique seed indices."""
    cats = np.asarray(categories)
    raw = np.asarray(seeds)
    if cats.ndim != 1 or cats.dtype.kind not in "iuU":
        raise bad(src, "categories", "a 1-d int or str array, one per seed", shown(cats))
    n_given = int(raw.sum()) if raw.dtype == bool else int(raw.size)
    if cats.shape[0] != n_given:
        raise bad(src, "categories", f"one category per seed ({n_given})", shown(cats))
    if raw.dtype == bool:
        return cats
    # Align with the sorted unique seed indices; a seed listed twice must keep one category.
    order = np.argsort(raw, kind="stable")
    r, c = raw[order], cats[order]
    first = np.r_[True, r[1:] != r[:-1]]
    same = np.array([np.all(c[r == v] == c[r == v][0]) for v in r[first]])
    if not same.all():
        raise bad(
            src,
            "categories",
            "one category per seed (a seed listed twice with two categories)",
            f"seed {int(r[first][~same][0])} with two",
        )
    return c[first]


def flagged_term_ids(flagged_terms, terms_m, src: str, terms_file: str) -> np.ndarray | None:
    """The flagged terms as sorted column indices of ``terms_m``; both given or neither."""
    if flagged_terms is None:
        if terms_m is not None:
            raise bad(src, "flagged_terms", f"given with {terms_file} (the flagged terms)", "none")
        return None
    if terms_m is None:
        raise bad(
            src,
            "flagged_terms",
            f"given with {terms_file} (the terms each account uses)",
            "no terms file",
        )
    mask = ids_mask(flagged_terms, terms_m.shape[1], src, "flagged_terms", what_ids="terms")
    return np.flatnonzero(mask).astype(np.int64)


def outside_seeds(value, seed_mask: np.ndarray, src: str, field: str, why: str) -> np.ndarray:
    """A mask over candidate accounts that shares no account with the seeds."""
    mask = ids_mask(value, seed_mask.shape[0], src, field, what_ids="candidate accounts")
    both = np.flatnonzero(mask & seed_mask)
    if both.size:
        raise bad(
            src,
            field,
            f"accounts outside the seeds ({why})",
            f"{both.size} accounts that are also seeds (first: {int(both[0])})",
        )
    return mask


def own_model_needs(
    f: dict, *, model_given: bool, factors_given: bool, held_out_given: bool
) -> None:
    """One own model (factors or an implicit model), and held-out interactions with it.

    Quality measured on pairs the model was trained on would be in-sample, hence the
    held-out file.
    """
    if model_given and factors_given:
        raise bad(f["model.npz"], "(file)", f"given without {f['factors.npz']} (one model)", "both")
    if (model_given or factors_given) and not held_out_given:
        raise bad(
            f["held_out.npz"],
            "(file)",
            "given with your own factors or model (interactions it was not trained on; "
            "quality measured on trained pairs would be in-sample)",
            "no held-out file",
        )
