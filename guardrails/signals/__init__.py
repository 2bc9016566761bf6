"""Safety signals: labels, a durable store, report intake, and atomic snapshots.

- :class:`LabelStore`: labels on SQLite (WAL, ``synchronous=FULL``), idempotent writes,
  an append-only audit log, schema versions with migrations.
- :class:`ReportQueue`: durable report intake with idempotency keys, reviewer leases,
  dead letters, counters and triage; shares a store so that resolving a report writes
  labels in the same transaction.
- :class:`Snapshot`: an immutable, versioned, per-item array view of the labels for one
  model catalogue (:class:`IdMap`), as of one time; saved and loaded without pickle.
- :class:`ServingGuard`: serves from a Guard only while its snapshot is present, readable
  and fresh; otherwise raises ``FailClosedError`` or serves a safe fallback.

See ``docs/signals.md`` for the semantics of expiry, retraction and supersession, the
triage formula and the snapshot interface that filters read.
"""

from .labels import KNOWN_SOURCES, SUBJECT_KINDS, Label
from .reports import (
    DEFAULT_CATEGORY_WEIGHTS,
    Ack,
    Claim,
    LeaseLostError,
    QueueStats,
    Report,
    ReportQueue,
    TriageEntry,
    TriageWeights,
)
from .serving import ServingGuard
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
    "ReportQueue",
    "Report",
    "Ack",
    "Claim",
    "QueueStats",
    "TriageWeights",
    "TriageEntry",
    "LeaseLostError",
    "DEFAULT_CATEGORY_WEIGHTS",
    "ServingGuard",
]
