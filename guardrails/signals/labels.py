"""Labels: what the platform knows about an account or item, and when it knew it.

A label attaches a ``category`` (``"csam_seller"``, ``"spam"`` or any string the platform
uses) to a subject (an account or an item, by its external id) with a severity, a
confidence, a source, an evidence reference, a creation time and an optional expiry. A
label can be retracted; retraction keeps the row and records who withdrew it, when and
why.

Semantics, as of a time ``at`` (see ``docs/signals.md``):

- A label is **in force** at ``at`` when ``created_at <= at``, it has not expired
  (``expires_at`` is ``None`` or ``expires_at > at``) and it has not been retracted
  (``retracted_at`` is ``None`` or ``retracted_at > at``).
- **Supersession**: for each (subject, category), the *effective* label is the in-force
  label with the latest ``created_at`` (ties broken by the order in which the store
  received them). It alone sets the category's severity, confidence and source; earlier
  in-force labels are superseded while it stays in force, even if their severity is
  higher. When the effective label expires or is retracted, the latest remaining
  in-force label becomes effective again.
- A subject **has** a category when its effective label has ``severity > 0``. A label
  with ``severity == 0`` is a clearance (for example a reviewer's "not a seller"): it
  supersedes earlier labels and sets no flag.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .._validation import fail

__all__ = [
    "Label",
    "KNOWN_SOURCES",
    "SUBJECT_KINDS",
    "in_force",
    "select_effective",
]

#: Sources with a fixed bit in :attr:`Snapshot.source_flags` (any other string is allowed
#: and gets the next free bit, in sorted order).
KNOWN_SOURCES = ("report", "reviewer", "classifier", "hash_match", "propagated")

#: What a label can be attached to.
SUBJECT_KINDS = ("account", "item")

_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Label:
    """One label, as stored.

    Attributes
    ----------
    label_id : str
        Client-supplied idempotency key (or a generated one).
    subject : int or str
        External id of the account or item.
    category : str
    severity : float
        In ``[0, 1]``; ``0`` is a clearance.
    confidence : float
        In ``[0, 1]``.
    source : str
        ``"report"``, ``"reviewer"``, ``"classifier"``, ``"hash_match"``,
        ``"propagated"`` or any other string.
    evidence : str or None
        A reference to the evidence (a case id, a hash-list entry, a report key).
    created_at : float
        Seconds since the Unix epoch.
    expires_at : float or None
    retracted_at : float or None
    retracted_by : str or None
    retraction_reason : str or None
    kind : {"account", "item"}
    seq : int
        Order in which the store received the label (breaks ``created_at`` ties).
    """

    label_id: str
    subject: int | str
    category: str
    severity: float
    confidence: float
    source: str
    evidence: str | None
    created_at: float
    expires_at: float | None = None
    retracted_at: float | None = None
    retracted_by: str | None = None
    retraction_reason: str | None = None
    kind: str = "account"
    seq: int = 0

    def in_force(self, at: float) -> bool:
        """Whether the label counts at time ``at`` (created, not expired, not retracted)."""
        return in_force(self.created_at, self.expires_at, self.retracted_at, at)

    @property
    def retracted(self) -> bool:
        return self.retracted_at is not None


def in_force(
    created_at: float, expires_at: float | None, retracted_at: float | None, at: float
) -> bool:
    """Scalar form of the in-force rule (see the module docstring)."""
    return (
        created_at <= at
        and (expires_at is None or expires_at > at)
        and (retracted_at is None or retracted_at > at)
    )


def select_effective(group: np.ndarray, created_at: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Indices of the effective (latest) row of each group.

    Parameters
    ----------
    group : ndarray of int64, shape (n,)
        A code per row identifying its (subject, category).
    created_at : ndarray of float64, shape (n,)
    seq : ndarray of int64, shape (n,)
        Store order, to break ``created_at`` ties.

    Returns
    -------
    ndarray of int64, shape (n_groups,)
        One row index per distinct group, in increasing group order. Rows should be
        pre-filtered to those in force.
    """
    if group.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((seq, created_at, group))
    g = group[order]
    last = np.ones(g.size, dtype=bool)
    last[:-1] = g[1:] != g[:-1]
    return order[last].astype(np.int64, copy=False)


# ---------------------------------------------------------------------- validation
def check_subject(value: Any, name: str, where: str) -> int | str:
    """Return an external id as a Python int (in int64 range) or a non-empty str."""
    what = "an int in the int64 range or a non-empty str"
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
        raise fail(name, where, what, value)
    if isinstance(value, str):
        if not value:
            raise fail(name, where, what, value)
        return value
    v = int(value)
    if not _INT64[0] <= v <= _INT64[1]:
        raise fail(name, where, what, value)
    return v


def check_text(
    value: Any, name: str, where: str, *, optional: bool = False, max_len: int = 10_000
) -> str | None:
    """Return a non-empty str of at most ``max_len`` characters (or None if optional)."""
    if value is None and optional:
        return None
    what = f"a non-empty str of at most {max_len} characters" + (" or None" if optional else "")
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise fail(name, where, what, value)
    return value


def check_unit(value: Any, name: str, where: str) -> float:
    """Return a finite float in [0, 1]."""
    what = "a finite float in [0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, where, what, value)
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise fail(name, where, what, value)
    return v


def check_time(value: Any, name: str, where: str, *, optional: bool = False) -> float | None:
    """Return seconds since the epoch from a finite number or a timezone-aware datetime."""
    if value is None and optional:
        return None
    what = "a finite number of seconds since the Unix epoch or a timezone-aware datetime"
    if optional:
        what += ", or None"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise fail(name, where, what, value)
        return value.timestamp()
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise fail(name, where, what, value)
    return float(value)


def check_keys(d: dict, allowed: set[str], name: str, where: str) -> None:
    """Refuse a spec dict (one of the dicts of the ``name`` argument) with a key outside
    ``allowed``, naming the unknown keys."""
    unknown = set(d) - allowed
    if unknown:
        raise fail(
            name,
            where,
            f"dicts with keys among {sorted(allowed)}",
            f"unknown keys {sorted(unknown)}",
            describe=False,
        )


def check_kind(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in SUBJECT_KINDS:
        raise fail("kind", where, f"one of {', '.join(map(repr, SUBJECT_KINDS))}", value)
    return value
