"""LabelStore: the durable home of labels, on SQLite from the standard library.

Storage (connection, transactions, durability settings, the audit log, schema versions
and migrations) is the shared layer in :mod:`guardrails.signals._db`: WAL journal,
``synchronous=FULL``, explicit ``BEGIN IMMEDIATE`` transactions; older schemas are
migrated forward, newer ones refused, and a file that is not ours or fails SQLite's check
is refused and left untouched.

Every change (a label added or retracted, a report submitted, claimed, resolved, ...) is
appended to the ``audit`` table in the same transaction. Triggers make the audit log
append-only and labels immutable except for one retraction.

The label operations that run inside a caller's transaction (:func:`label_spec`,
:func:`insert_label`, :func:`retract_label`, :func:`effective_risk`) are module
functions, so that :class:`~guardrails.signals.ReportQueue` writes labels in its own
transactions without reaching into the store.

One :class:`LabelStore` holds one connection, shared by its threads under a lock (SQLite
serialises writers anyway). Several processes may open the same file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_choice, fail
from ..exceptions import ValidationError
from ._db import APPLICATION_ID, SCHEMA_VERSION, Database, migrate  # noqa: F401 (re-exported)
from .labels import (
    Label,
    check_keys,
    check_kind,
    check_subject,
    check_text,
    check_time,
    check_unit,
    in_force,
    select_effective,
)
from .snapshot import Snapshot, as_id_map, build_snapshot

__all__ = ["LabelStore", "AuditEntry", "SCHEMA_VERSION"]

# The schema's names stay importable from here (APPLICATION_ID, SCHEMA_VERSION and the
# migration step, which tests use to build an old schema).
_migrate = migrate

_LABEL_COLUMNS = (
    "label_id, subject, category, severity, confidence, source, evidence, created_at, "
    "expires_at, retracted_at, retracted_by, retraction_reason, kind, seq"
)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log."""

    #: Position in the log (increasing).
    seq: int
    #: When the change was committed (the store's clock).
    at: float
    #: What changed: ``"label"``, ``"report"``, ``"schema"`` or ``"category"``.
    entity: str
    #: Id of the label, report, schema version or category that changed.
    entity_id: str
    #: For example ``"add"``, ``"retract"``, ``"submit"``, ``"claim"``, ``"resolve"``,
    #: ``"lease_expired"``, ``"dead_letter"``, ``"migrate"``.
    action: str
    #: The label source, or the channel of a report.
    source: str | None
    #: Who made the change (a reviewer, a service).
    actor: str | None
    #: Why.
    reason: str | None
    #: Action-specific fields.
    detail: dict


def _label_from_row(row) -> Label:
    return Label(*row)


class LabelStore:
    """Durable labels with an audit log, on SQLite.

    Parameters
    ----------
    path : str or path-like
        A database file (opened if it exists, created otherwise) or ``":memory:"``.
    check : {"quick", "full", "none"}, keyword-only
        Check run when an existing file is opened: SQLite's ``quick_check``,
        ``integrity_check`` (reads every page) or nothing.
    timeout : float, keyword-only
        Seconds to wait for another process's write lock.
    clock : callable, keyword-only
        Returns the current time in seconds since the epoch (for tests).

    Raises
    ------
    NotAGuardrailsStoreError
        The file exists and is not a recsys-guardrails store (it is not modified).
    SchemaVersionError
        The file was written by a newer schema.
    CorruptStoreError
        The file fails SQLite's check.

    Attributes
    ----------
    database : Database
        The shared SQLite layer (:mod:`guardrails.signals._db`): connection, lock,
        transactions and audit log. A :class:`ReportQueue` over this store writes through
        it, so that resolving a report and writing its labels share one transaction.

    Examples
    --------
    >>> store = LabelStore(":memory:")
    >>> store.add(42, "csam_seller", severity=1.0, source="reviewer", label_id="case-7").category
    'csam_seller'
    """

    def __init__(
        self,
        path: str | os.PathLike = ":memory:",
        *,
        check: str = "quick",
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = os.fspath(path)
        self.check = check_choice(check, "check", "LabelStore", ("quick", "full", "none"))
        self.database = Database(self.path, check=self.check, timeout=float(timeout), clock=clock)

    # ------------------------------------------------------------------ plumbing
    @property
    def clock(self) -> Callable[[], float]:
        return self.database.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.database.clock = clock

    # The connection and its lock belong to the shared layer; these two names stay for
    # code (and tests) that reach the raw connection, for example to inject faults.
    @property
    def _conn(self) -> sqlite3.Connection:
        return self.database.conn

    @_conn.setter
    def _conn(self, conn) -> None:
        self.database.conn = conn

    @property
    def _lock(self):
        return self.database.lock

    @property
    def schema_version(self) -> int:
        return self.database.schema_version

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.database.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStore({self.path!r})"

    # ------------------------------------------------------------------ writes
    def add(
        self,
        subject: int | str,
        category: str,
        *,
        severity: float = 1.0,
        confidence: float = 1.0,
        source: str = "reviewer",
        evidence: str | None = None,
        label_id: str | None = None,
        created_at=None,
        expires_at=None,
        kind: str = "account",
        actor: str | None = None,
        reason: str | None = None,
    ) -> Label:
        """Add a label, durably; idempotent when ``label_id`` is supplied.

        Parameters
        ----------
        subject : int or str
            External id of the account or item.
        category : str
        severity : float in [0, 1]
            0 records a clearance (supersedes earlier labels, sets no flag).
        confidence : float in [0, 1]
        source : str
        evidence : str, optional
        label_id : str, optional
            Idempotency key: adding a label whose id exists returns the stored label
            (and writes nothing) if the content matches, and raises ``ValidationError``
            if it differs. Generated when omitted (then retries are not idempotent).
        created_at, expires_at : float or aware datetime, optional
            ``created_at`` defaults to now; ``expires_at`` must be after it.
        kind : {"account", "item"}
        actor, reason : str, optional
            Recorded in the audit log.

        Returns
        -------
        Label
        """
        spec = label_spec(
            dict(
                subject=subject,
                category=category,
                severity=severity,
                confidence=confidence,
                source=source,
                evidence=evidence,
                label_id=label_id,
                created_at=created_at,
                expires_at=expires_at,
                kind=kind,
                actor=actor,
                reason=reason,
            ),
            "LabelStore.add",
        )
        with self.database.write() as conn:
            return insert_label(self.database, conn, spec)

    def add_many(self, labels: Iterable[Mapping[str, Any]]) -> list[Label]:
        """Add several labels in one transaction (all or none).

        Parameters
        ----------
        labels : iterable of dict
            Keyword arguments of :meth:`add` (``subject`` and ``category`` required).

        Returns
        -------
        list of Label
        """
        specs = [label_spec(dict(lab), "LabelStore.add_many") for lab in labels]
        with self.database.write() as conn:
            return [insert_label(self.database, conn, s) for s in specs]

    def retract(self, label_id: str, *, by: str, reason: str, at=None) -> Label:
        """Withdraw a label without erasing it; idempotent.

        Parameters
        ----------
        label_id : str
        by : str
            Who retracts (recorded on the label and in the audit log).
        reason : str
            Why (recorded in both).
        at : float or aware datetime, optional
            Retraction time; defaults to now. Snapshots as of an earlier time still see
            the label.

        Returns
        -------
        Label
            The label with its retraction; the existing one if it was already retracted.

        Raises
        ------
        ValidationError
            No label has this id.
        """
        with self.database.write() as conn:
            return retract_label(self.database, conn, label_id, by=by, reason=reason, at=at)

    def declare_categories(self, categories: Iterable[str]) -> None:
        """Make categories known before any label uses them.

        Every snapshot lists every known category, so a filter for a category nobody has
        been labelled with yet compiles (to an empty mask) instead of failing.
        """
        names = [
            check_text(c, "categories", "LabelStore.declare_categories", max_len=200)
            for c in categories
        ]
        with self.database.write() as conn:
            now = self.clock()
            for c in names:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO categories (name, declared_at) VALUES (?, ?)", (c, now)
                )
                if cur.rowcount:
                    self.database.audit(conn, "category", c, "declare", at=now)

    # ------------------------------------------------------------------ reads
    def get(self, label_id: str) -> Label:
        """The stored label with this id (``ValidationError`` if none)."""
        row = self.database.query_one(
            f"SELECT {_LABEL_COLUMNS} FROM labels WHERE label_id = ?", (label_id,)
        )
        if row is None:
            raise fail("label_id", "LabelStore.get", "the id of a stored label", label_id)
        return _label_from_row(row)

    def labels(
        self,
        subject: int | str | None = None,
        *,
        category: str | None = None,
        kind: str = "account",
    ) -> list[Label]:
        """Every stored label (retracted and expired included), oldest first.

        Parameters
        ----------
        subject : int or str, optional
            Only this subject's labels.
        category : str, optional
        kind : {"account", "item"}
        """
        where = "LabelStore.labels"
        kind = check_kind(kind, where)
        sql = f"SELECT {_LABEL_COLUMNS} FROM labels WHERE kind = ?"
        args: list[Any] = [kind]
        if subject is not None:
            sql += " AND subject = ?"
            args.append(check_subject(subject, "subject", where))
        if category is not None:
            sql += " AND category = ?"
            args.append(category)
        rows = self.database.query(sql + " ORDER BY seq", args)
        return [_label_from_row(r) for r in rows]

    def effective(self, subject: int | str, *, at=None, kind: str = "account") -> dict[str, Label]:
        """The effective label per category of one subject as of ``at`` (default now).

        Clearances (severity 0) are included; see :mod:`guardrails.signals.labels`.
        """
        t = self.clock() if at is None else check_time(at, "at", "LabelStore.effective")
        best: dict[str, Label] = {}
        for lab in self.labels(subject, kind=kind):
            if not lab.in_force(t):
                continue
            cur = best.get(lab.category)
            if cur is None or (lab.created_at, lab.seq) > (cur.created_at, cur.seq):
                best[lab.category] = lab
        return best

    def categories(self) -> tuple[str, ...]:
        """Every category the store knows (used by a label or declared), sorted."""
        rows = self.database.query("SELECT name FROM categories ORDER BY name")
        return tuple(r[0] for r in rows)

    def audit(
        self, entity_id: str | None = None, *, entity: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, oldest first, optionally for one entity."""
        sql = (
            "SELECT seq, at, entity, entity_id, action, source, actor, reason, detail "
            "FROM audit WHERE 1=1"
        )
        args: list[Any] = []
        if entity_id is not None:
            sql += " AND entity_id = ?"
            args.append(str(entity_id))
        if entity is not None:
            sql += " AND entity = ?"
            args.append(entity)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = self.database.query(sql, args)
        return [AuditEntry(*r[:8], json.loads(r[8]) if r[8] else {}) for r in rows]

    def count(self) -> int:
        """Number of stored labels (retracted included)."""
        return int(self.database.query("SELECT count(*) FROM labels")[0][0])

    def integrity_check(self, *, full: bool = True) -> None:
        """Run SQLite's integrity (or quick) check; ``CorruptStoreError`` if it fails."""
        self.database.integrity_check(full=full)

    # ------------------------------------------------------------------ snapshots
    def snapshot(
        self, id_map, *, at=None, kind: str = "account", categories: Iterable[str] = ()
    ) -> Snapshot:
        """Build an immutable snapshot of the effective labels for a model catalogue.

        Parameters
        ----------
        id_map : IdMap, array-like of shape (n_items,) or mapping
            External id of every model index (see :class:`IdMap`). Reuse one
            :class:`IdMap` across snapshots to skip its sort.
        at : float or aware datetime, optional, keyword-only
            Labels as of this time: created at or before it, not expired and not
            retracted at it. Defaults to now.
        kind : {"account", "item"}, keyword-only
            Which labels to read.
        categories : iterable of str, keyword-only
            Extra categories to list even if the store has never seen them.

        Returns
        -------
        Snapshot
            ``unknown_ids`` lists labelled subjects missing from ``id_map``.
        """
        where = "LabelStore.snapshot"
        kind = check_kind(kind, where)
        t = self.clock() if at is None else check_time(at, "at", where)
        extra = [check_text(c, "categories", where, max_len=200) for c in categories]
        imap = as_id_map(id_map)
        with self.database.read() as conn:
            known = [r[0] for r in conn.execute("SELECT name FROM categories")]
            rows = conn.execute(
                # A full scan: through the (kind, subject, category) index it would become
                # random row lookups, ten times slower.
                "SELECT subject, category, severity, confidence, source, created_at, seq "
                "FROM labels NOT INDEXED "
                "WHERE kind = ? AND created_at <= ? AND (expires_at IS NULL OR expires_at > ?) "
                "AND (retracted_at IS NULL OR retracted_at > ?)",
                (kind, t, t, t),
            ).fetchall()
        n = len(rows)
        if n:
            subj, cat, sev, conf, src, created, seq = zip(*rows, strict=False)
        else:
            subj = cat = sev = conf = src = created = seq = ()
        return build_snapshot(
            kind=kind,
            id_map=imap,
            categories=set(known) | set(extra),
            subjects=list(subj),
            category=list(cat),
            severity=np.array(sev, dtype=np.float32) if n else np.zeros(0, np.float32),
            confidence=np.array(conf, dtype=np.float32) if n else np.zeros(0, np.float32),
            source=list(src),
            created_at=np.array(created, dtype=np.float64) if n else np.zeros(0),
            seq=np.array(seq, dtype=np.int64) if n else np.zeros(0, np.int64),
            at=t,
            created=self.clock(),
        )


# ---------------------------------------------------------------------- label operations
# Run inside a caller's transaction: LabelStore's methods and ReportQueue.resolve use them.


def label_spec(d: dict, where: str) -> dict:
    """Checked arguments of one label (the keyword arguments of :meth:`LabelStore.add`)."""
    allowed = {
        "subject",
        "category",
        "severity",
        "confidence",
        "source",
        "evidence",
        "label_id",
        "created_at",
        "expires_at",
        "kind",
        "actor",
        "reason",
    }
    check_keys(d, allowed, "labels", where)
    if "subject" not in d or "category" not in d:
        raise fail("labels", where, "dicts with 'subject' and 'category'", d)
    given_created = d.get("created_at") is not None
    created = check_time(d.get("created_at"), "created_at", where, optional=True)
    expires = check_time(d.get("expires_at"), "expires_at", where, optional=True)
    spec = dict(
        subject=check_subject(d["subject"], "subject", where),
        category=check_text(d["category"], "category", where, max_len=200),
        severity=check_unit(d.get("severity", 1.0), "severity", where),
        confidence=check_unit(d.get("confidence", 1.0), "confidence", where),
        source=check_text(d.get("source", "reviewer"), "source", where, max_len=200),
        evidence=check_text(d.get("evidence"), "evidence", where, optional=True),
        label_id=check_text(d.get("label_id"), "label_id", where, optional=True, max_len=500),
        created_at=created,
        expires_at=expires,
        kind=check_kind(d.get("kind", "account"), where),
        actor=check_text(d.get("actor"), "actor", where, optional=True),
        reason=check_text(d.get("reason"), "reason", where, optional=True),
        _given_created=given_created,
    )
    return spec


def insert_label(db: Database, conn: sqlite3.Connection, spec: dict) -> Label:
    """Insert one label (from :func:`label_spec`) in the write transaction ``conn``; idempotent
    by label id, audited."""
    where = "LabelStore.add"
    now = db.clock()
    created = spec["created_at"] if spec["created_at"] is not None else now
    if spec["expires_at"] is not None and spec["expires_at"] <= created:
        raise fail("expires_at", where, f"after created_at ({created})", spec["expires_at"])
    label_id = spec["label_id"] or f"auto-{uuid.uuid4().hex}"
    row = conn.execute(
        f"SELECT {_LABEL_COLUMNS} FROM labels WHERE label_id = ?", (label_id,)
    ).fetchone()
    if row is not None:
        old = _label_from_row(row)
        same = (
            old.subject == spec["subject"]
            and type(old.subject) is type(spec["subject"])
            and old.category == spec["category"]
            and old.severity == spec["severity"]
            and old.confidence == spec["confidence"]
            and old.source == spec["source"]
            and old.evidence == spec["evidence"]
            and old.kind == spec["kind"]
            and old.expires_at == spec["expires_at"]
            and (not spec["_given_created"] or old.created_at == created)
        )
        if not same:
            raise ValidationError(
                f"The 'label_id' parameter of {where} must identify one label. Got "
                f"{label_id!r}, already stored with different content, instead."
            )
        return old
    # The stored columns in Label's field order, so the new Label is these values.
    values = (
        label_id,
        spec["subject"],
        spec["category"],
        spec["severity"],
        spec["confidence"],
        spec["source"],
        spec["evidence"],
        created,
        spec["expires_at"],
    )
    cur = conn.execute(
        "INSERT INTO labels (label_id, subject, category, severity, confidence, source, "
        "evidence, created_at, expires_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*values, spec["kind"]),
    )
    conn.execute(
        "INSERT OR IGNORE INTO categories (name, declared_at) VALUES (?, ?)",
        (spec["category"], now),
    )
    db.audit(
        conn,
        "label",
        label_id,
        "add",
        source=spec["source"],
        actor=spec["actor"],
        reason=spec["reason"],
        detail={
            "kind": spec["kind"],
            "subject": spec["subject"],
            "category": spec["category"],
            "severity": spec["severity"],
            "confidence": spec["confidence"],
            "evidence": spec["evidence"],
            "created_at": created,
            "expires_at": spec["expires_at"],
        },
        at=now,
    )
    # Not retracted (retracted_at, retracted_by, retraction_reason); seq as stored.
    return Label(*values, None, None, None, spec["kind"], int(cur.lastrowid))


def retract_label(
    db: Database, conn: sqlite3.Connection, label_id: str, *, by: str, reason: str, at=None
) -> Label:
    """Retract one label in the write transaction ``conn``; idempotent, audited."""
    where = "LabelStore.retract"
    label_id = check_text(label_id, "label_id", where, max_len=500)
    by = check_text(by, "by", where)
    reason = check_text(reason, "reason", where)
    now = db.clock()
    when = now if at is None else check_time(at, "at", where)
    row = conn.execute(
        f"SELECT {_LABEL_COLUMNS} FROM labels WHERE label_id = ?", (label_id,)
    ).fetchone()
    if row is None:
        raise fail("label_id", where, "the id of a stored label", label_id)
    old = _label_from_row(row)
    if old.retracted_at is not None:
        return old
    conn.execute(
        "UPDATE labels SET retracted_at = ?, retracted_by = ?, retraction_reason = ? WHERE "
        "label_id = ?",
        (when, by, reason, label_id),
    )
    db.audit(
        conn,
        "label",
        label_id,
        "retract",
        source=old.source,
        actor=by,
        reason=reason,
        detail={"retracted_at": when, "subject": old.subject, "category": old.category},
        at=now,
    )
    return Label(*(row[:9] + (when, by, reason) + row[12:]))


def effective_risk(conn: sqlite3.Connection, kind: str, subjects: list, at: float) -> dict:
    """Max ``severity * confidence`` over each subject's effective labels as of ``at``."""
    risk: dict = {}
    if not subjects:
        return risk
    for start in range(0, len(subjects), 500):
        chunk = subjects[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT subject, category, severity, confidence, created_at, seq, expires_at, "
            "retracted_at "
            f"FROM labels WHERE kind = ? AND subject IN ({marks})",
            [kind, *chunk],
        ).fetchall()
        rows = [r for r in rows if in_force(r[4], r[6], r[7], at)]
        if not rows:
            continue
        keys = {}
        group = np.fromiter(
            (keys.setdefault((type(r[0]) is str, r[0], r[1]), len(keys)) for r in rows),
            dtype=np.int64,
            count=len(rows),
        )
        win = select_effective(
            group,
            np.array([r[4] for r in rows], dtype=np.float64),
            np.array([r[5] for r in rows], dtype=np.int64),
        )
        for i in win.tolist():
            r = rows[i]
            key = (type(r[0]) is str, r[0])
            risk[key] = max(risk.get(key, 0.0), float(r[2]) * float(r[3]))
    return risk
