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

Subclass :class:`Filter` for the defaults, or implement the same methods on any class
(the protocol is structural: :class:`FilterProtocol`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from ..core.plan import PlanPart

__all__ = ["Catalog", "ViewerBatch", "Filter", "FilterProtocol", "array_fingerprint"]

#: Catalogue kinds a filter may be compiled against.
CATALOG_KINDS = ("items", "users")


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
    """

    userids: np.ndarray | None
    user_items: sp.csr_matrix | None = None
    surface: str | None = None

    @property
    def size(self) -> int:
        if self.userids is not None:
            return int(self.userids.shape[0])
        if self.user_items is not None:
            return int(self.user_items.shape[0])
        return 0


@runtime_checkable
class FilterProtocol(Protocol):
    """Structural type of a filter; see the module docstring."""

    name: str
    reason: str

    def compile_global(self, catalog: Catalog) -> PlanPart | None: ...

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None: ...

    def fingerprint(self) -> bytes: ...


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

    def compile_global(self, catalog: Catalog) -> PlanPart | None:
        return None

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        return None

    def params(self) -> tuple:
        return ()

    def fingerprint(self) -> bytes:
        return array_fingerprint(type(self).__qualname__, self.name, self.reason, *self.params())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, reason={self.reason!r})"
