"""The SQLite layer shared by :class:`LabelStore` and :class:`ReportQueue`.

One :class:`Database` owns one connection and the lock its threads share (SQLite
serialises writers anyway), the write and read transactions, the append-only audit log,
and the schema with its migrations. Labels and reports live in one file so that resolving
a report writes its labels in the same transaction; both classes write through this
layer, neither reaches into the other.

Durability settings: WAL journal, ``synchronous=FULL`` (a commit returns only after the
write-ahead log is on disk), explicit ``BEGIN IMMEDIATE`` transactions. The file carries
an application id and a schema version (``PRAGMA application_id`` / ``user_version``);
older schemas are migrated forward in one transaction, newer ones are refused, and a file
that is not ours or fails SQLite's check is refused and left untouched.

Errors: every SQLite error leaving this layer is a :class:`~guardrails.exceptions.StoreError`
(:class:`~guardrails.exceptions.CorruptStoreError` for a damaged file); a write that
fails, including its commit (a full disk, a read-only file), is rolled back, so the
caller never reports as stored what is not on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..exceptions import (
    CorruptStoreError,
    NotAGuardrailsStoreError,
    SchemaVersionError,
    StoreError,
)

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Database",
    "as_store_error",
    "migrate",
]

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


class Database:
    """One SQLite connection, its lock, transactions and the audit log.

    Parameters
    ----------
    path : str
        A database file (opened if it exists, created otherwise) or ``":memory:"``.
    check : {"quick", "full", "none"}
        Check run when an existing file is opened.
    timeout : float
        Seconds to wait for another process's write lock.
    clock : callable
        Current time in seconds since the epoch; audit entries are stamped with it.

    Attributes
    ----------
    conn : sqlite3.Connection
        Used only under ``lock`` (every method here takes it).
    lock : threading.RLock
        Held for the whole of a transaction; a caller that needs several statements to
        see one state (the group commit of reports) takes it around them.
    """

    def __init__(self, path: str, *, check: str, timeout: float, clock: Callable[[], float]):
        self.path = path
        self.clock = clock
        self.lock = threading.RLock()
        self.conn = _open(path, check, float(timeout), clock)
        self.closed = False

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self.lock:
            if not self.closed:
                self.conn.close()
                self.closed = True

    def _live(self) -> sqlite3.Connection:
        if self.closed:
            raise StoreError(f"The store {self.path!r} is closed.")
        return self.conn

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error.

        Returns only after the commit is durable (WAL, ``synchronous=FULL``). An SQLite
        failure (``BEGIN``, a statement in the block, or ``COMMIT``: locked, full disk,
        read-only file) raises ``StoreError`` after rolling back; any other error in the
        block is re-raised as it is, after the rollback.
        """
        with self._transaction("BEGIN IMMEDIATE", end="ROLLBACK") as conn:
            yield conn
            conn.execute("COMMIT")  # a failed commit is rolled back like a failed statement

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read transaction (several statements see one state)."""
        with self._transaction("BEGIN", end="COMMIT") as conn:
            yield conn
            _quietly(conn, "COMMIT")

    @contextlib.contextmanager
    def _transaction(self, begin: str, *, end: str) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; a failure in it runs ``end`` quietly, and an
        SQLite failure comes out as ``StoreError``."""
        with self.lock:
            conn = self._live()
            self._begin(conn, begin)
            try:
                yield conn
            except sqlite3.DatabaseError as exc:
                # A statement failed (a full disk, a read-only file, a damaged page): the
                # whole transaction goes, and the caller sees the library's error.
                _quietly(conn, end)
                raise as_store_error(exc, self.path) from exc
            except BaseException:
                _quietly(conn, end)
                raise

    def _begin(self, conn: sqlite3.Connection, statement: str) -> None:
        """Open a transaction; SQLite's refusal (locked, damaged) as the library's error."""
        try:
            conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise as_store_error(exc, self.path) from exc

    def query(self, sql: str, args: Any = ()) -> list[tuple]:
        """Every row of one read statement."""
        return self._fetch(sql, args, sqlite3.Cursor.fetchall)

    def query_one(self, sql: str, args: Any = ()) -> tuple | None:
        """The first row of one read statement, or ``None``."""
        return self._fetch(sql, args, sqlite3.Cursor.fetchone)

    def _fetch(self, sql: str, args: Any, fetch: Callable[[sqlite3.Cursor], Any]) -> Any:
        with self.lock:
            conn = self._live()
            try:
                return fetch(conn.execute(sql, args))
            except sqlite3.DatabaseError as exc:
                raise as_store_error(exc, self.path) from exc

    # ------------------------------------------------------------------ audit log
    def audit(
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
        """Append one entry to the audit log inside the caller's write transaction."""
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

    # ------------------------------------------------------------------ schema
    @property
    def schema_version(self) -> int:
        row = self.query_one("PRAGMA user_version")
        return int(row[0]) if row else 0

    def integrity_check(self, *, full: bool = True) -> None:
        """Run SQLite's integrity (or quick) check; ``CorruptStoreError`` if it fails."""
        with self.lock:
            check_integrity(self._live(), self.path, "full" if full else "quick")


# ---------------------------------------------------------------------- errors
def as_store_error(exc: sqlite3.DatabaseError, path: str) -> StoreError:
    """The library's error for an SQLite failure on ``path``."""
    msg = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in msg:
        return StoreError(f"The store {path!r} is locked by another writer: {msg}.")
    if "malformed" in msg or "not a database" in msg or "corrupt" in msg:
        return CorruptStoreError(f"The store {path!r} is corrupt: {msg}. It was left untouched.")
    if "full" in msg:
        return StoreError(f"The store {path!r} is full (no space left for the write): {msg}.")
    if "readonly" in msg or "read-only" in msg:
        return StoreError(f"The store {path!r} is read-only: {msg}.")
    return StoreError(f"The store {path!r} failed: {msg}.")


def check_integrity(conn: sqlite3.Connection, path: str, check: str) -> None:
    """SQLite's ``integrity_check`` (``"full"``) or ``quick_check``; nothing for ``"none"``."""
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


# ---------------------------------------------------------------------- opening
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
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise as_store_error(exc, path) from exc
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
        raise as_store_error(exc, path) from exc
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
        check_integrity(conn, path, check)
    if not memory:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"The store {path!r} cannot use write-ahead logging (journal mode {mode!r})."
            )
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if version < SCHEMA_VERSION:
        migrate(conn, path, version, clock)


def migrate(
    conn: sqlite3.Connection,
    path: str,
    version: int,
    clock: Callable[[], float],
    upto: int | None = None,
) -> None:
    """Apply migrations ``version + 1 .. upto`` (default: the current schema) in one
    transaction, each recorded in the audit log."""
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
        _quietly(conn, "ROLLBACK")
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


def _quietly(conn: sqlite3.Connection, statement: str) -> None:
    """End a transaction that is already failing; a second error would hide the first."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute(statement)
