"""Checks at the public boundary, with one message shape.

Every message reads ``"The '<name>' parameter of <where> must be <what>. Got <got>
instead."`` so that users can grep for it and tests can match it.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp

from .exceptions import ValidationError

__all__ = [
    "fail",
    "check_int",
    "check_float",
    "check_ids",
    "check_factors",
    "check_csr",
    "check_vector",
    "check_choice",
    "check_bool",
    "check_mask",
]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if sp.issparse(value):
        return f"a {type(value).__name__} of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(name: str, where: str, what: str, got: Any, *, describe: bool = True) -> ValidationError:
    """Build a :class:`ValidationError` in the library's one message shape."""
    shown = _describe(got) if describe else str(got)
    return ValidationError(
        f"The {name!r} parameter of {where} must be {what}. Got {shown} instead."
    )


def check_int(value: Any, name: str, where: str, *, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]``."""
    upper = "inf)" if high is None else f"{high}]"
    what = f"an int in [{low}, {upper}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(name, where, what, value)
    value = int(value)
    if value < low or (high is not None and value > high):
        raise fail(name, where, what, value)
    return value


def check_float(
    value: Any,
    name: str,
    where: str,
    *,
    low: float = -np.inf,
    high: float = np.inf,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a finite float in ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    what = f"a finite float in {'(' if low_open else '['}{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, where, what, value)
    value = float(value)
    if not np.isfinite(value) or value > high or value < low or (low_open and value == low):
        raise fail(name, where, what, value)
    return value


def check_choice(value: Any, name: str, where: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise fail(name, where, f"one of {', '.join(map(repr, choices))}", value)
    return value


def check_bool(value: Any, name: str, where: str) -> bool:
    """Return ``value`` if it is a bool (not an int, not a numpy bool)."""
    if not isinstance(value, bool):
        raise fail(name, where, "a bool", value)
    return value


def check_mask(value: Any, name: str, where: str, length: int) -> np.ndarray:
    """Return a copy of ``value`` if it is a 1-d bool array of ``length`` items."""
    arr = np.asarray(value)
    if arr.dtype != bool or arr.shape != (length,):
        raise fail(name, where, f"a bool mask of length {length}", value)
    return arr.copy()


def is_int_vector(arr: np.ndarray, low: int | None = None, high: int | None = None) -> bool:
    """Whether ``arr`` is a 1-d array of ints (an empty one of any dtype) in ``[low, high)``
    (``None``: unbounded on that side). Bools are not ints."""
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        return False
    if not arr.size:
        return True
    return (low is None or arr.min() >= low) and (high is None or arr.max() < high)


def check_ids(value: Any, name: str, where: str, n: int) -> tuple[np.ndarray, bool]:
    """Return ``(ids, is_scalar)`` with ``ids`` a 1-d int64 array of indices in ``[0, n)``."""
    what = f"an int or a 1-d array of ints in [0, {n})"
    if isinstance(value, bool):
        raise fail(name, where, what, value)
    scalar = isinstance(value, numbers.Integral)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a validation error
        raise fail(name, where, what, value) from exc
    if arr.ndim == 0:
        scalar = True
        arr = arr.reshape(1)
    if not is_int_vector(arr):
        raise fail(name, where, what, value)
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][:5]
        raise fail(name, where, what, f"out-of-range ids {bad.tolist()}", describe=False)
    return arr, scalar


def check_factors(value: Any, name: str, where: str, *, n_cols: int | None = None) -> np.ndarray:
    """Return a C-contiguous 2-d float32 array with finite values."""
    cols = "any number of" if n_cols is None else str(n_cols)
    what = f"a 2-d array of finite floats with {cols} columns"
    arr = np.asarray(value)
    if arr.ndim != 2 or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise fail(name, where, what, value)
    if n_cols is not None and arr.shape[1] != n_cols:
        raise fail(name, where, what, arr)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise fail(name, where, what, "an array with NaN or infinite values", describe=False)
    return arr


def check_csr(
    value: Any,
    name: str,
    where: str,
    *,
    shape: tuple[int | None, int | None] = (None, None),
) -> sp.csr_matrix:
    """Return ``value`` as a canonical CSR matrix of the given shape with finite data."""
    rows = "any" if shape[0] is None else str(shape[0])
    cols = "any" if shape[1] is None else str(shape[1])
    what = f"a scipy.sparse CSR matrix with {rows} rows and {cols} columns and finite values"
    if not sp.issparse(value):
        raise fail(name, where, what, value)
    if (shape[0] is not None and value.shape[0] != shape[0]) or (
        shape[1] is not None and value.shape[1] != shape[1]
    ):
        raise fail(name, where, what, value)
    csr = sp.csr_matrix(value)
    if csr.dtype.kind not in "biuf":
        raise fail(name, where, what, value)
    if csr.nnz and not np.isfinite(csr.data).all():
        raise fail(name, where, what, "a matrix with NaN or infinite values", describe=False)
    return canonical_csr(csr)


def canonical_csr(csr: Any) -> sp.csr_matrix:
    """``csr`` with sorted indices and no duplicate cells (summed), copied only if needed.

    A ``csr_matrix`` whose arrays hold exactly its cells is read as it is (scipy keeps its
    format check: a call's ``user_items``, checked once by :func:`check_csr`, is not
    checked again by each filter that reads it); any other sparse matrix is converted
    first, and arrays longer than the cells (scipy sums a shared matrix's duplicates in
    place) are trimmed, so ``indices`` and ``data`` hold one entry per cell.
    """
    n = int(csr.indptr[-1]) if type(csr) is sp.csr_matrix else -1
    if n < 0 or csr.indices.shape[0] != n or csr.data.shape[0] != n:
        csr = sp.csr_matrix(csr)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def check_vector(
    value: Any,
    name: str,
    where: str,
    *,
    length: int | None = None,
    low: float = -np.inf,
    high: float = np.inf,
) -> np.ndarray:
    """Return a 1-d float32 array of finite values in ``[low, high]``."""
    size = "" if length is None else f" of length {length}"
    what = f"a 1-d array{size} of finite floats in [{low}, {high}]"
    arr = np.asarray(value)
    if arr.ndim != 1 or (length is not None and arr.shape[0] != length):
        raise fail(name, where, what, value)
    if not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == bool
    ):
        raise fail(name, where, what, value)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise fail(name, where, what, "an array with NaN or infinite values", describe=False)
    if arr.size and (arr.min() < low or arr.max() > high):
        raise fail(name, where, what, f"values in [{arr.min()}, {arr.max()}]", describe=False)
    return arr
