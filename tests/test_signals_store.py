"""LabelStore: opening, refusing foreign/newer/corrupt files, migrations, idempotency, audit."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest

import guardrails.signals as sig
from guardrails.exceptions import (
    CorruptStoreError,
    NotAGuardrailsStoreError,
    SchemaVersionError,
    StoreError,
    ValidationError,
)
from guardrails.signals import LabelStore
from guardrails.signals import store as store_mod


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class Clock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_exports():
    for name in ("LabelStore", "ReportQueue", "Snapshot", "Label", "IdMap", "ServingGuard"):
        assert name in sig.__all__
        assert getattr(sig, name) is not None


def test_create_and_reopen_file(tmp_path):
    path = tmp_path / "signals.db"
    with LabelStore(path) as s:
        assert s.schema_version == store_mod.SCHEMA_VERSION
        s.add("acct-1", "csam_seller", label_id="L1", source="hash_match", evidence="hash:abc")
    with LabelStore(path, check="full") as s:
        lab = s.get("L1")
        assert (lab.subject, lab.category, lab.source, lab.evidence) == (
            "acct-1",
            "csam_seller",
            "hash_match",
            "hash:abc",
        )
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA application_id").fetchone()[0] == store_mod.APPLICATION_ID


def test_memory_store_works():
    s = LabelStore(":memory:")
    s.add(1, "spam")
    assert s.count() == 1


def test_random_bytes_file_refused_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = _digest(path)
    with pytest.raises(NotAGuardrailsStoreError, match="not a recsys-guardrails store"):
        LabelStore(path)
    assert _digest(path) == before


def test_foreign_sqlite_file_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'x')")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(NotAGuardrailsStoreError, match="another application"):
        LabelStore(path)
    assert _digest(path) == before
    assert not (tmp_path / "other.db-wal").exists()


def test_directory_refused(tmp_path):
    with pytest.raises(NotAGuardrailsStoreError):
        LabelStore(tmp_path)


def test_newer_schema_refused_untouched(tmp_path):
    path = tmp_path / "future.db"
    LabelStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(SchemaVersionError, match="schema version"):
        LabelStore(path)
    assert _digest(path) == before


def test_corrupt_file_refused_untouched(tmp_path):
    path = tmp_path / "corrupt.db"
    with LabelStore(path) as s:
        s.add_many(
            {"subject": i, "category": "spam", "label_id": f"L{i}", "evidence": "x" * 200}
            for i in range(400)
        )
    # Fold the WAL into the main file so that the damage below hits live pages.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    for p in range(2, len(data) // page):
        data[p * page : p * page + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(CorruptStoreError, match="left untouched"):
        LabelStore(path)
    assert _digest(path) == before


def test_migration_from_schema_1(tmp_path):
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    store_mod._migrate(conn, str(path), 0, lambda: 5.0, upto=1)
    conn.execute(
        "INSERT INTO labels (label_id, kind, subject, category, severity, confidence, source, "
        "created_at) "
        "VALUES ('old', 'account', 3, 'spam', 0.5, 1.0, 'reviewer', 1.0)"
    )
    conn.close()
    with LabelStore(path) as s:
        assert s.schema_version == store_mod.SCHEMA_VERSION
        assert s.get("old").severity == 0.5
        actions = [(a.entity, a.entity_id, a.action) for a in s.audit(entity="schema")]
        assert actions == [("schema", "1", "create"), ("schema", "2", "migrate")]
        # The migrated schema has the report tables.
        q = sig.ReportQueue(s)
        assert not q.submit(1, "spam", reporter=2, key="k").duplicate


def test_idempotent_add_and_conflict():
    clock = Clock()
    s = LabelStore(clock=clock)
    a = s.add(5, "spam", severity=0.4, label_id="x")
    clock.t += 10
    b = s.add(5, "spam", severity=0.4, label_id="x")  # retry: created_at defaulted, same content
    assert a == b
    assert s.count() == 1
    assert len([e for e in s.audit("x") if e.action == "add"]) == 1
    with pytest.raises(ValidationError, match="already stored with different content"):
        s.add(5, "spam", severity=0.9, label_id="x")
    with pytest.raises(ValidationError):
        s.add("5", "spam", severity=0.4, label_id="x")  # a str id is another subject
    assert s.count() == 1


def test_add_many_is_atomic():
    s = LabelStore()
    s.add(1, "spam", label_id="taken", severity=0.5)
    with pytest.raises(ValidationError):
        s.add_many(
            [
                {"subject": 2, "category": "spam", "label_id": "new"},
                {"subject": 1, "category": "spam", "label_id": "taken", "severity": 0.9},
            ]
        )
    assert s.count() == 1
    with pytest.raises(ValidationError):
        s.get("new")


def test_retraction_keeps_history_and_is_idempotent():
    clock = Clock(100.0)
    s = LabelStore(clock=clock)
    s.add(1, "csam_buyer", label_id="L", created_at=50.0)
    clock.t = 200.0
    r = s.retract("L", by="reviewer-7", reason="mistaken identity")
    assert (r.retracted_at, r.retracted_by, r.retraction_reason) == (
        200.0,
        "reviewer-7",
        "mistaken identity",
    )
    again = s.retract("L", by="someone-else", reason="again")
    assert again.retracted_by == "reviewer-7"
    assert [lab.label_id for lab in s.labels(1)] == ["L"]
    assert [e.action for e in s.audit("L")] == ["add", "retract"]
    assert s.effective(1, at=150.0)["csam_buyer"].label_id == "L"
    assert s.effective(1, at=250.0) == {}
    with pytest.raises(ValidationError, match="stored label"):
        s.retract("nope", by="x", reason="y")


def test_audit_log_and_labels_are_append_only():
    s = LabelStore()
    s.add(1, "spam", label_id="L")
    conn = s._conn
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET action = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        conn.execute("DELETE FROM labels")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE labels SET severity = 0.1")
    s.retract("L", by="a", reason="b")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE labels SET retracted_at = NULL")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"severity": 1.5},
            "'severity' parameter of LabelStore.add must be a finite float in \\[0, 1\\]",
        ),
        ({"confidence": float("nan")}, "'confidence' parameter"),
        ({"source": ""}, "'source' parameter"),
        ({"kind": "post"}, "'kind' parameter"),
        (
            {"created_at": 10.0, "expires_at": 5.0},
            "'expires_at' parameter of LabelStore.add must be after",
        ),
        ({"created_at": datetime(2024, 1, 1)}, "timezone-aware"),
    ],
)
def test_validation_messages(kwargs, match):
    s = LabelStore()
    with pytest.raises(ValidationError, match=match):
        s.add(1, "spam", **kwargs)
    with pytest.raises(ValidationError, match="'subject' parameter"):
        s.add(True, "spam")
    assert s.count() == 0


def test_aware_datetimes_accepted():
    s = LabelStore()
    t = datetime(2024, 1, 1, tzinfo=UTC)
    lab = s.add(1, "spam", created_at=t)
    assert lab.created_at == t.timestamp()


def test_declared_categories_listed_in_snapshot():
    s = LabelStore()
    s.declare_categories(["csam_seller", "csam_buyer"])
    snap = s.snapshot(np.arange(4))
    assert snap.categories == ("csam_buyer", "csam_seller")
    assert not snap.has("csam_seller").any()
    with pytest.raises(ValidationError, match="'category' parameter of Snapshot.has"):
        snap.has("csam_seler")


def test_closed_store_raises():
    s = LabelStore()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.add(1, "spam")
