"""Safety signals: labels, a durable store, report intake, and atomic snapshots.

- :class:`LabelStore`: labels on SQLite (WAL, ``synchronous=FULL``), idempotent writes,
  an append-only audit log, schema versions with migrations.
- :class:`ReportQueue`: durable report intake with idempotency keys, reviewer leases,
  dead letters, counters and triage; shares a store so that resolving a report writes
  labels in the same transaction.
- :class:`Snapshot`: an immutable, versioned, per-item array view of the labels for one
  model catalogue (:class:`IdMap`), as of one time; saved and loaded without pickle.

:class:`~guardrails.ServingGuard` (serving from a Guard only while its snapshot is present,
readable and fresh) lives in :mod:`guardrails.serving`, above the Guard it wraps;
``guardrails.signals.ServingGuard`` still resolves to it, with a ``DeprecationWarning``.

See ``docs/signals.md`` for the semantics of expiry, retraction and supersession, the
triage formula and the snapshot interface that filters read.
"""

from . import reports
from .labels import KNOWN_SOURCES, SUBJECT_KINDS, Label
from .reports import *  # noqa: F403 (reports.__all__: report intake)
from .snapshot import IdMap, Snapshot
from .store import SCHEMA_VERSION, AuditEntry, LabelStore

__all__ = [
    "Label",
    "LabelStore",
    "AuditEntry",
    "SCHEMA_VERSION",
    "KNOWN_SOURCES",
    "SUBJECT_KINDS",
    "IdMap",
    "Snapshot",
    "ServingGuard",  # noqa: F405 (deprecated; resolved by __getattr__ below)
]
# reports's own list (mypy does not follow this for a star import of the package:
# import the names themselves).
__all__ += reports.__all__


def __getattr__(name: str):
    # ServingGuard moved to guardrails.serving: it wraps a Guard, and signals sits below
    # the Guard (signals uses only core, _validation and exceptions). The old name is
    # resolved on first access, never when signals loads, so the layering holds.
    if name == "ServingGuard":
        import importlib
        import warnings

        warnings.warn(
            "guardrails.signals.ServingGuard moved to guardrails.ServingGuard "
            "(module guardrails.serving); import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        cls = importlib.import_module("guardrails.serving").ServingGuard
        globals()[name] = cls  # warn once
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
