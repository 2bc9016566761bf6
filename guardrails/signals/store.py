"""LabelStore: the durable home of labels, on SQLite from the standard library.

Durability settings: WAL journal, ``synchronous=FULL`` (a commit returns only after the
write-ahead log is on disk), explicit ``BEGIN IMMEDIATE`` transactions. The file carries
an application id and a schema version (``PRAGMA application_id`` / ``user_version``);
older schemas are migrated forward in one transaction, newer ones are refused, and a file
that is not ours or fails SQLite's check is refused and left untouched.

Every change (a label added or retracted, a report submitted, claimed, resolved, ...) is
appended to the ``audit`` table in the same transaction. Triggers make the audit log
append-only and labels immutable except for one retraction.

One :class:`LabelStore` holds one connection, shared by its threads under a lock (SQLite
serialises writers anyway). Several processes may open the same file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_choice, fail
from ..exceptions import (
    CorruptStoreError,
    NotAGuardrailsStoreError,
    SchemaVersionError,
    StoreError,
    ValidationError,
)
from .labels import (
    Label,
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

#: "GRSL" as a 32-bit integer: marks the file as a recsys-guardrails signals store.
APPLICATION_ID = 0x4752534C
_FORMAT = "recsys-guardrails-signals"
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE categories (name TEXT PRIMARY KEY, declared_at REAL NOT NULL);
CREATE TABLE labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    label_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    subject NOT NULL,
    category TEXT NOT NULL,
    severity REAL NOT NULL,
    confidence REAL NOT NULL,
    source TEXT NOT NULL,
    evidence TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    retracted_at REAL,
    retracted_by TEXT,
    retraction_reason TEXT
);
CREATE INDEX labels_subject ON labels(kind, subject, category);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    source TEXT,
    actor TEXT,
    reason TEXT,
    detail TEXT
);
CREATE INDEX audit_entity ON audit(entity, entity_id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are never deleted; retract them'); END;
CREATE TRIGGER labels_immutable BEFORE UPDATE ON labels
WHEN OLD.retracted_at IS NOT NULL
  OR NEW.label_id IS NOT OLD.label_id OR NEW.kind IS NOT OLD.kind
  OR NEW.subject IS NOT OLD.subject OR NEW.category IS NOT OLD.category
  OR NEW.severity IS NOT OLD.severity OR NEW.confidence IS NOT OLD.confidence
  OR NEW.source IS NOT OLD.source OR NEW.evidence IS NOT OLD.evidence
  OR NEW.created_at IS NOT OLD.created_at OR NEW.expires_at IS NOT OLD.expires_at
BEGIN SELECT RAISE(ABORT, 'labels are immutable except for one retraction'); END;
"""

_SCHEMA_2 = """
CREATE TABLE reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    report_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    subject NOT NULL,
    reporter NOT NULL,
    category TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'resolved', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_token TEXT,
    lease_expires REAL,
    resolved_at REAL,
    resolved_by TEXT,
    outcome TEXT,
    last_error TEXT
);
CREATE INDEX reports_state ON reports(state, created_at);
CREATE INDEX reports_subject ON reports(kind, subject);
CREATE TRIGGER reports_no_delete BEFORE DELETE ON reports
BEGIN SELECT RAISE(ABORT, 'reports are never deleted'); END;
"""

#: Migrations: ``_MIGRATIONS[v]`` upgrades a store from schema ``v - 1`` to ``v``.
_MIGRATIONS: dict[int, str] = {1: _SCHEMA_1, 2: _SCHEMA_2}

#: The schema this version of the library writes.
SCHEMA_VERSION = max(_MIGRATIONS)

_LABEL_COLUMNS = (
    "label_id, subject, category, severity, confidence, source, evidence, created_at, "
    "expires_at, retracted_at, retracted_by, retraction_reason, kind, seq"
)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log.

    Attributes
    ----------
    seq : int
    at : float
        When the change was committed (the store's clock).
    entity : {"label", "report", "schema", "category"}
    entity_id : str
    action : str
        For example ``"add"``, ``"retract"``, ``"submit"``, ``"claim"``, ``"resolve"``,
        ``"lease_expired"``, ``"dead_letter"``, ``"migrate"``.
    source : str or None
        The label source, or the channel of a report.
    actor : str or None
        Who made the change (a reviewer, a service).
    reason : str or None
        Why.
    detail : dict
        Action-specific fields.
    """

    seq: int
    at: float
    entity: str
    entity_id: str
    action: str
    source: str | None
    actor: str | None
    reason: str | None
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
        self.clock = clock
        self._lock = threading.RLock()
        self._conn = _open(self.path, self.check, float(timeout), clock)
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._conn.close()
                self._closed = True

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStore({self.path!r})"

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error.

        Returns only after the commit is durable (WAL, ``synchronous=FULL``).
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"The store {self.path!r} is closed.")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise _wrap(exc, self.path) from exc
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise _wrap(exc, self.path) from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read transaction."""
        with self._lock:
            if self._closed:
                raise StoreError(f"The store {self.path!r} is closed.")
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("COMMIT")

    def _audit(
        self,
        conn: sqlite3.Connection,
        entity: str,
        entity_id: str,
        action: str,
        *,
        source: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit (at, entity, entity_id, action, source, actor, reason, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.clock() if at is None else at,
                entity,
                str(entity_id),
                action,
                source,
                actor,
                reason,
                json.dumps(dict(detail or {}), sort_keys=True, default=str),
            ),
        )

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
        spec = self._spec(
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
        with self._txn() as conn:
            return self._insert_label(conn, spec)

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
        specs = [self._spec(dict(lab), "LabelStore.add_many") for lab in labels]
        with self._txn() as conn:
            return [self._insert_label(conn, s) for s in specs]

    def _spec(self, d: dict, where: str) -> dict:
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
        unknown = set(d) - allowed
        if unknown:
            raise fail(
                "labels",
                where,
                f"dicts with keys among {sorted(allowed)}",
                f"unknown keys {sorted(unknown)}",
                describe=False,
            )
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

    def _insert_label(self, conn: sqlite3.Connection, spec: dict) -> Label:
        where = "LabelStore.add"
        now = self.clock()
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
        cur = conn.execute(
            "INSERT INTO labels (label_id, kind, subject, category, severity, confidence, source, "
            "evidence, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                label_id,
                spec["kind"],
                spec["subject"],
                spec["category"],
                spec["severity"],
                spec["confidence"],
                spec["source"],
                spec["evidence"],
                created,
                spec["expires_at"],
            ),
        )
        conn.execute(
            "INSERT OR IGNORE INTO categories (name, declared_at) VALUES (?, ?)",
            (spec["category"], now),
        )
        self._audit(
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
        return Label(
            label_id,
            spec["subject"],
            spec["category"],
            spec["severity"],
            spec["confidence"],
            spec["source"],
            spec["evidence"],
            created,
            spec["expires_at"],
            None,
            None,
            None,
            spec["kind"],
            int(cur.lastrowid),
        )

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
        with self._txn() as conn:
            return self._retract(conn, label_id, by=by, reason=reason, at=at)

    def _retract(
        self, conn: sqlite3.Connection, label_id: str, *, by: str, reason: str, at=None
    ) -> Label:
        where = "LabelStore.retract"
        label_id = check_text(label_id, "label_id", where, max_len=500)
        by = check_text(by, "by", where)
        reason = check_text(reason, "reason", where)
        now = self.clock()
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
        self._audit(
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

    def declare_categories(self, categories: Iterable[str]) -> None:
        """Make categories known before any label uses them.

        Every snapshot lists every known category, so a filter for a category nobody has
        been labelled with yet compiles (to an empty mask) instead of failing.
        """
        names = [
            check_text(c, "categories", "LabelStore.declare_categories", max_len=200)
            for c in categories
        ]
        with self._txn() as conn:
            now = self.clock()
            for c in names:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO categories (name, declared_at) VALUES (?, ?)", (c, now)
                )
                if cur.rowcount:
                    self._audit(conn, "category", c, "declare", at=now)

    # ------------------------------------------------------------------ reads
    def get(self, label_id: str) -> Label:
        """The stored label with this id (``ValidationError`` if none)."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_LABEL_COLUMNS} FROM labels WHERE label_id = ?", (label_id,)
            ).fetchone()
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
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq", args).fetchall()
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
        with self._lock:
            rows = self._conn.execute("SELECT name FROM categories ORDER BY name").fetchall()
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
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [AuditEntry(*r[:8], json.loads(r[8]) if r[8] else {}) for r in rows]

    def count(self) -> int:
        """Number of stored labels (retracted included)."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM labels").fetchone()[0])

    def integrity_check(self, *, full: bool = True) -> None:
        """Run SQLite's integrity (or quick) check; ``CorruptStoreError`` if it fails."""
        with self._lock:
            _check_integrity(self._conn, self.path, "full" if full else "quick")

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
        with self._read() as conn:
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

    # ------------------------------------------------------------------ for ReportQueue
    def _effective_risk(
        self, conn: sqlite3.Connection, kind: str, subjects: list, at: float
    ) -> dict:
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


# ---------------------------------------------------------------------- opening
def _wrap(exc: sqlite3.DatabaseError, path: str) -> StoreError:
    msg = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in msg:
        return StoreError(f"The store {path!r} is locked by another writer: {msg}.")
    if "malformed" in msg or "not a database" in msg or "corrupt" in msg:
        return CorruptStoreError(f"The store {path!r} is corrupt: {msg}. It was left untouched.")
    return StoreError(f"The store {path!r} failed: {msg}.")


def _check_integrity(conn: sqlite3.Connection, path: str, check: str) -> None:
    if check == "none":
        return
    pragma = "integrity_check" if check == "full" else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CorruptStoreError(
            f"The store {path!r} fails SQLite's {pragma}: {exc}. It was left untouched."
        ) from exc
    if [r[0] for r in rows] != ["ok"]:
        detail = "; ".join(str(r[0]) for r in rows[:3])
        raise CorruptStoreError(
            f"The store {path!r} fails SQLite's {pragma}: {detail}. It was left untouched."
        )


def _open(path: str, check: str, timeout: float, clock: Callable[[], float]) -> sqlite3.Connection:
    memory = path == ":memory:"
    exists = not memory and os.path.exists(path)
    if exists:
        if os.path.isdir(path):
            raise NotAGuardrailsStoreError(
                f"The path {path!r} is a directory, not a recsys-guardrails store."
            )
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:
            raise NotAGuardrailsStoreError(
                f"The file {path!r} is not a recsys-guardrails store (not an SQLite database); it "
                "was left untouched."
            )
    target = path if memory else f"file:{os.path.abspath(path)}?mode={'rw' if exists else 'rwc'}"
    try:
        conn = sqlite3.connect(
            target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=not memory
        )
    except sqlite3.Error as exc:
        raise StoreError(f"Cannot open the store {path!r}: {exc}.") from exc
    try:
        _prepare(conn, path, memory, check, clock)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(
    conn: sqlite3.Connection, path: str, memory: bool, check: str, clock: Callable[[], float]
) -> None:
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        n_objects = int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise _wrap(exc, path) from exc
    fresh = app_id == 0 and version == 0 and n_objects == 0
    if not fresh and app_id != APPLICATION_ID:
        raise NotAGuardrailsStoreError(
            f"The file {path!r} is an SQLite database of another application "
            f"(application_id {app_id:#x}); it was left untouched."
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"The store {path!r} has schema version {version}; this version of recsys-guardrails "
            f"understands up to {SCHEMA_VERSION}. Upgrade recsys-guardrails; the file was left "
            "untouched."
        )
    if not fresh:
        _check_integrity(conn, path, check)
    if not memory:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"The store {path!r} cannot use write-ahead logging (journal mode {mode!r})."
            )
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if version < SCHEMA_VERSION:
        _migrate(conn, path, version, clock)


def _migrate(
    conn: sqlite3.Connection,
    path: str,
    version: int,
    clock: Callable[[], float],
    upto: int | None = None,
) -> None:
    """Apply migrations ``version + 1 .. upto`` in one transaction."""
    target = SCHEMA_VERSION if upto is None else upto
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if current == 0 and int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]):
            raise NotAGuardrailsStoreError(
                f"The file {path!r} changed while it was opened; it was left untouched."
            )
        now = clock()
        for v in range(current + 1, target + 1):
            for stmt in _statements(_MIGRATIONS[v]):
                conn.execute(stmt)
            if v == 1:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (_FORMAT,))
                conn.execute("INSERT INTO meta (key, value) VALUES ('created_at', ?)", (repr(now),))
            conn.execute(f"PRAGMA user_version = {v}")
            conn.execute(
                "INSERT INTO audit (at, entity, entity_id, action, detail) VALUES (?, 'schema', "
                "?, ?, ?)",
                (
                    now,
                    str(v),
                    "create" if v == 1 else "migrate",
                    json.dumps({"from": v - 1, "to": v}),
                ),
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
