"""ReportQueue: durable intake of user reports, reviewer leases, dead letters and triage.

Guarantees (see ``docs/signals.md``):

- :meth:`ReportQueue.submit` returns (acknowledges) only after the report is committed to
  disk; resubmitting the same idempotency key returns the stored report and writes
  nothing.
- Concurrent :meth:`~ReportQueue.submit` calls are **group-committed**: the first waiting
  caller becomes the leader and commits every queued report in one transaction (one
  fsync), each in its own savepoint, so a report that fails (a conflicting idempotency
  key) fails only its own caller. Every caller returns only after the transaction holding
  its report has committed, or raises; a caller never waits longer than
  ``submit_timeout`` and never receives an acknowledgement for an uncommitted report.
- A reviewer :meth:`~ReportQueue.claim` s reports with a lease. If the reviewer dies, the
  lease expires and the report returns to the queue; every claim counts an attempt, and a
  report whose attempts reach ``max_attempts`` (by failures or expired leases) moves to
  the dead-letter state, which stays visible in :meth:`~ReportQueue.stats` and
  :meth:`~ReportQueue.dead_letters` until an operator requeues it.
- :meth:`~ReportQueue.resolve` writes labels and retractions in the same transaction as
  the resolution: both happen or neither.
- Reports are never deleted (a trigger refuses it).

Report states: ``pending`` → ``claimed`` → ``resolved``; ``claimed`` → ``pending`` (lease
expired, released, failed) or ``dead`` (attempts exhausted); ``dead`` → ``pending``
(requeued). A claimed report whose lease has expired counts as pending (or dead) at
once, before any process rewrites its row.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._validation import check_choice, check_float, check_int, fail
from ..exceptions import LeaseLostError, ValidationError
from ._db import Database
from ._intake import GroupCommit
from ._records import REPORT_COLUMNS as _COLS
from ._records import Ack, Claim, QueueStats, Report, report_from_row
from ._triage import DEFAULT_CATEGORY_WEIGHTS, TriageEntry, TriageWeights, rank
from .labels import check_keys, check_kind, check_subject, check_text, check_time
from .store import LabelStore, insert_label, label_spec, retract_label

__all__ = [
    "ReportQueue",
    "Report",
    "Ack",
    "Claim",
    "QueueStats",
    "TriageWeights",
    "TriageEntry",
    "LeaseLostError",
    "DEFAULT_CATEGORY_WEIGHTS",
]


class ReportQueue:
    """Durable report intake with leases, dead letters and triage.

    Parameters
    ----------
    store : LabelStore, str or path-like
        The store to share (so that resolving a report writes labels in the same
        transaction), or a path to open one (then the queue owns and closes it).
    max_attempts : int, keyword-only
        Claims (failures or expired leases) before a report is dead-lettered.
    lease_s : float, keyword-only
        Default lease length in seconds.
    weights : TriageWeights, keyword-only
        Triage weights for :meth:`triage` and :meth:`claim`.
    submit_timeout : float, keyword-only
        Most seconds a :meth:`submit` call waits for the group commit holding its report
        (queueing behind other writers included); past it the call raises
        ``StoreError`` instead of hanging. Should exceed the store's ``timeout``.

    Notes
    -----
    Concurrent :meth:`submit` calls are group-committed: the caller at the head of the
    intake queue becomes the leader, takes every queued report (up to 256) and commits
    them in one transaction, each in its own savepoint; the others wait for the outcome.
    A batch closes as soon as the leader holds the store (no added delay), so a single
    writer pays one commit per report as before, and concurrent writers share commits.

    Examples
    --------
    >>> q = ReportQueue(":memory:")
    >>> q.submit(7, "child_safety", reporter=99, key="r-1").duplicate
    False
    >>> [c] = q.claim("alice")
    >>> q.resolve(c, outcome="actioned", labels=[{"category": "csam_seller"}]).state
    'resolved'
    """

    def __init__(
        self,
        store: LabelStore | str | os.PathLike = ":memory:",
        *,
        max_attempts: int = 5,
        lease_s: float = 300.0,
        weights: TriageWeights | None = None,
        submit_timeout: float = 60.0,
    ):
        where = "ReportQueue"
        self._owns = not isinstance(store, LabelStore)
        self.store = LabelStore(store) if self._owns else store
        # Every read and write goes through the store's shared SQLite layer.
        self._db: Database = self.store.database
        self.max_attempts = check_int(max_attempts, "max_attempts", where, low=1)
        self.lease_s = check_float(lease_s, "lease_s", where, low=0.0, low_open=True)
        if weights is not None and not isinstance(weights, TriageWeights):
            raise fail("weights", where, "a TriageWeights or None", weights)
        self.weights = weights or TriageWeights()
        self.submit_timeout = check_float(
            submit_timeout, "submit_timeout", where, low=0.0, low_open=True
        )
        # ``_insert`` is looked up per write, so a wrapped one (tests, instrumentation)
        # is the one the group commit calls.
        self._group = GroupCommit(self._db, lambda conn, spec: self._insert(conn, spec))
        # The intake queue, its lock and the counters, by their old names (tests and the
        # benchmark read them).
        self._intake = self._group.intake
        self._intake_lock = self._group.intake_lock
        self._group_stats = self._group.stats

    def close(self) -> None:
        """Close the store if the queue opened it."""
        if self._owns:
            self.store.close()

    def __enter__(self) -> ReportQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _now(self, now, where: str) -> float:
        return self._db.clock() if now is None else check_time(now, "now", where)

    def _report(self, row, now: float) -> Report:
        return report_from_row(row, now, self.max_attempts)

    @staticmethod
    def _row(conn, seq: int) -> tuple:
        """The report's stored row, re-read inside the write that changed it."""
        return conn.execute(f"SELECT {_COLS} FROM reports WHERE seq = ?", (seq,)).fetchone()

    # ------------------------------------------------------------------ intake
    def submit(
        self,
        subject: int | str,
        category: str,
        *,
        reporter: int | str,
        key: str,
        note: str | None = None,
        kind: str = "account",
        created_at=None,
    ) -> Ack:
        """Submit a report; returns once it is durably committed.

        Parameters
        ----------
        subject : int or str
            External id of the reported account (or item, with ``kind="item"``).
        category : str
            The reporter's category.
        reporter : int or str, keyword-only
            External id of the reporting user.
        key : str, keyword-only
            Idempotency key: a retry with the same key and content returns the stored
            report (``duplicate=True``); the same key with different content raises
            ``ValidationError``.
        note : str, optional, keyword-only
        kind : {"account", "item"}, keyword-only
        created_at : float or aware datetime, optional, keyword-only
            Defaults to now.

        Returns
        -------
        Ack

        Raises
        ------
        ValidationError
            Invalid arguments, or the key is stored with different content (only this
            call fails; reports committed in the same group are unaffected).
        StoreError
            The report could not be committed within ``submit_timeout``, or the store
            failed or is closed. The report is not acknowledged: it may or may not be
            stored, and a retry with the same key is safe.

        Notes
        -----
        Calls from several threads are group-committed (see :class:`ReportQueue`); the
        acknowledgement is the same as if the reports had been submitted one at a time
        in arrival order (a key repeated within one group returns the first's ``seq``
        with ``duplicate=True``).
        """
        spec = self._submit_spec(
            dict(
                subject=subject,
                category=category,
                reporter=reporter,
                key=key,
                note=note,
                kind=kind,
                created_at=created_at,
            ),
            "ReportQueue.submit",
        )
        return self._group.submit(spec, self.submit_timeout)

    def submit_many(self, reports: Iterable[Mapping[str, Any]]) -> list[Ack]:
        """Submit several reports in one transaction (all acknowledged, or none).

        Parameters
        ----------
        reports : iterable of dict
            Keyword arguments of :meth:`submit` (``subject``, ``category``, ``reporter``
            and ``key`` required).
        """
        specs = [self._submit_spec(dict(r), "ReportQueue.submit_many") for r in reports]
        with self._db.write() as conn:
            return [self._insert(conn, s) for s in specs]

    def _submit_spec(self, d: dict, where: str) -> dict:
        allowed = {"subject", "category", "reporter", "key", "note", "kind", "created_at"}
        check_keys(d, allowed, "reports", where)
        for req in ("subject", "category", "reporter", "key"):
            if req not in d:
                raise fail(req, where, "given", None)
        return dict(
            subject=check_subject(d["subject"], "subject", where),
            category=check_text(d["category"], "category", where, max_len=200),
            reporter=check_subject(d["reporter"], "reporter", where),
            key=check_text(d["key"], "key", where, max_len=500),
            note=check_text(d.get("note"), "note", where, optional=True),
            kind=check_kind(d.get("kind", "account"), where),
            created_at=check_time(d.get("created_at"), "created_at", where, optional=True),
        )

    def _insert(self, conn, spec: dict) -> Ack:
        row = conn.execute(
            "SELECT seq, kind, subject, reporter, category, note, created_at FROM reports WHERE "
            "report_key = ?",
            (spec["key"],),
        ).fetchone()
        if row is not None:
            seq, kind, subject, reporter, category, note, created = row
            same = (
                (kind, subject, reporter, category, note)
                == (spec["kind"], spec["subject"], spec["reporter"], spec["category"], spec["note"])
                and type(subject) is type(spec["subject"])
                and type(reporter) is type(spec["reporter"])
                and (spec["created_at"] is None or spec["created_at"] == created)
            )
            if not same:
                raise ValidationError(
                    f"The 'key' parameter of ReportQueue.submit must identify one report. Got "
                    f"{spec['key']!r}, already stored with different content, instead."
                )
            return Ack(spec["key"], int(seq), True)
        now = self._db.clock()
        created = now if spec["created_at"] is None else spec["created_at"]
        cur = conn.execute(
            "INSERT INTO reports (report_key, kind, subject, reporter, category, note, "
            "created_at, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
            (
                spec["key"],
                spec["kind"],
                spec["subject"],
                spec["reporter"],
                spec["category"],
                spec["note"],
                created,
            ),
        )
        self._db.audit(
            conn,
            "report",
            spec["key"],
            "submit",
            source="user_report",
            actor=str(spec["reporter"]),
            detail={"kind": spec["kind"], "subject": spec["subject"], "category": spec["category"]},
            at=now,
        )
        return Ack(spec["key"], int(cur.lastrowid), False)

    # ------------------------------------------------------------------ reads
    def get(self, key: str, *, now=None) -> Report:
        """The report with this key (``ValidationError`` if none)."""
        t = self._now(now, "ReportQueue.get")
        row = self._db.query_one(f"SELECT {_COLS} FROM reports WHERE report_key = ?", (key,))
        if row is None:
            raise fail("key", "ReportQueue.get", "the key of a stored report", key)
        return self._report(row, t)

    def reports(self, *, state: str | None = None, now=None) -> list[Report]:
        """Reports in arrival order, optionally only those in one (derived) ``state``."""
        where = "ReportQueue.reports"
        if state is not None:
            check_choice(state, "state", where, ("pending", "claimed", "resolved", "dead"))
        t = self._now(now, where)
        rows = self._db.query(f"SELECT {_COLS} FROM reports ORDER BY seq")
        out = [self._report(r, t) for r in rows]
        return out if state is None else [r for r in out if r.state == state]

    def dead_letters(self, *, now=None) -> list[Report]:
        """Dead-lettered reports, oldest first."""
        return self.reports(state="dead", now=now)

    def stats(self, *, now=None) -> QueueStats:
        """Counters: pending, claimed, dead-lettered, resolved, and the oldest pending age."""
        t = self._now(now, "ReportQueue.stats")
        sql = (
            "SELECT CASE WHEN state = 'claimed' AND lease_expires <= :now THEN "
            "  CASE WHEN attempts >= :max THEN 'dead' ELSE 'pending' END ELSE state END AS s, "
            "count(*), min(created_at), "
            "sum(CASE WHEN state = 'claimed' AND lease_expires <= :now THEN 1 ELSE 0 END) "
            "FROM reports GROUP BY s"
        )
        rows = self._db.query(sql, {"now": t, "max": self.max_attempts})
        counts = {s: (int(n), oldest, int(exp or 0)) for s, n, oldest, exp in rows}
        pending = counts.get("pending", (0, None, 0))
        return QueueStats(
            pending=pending[0],
            claimed=counts.get("claimed", (0, None, 0))[0],
            dead=counts.get("dead", (0, None, 0))[0],
            resolved=counts.get("resolved", (0, None, 0))[0],
            oldest_pending_age_s=None if pending[1] is None else max(0.0, t - pending[1]),
            expired_leases=sum(c[2] for c in counts.values()),
        )

    # ------------------------------------------------------------------ triage
    def triage(
        self,
        limit: int | None = None,
        *,
        now=None,
        neighbourhood_risk: Mapping | Callable[[Any], float] | None = None,
        weights: TriageWeights | None = None,
    ) -> list[TriageEntry]:
        """Pending reports, most dangerous first.

        Parameters
        ----------
        limit : int, optional
            At most this many entries.
        now : float, optional, keyword-only
        neighbourhood_risk : mapping or callable, optional, keyword-only
            Risk in [0, 1] of a reported subject's neighbourhood (for example from graph
            propagation), by external id; subjects absent from a mapping have 0.
        weights : TriageWeights, optional, keyword-only
            Defaults to the queue's.

        Returns
        -------
        list of TriageEntry
            Sorted by priority (descending), then age (oldest first), then arrival.

        Notes
        -----
        ``risk = max(label_risk, neighbourhood_risk)``, where ``label_risk`` is the
        highest ``severity * confidence`` among the subject's effective labels now;
        see :class:`TriageWeights` for the priority formula.
        """
        where = "ReportQueue.triage"
        if limit is not None:
            limit = check_int(limit, "limit", where, low=0)
        t = self._now(now, where)
        w = self.weights if weights is None else weights
        with self._db.read() as conn:
            return self._triage(conn, t, w, neighbourhood_risk, limit)

    def _triage(
        self, conn, t: float, w: TriageWeights, nrisk, limit: int | None
    ) -> list[TriageEntry]:
        rows = conn.execute(
            f"SELECT {_COLS} FROM reports WHERE state = 'pending' "
            "OR (state = 'claimed' AND lease_expires <= ? AND attempts < ?)",
            (t, self.max_attempts),
        ).fetchall()
        if not rows:
            return []
        reports = [self._report(r, t) for r in rows]
        return rank(conn, reports, t, w, nrisk, limit)

    # ------------------------------------------------------------------ reviewing
    def claim(
        self,
        reviewer: str,
        *,
        n: int = 1,
        lease_s: float | None = None,
        order: str = "priority",
        now=None,
        neighbourhood_risk=None,
    ) -> list[Claim]:
        """Claim up to ``n`` pending reports under a lease.

        Parameters
        ----------
        reviewer : str
        n : int, keyword-only
        lease_s : float, optional, keyword-only
            Lease length; the queue's default when omitted.
        order : {"priority", "fifo"}, keyword-only
            Triage order (see :meth:`triage`) or arrival order.
        now : float, optional, keyword-only
        neighbourhood_risk : mapping or callable, optional, keyword-only
            As in :meth:`triage`.

        Returns
        -------
        list of Claim
            Empty when nothing is pending. Expired leases are reaped first (their reports
            return to the queue, or are dead-lettered when out of attempts).
        """
        where = "ReportQueue.claim"
        reviewer = check_text(reviewer, "reviewer", where, max_len=500)
        n = check_int(n, "n", where)
        lease = (
            self.lease_s
            if lease_s is None
            else check_float(lease_s, "lease_s", where, low=0.0, low_open=True)
        )
        check_choice(order, "order", where, ("priority", "fifo"))
        t = self._now(now, where)
        claims = []
        with self._db.write() as conn:
            self._reap(conn, t)
            if order == "fifo":
                rows = conn.execute(
                    f"SELECT {_COLS} FROM reports WHERE state = 'pending' ORDER BY created_at, "
                    "seq LIMIT ?",
                    (n,),
                ).fetchall()
                picked = [self._report(r, t) for r in rows]
            else:
                picked = [
                    e.report for e in self._triage(conn, t, self.weights, neighbourhood_risk, n)
                ]
            for rep in picked:
                token = uuid.uuid4().hex
                expires = t + lease
                conn.execute(
                    "UPDATE reports SET state = 'claimed', claimed_by = ?, lease_token = ?, "
                    "lease_expires = ?, "
                    "attempts = attempts + 1 WHERE seq = ? AND state = 'pending'",
                    (reviewer, token, expires, rep.seq),
                )
                self._db.audit(
                    conn,
                    "report",
                    rep.key,
                    "claim",
                    actor=reviewer,
                    detail={"lease_expires": expires, "attempt": rep.attempts + 1},
                    at=t,
                )
                claimed = dataclasses.replace(
                    rep,
                    state="claimed",
                    attempts=rep.attempts + 1,
                    claimed_by=reviewer,
                    lease_expires=expires,
                    resolved_at=None,
                    resolved_by=None,
                    outcome=None,
                )
                claims.append(Claim(claimed, token, reviewer, expires))
        return claims

    def _reap(self, conn, t: float) -> None:
        rows = conn.execute(
            "SELECT seq, report_key, attempts, claimed_by FROM reports WHERE state = 'claimed' "
            "AND lease_expires <= ?",
            (t,),
        ).fetchall()
        for seq, key, attempts, who in rows:
            dead = attempts >= self.max_attempts
            conn.execute(
                "UPDATE reports SET state = ?, claimed_by = NULL, lease_token = NULL, "
                "lease_expires = NULL, "
                "last_error = coalesce(last_error, 'lease expired') WHERE seq = ?",
                ("dead" if dead else "pending", seq),
            )
            self._db.audit(
                conn, "report", key, "lease_expired", actor=who, detail={"attempts": attempts}, at=t
            )
            if dead:
                self._db.audit(
                    conn,
                    "report",
                    key,
                    "dead_letter",
                    reason="attempts exhausted (lease expired)",
                    detail={"attempts": attempts},
                    at=t,
                )

    def _held(self, conn, claim: Claim, where: str):
        if not isinstance(claim, Claim):
            raise fail("claim", where, "a Claim returned by ReportQueue.claim", claim)
        row = conn.execute(
            f"SELECT {_COLS} FROM reports WHERE report_key = ?", (claim.key,)
        ).fetchone()
        if row is None or row[8] != "claimed" or row[11] != claim.token:
            state = "missing" if row is None else row[8]
            raise LeaseLostError(
                f"The lease of {claim.reviewer!r} on report {claim.key!r} is no longer held "
                f"(the report is {state}); nothing was written."
            )
        return row

    def resolve(
        self,
        claim: Claim,
        *,
        outcome: str,
        labels: Iterable[Mapping[str, Any]] = (),
        retract: Iterable[str] = (),
        reason: str | None = None,
        now=None,
    ) -> Report:
        """Resolve a claimed report, writing labels and retractions in the same transaction.

        Parameters
        ----------
        claim : Claim
        outcome : str, keyword-only
            For example ``"actioned"`` or ``"dismissed"``.
        labels : iterable of dict, keyword-only
            Keyword arguments of :meth:`LabelStore.add`; ``subject`` and ``kind`` default to
            the report's, ``source`` to ``"reviewer"``, ``evidence`` to
            ``"report:<key>"``, ``actor`` to the reviewer.
        retract : iterable of str, keyword-only
            Label ids to retract (by the reviewer, for ``reason`` or the outcome).
        reason : str, optional, keyword-only
            Recorded in the audit log.

        Returns
        -------
        Report
            The resolved report.

        Raises
        ------
        LeaseLostError
            The lease is no longer held; nothing was written.
        """
        where = "ReportQueue.resolve"
        if not isinstance(claim, Claim):
            raise fail("claim", where, "a Claim returned by ReportQueue.claim", claim)
        outcome = check_text(outcome, "outcome", where, max_len=200)
        reason = check_text(reason, "reason", where, optional=True)
        t = self._now(now, where)
        rep = claim.report
        specs = []
        for lab in labels:
            d = dict(lab)
            d.setdefault("subject", rep.subject)
            d.setdefault("kind", rep.kind)
            d.setdefault("evidence", f"report:{rep.key}")
            d.setdefault("actor", claim.reviewer)
            d.setdefault("source", "reviewer")
            specs.append(label_spec(d, where))
        retract = [check_text(r, "retract", where, max_len=500) for r in retract]
        with self._db.write() as conn:
            row = self._held(conn, claim, where)
            written = [insert_label(self._db, conn, s).label_id for s in specs]
            for lid in retract:
                retract_label(self._db, conn, lid, by=claim.reviewer, reason=reason or outcome)
            conn.execute(
                "UPDATE reports SET state = 'resolved', resolved_at = ?, resolved_by = ?, outcome "
                "= ?, "
                "lease_token = NULL, lease_expires = NULL WHERE seq = ?",
                (t, claim.reviewer, outcome, row[0]),
            )
            self._db.audit(
                conn,
                "report",
                claim.key,
                "resolve",
                actor=claim.reviewer,
                reason=reason,
                detail={"outcome": outcome, "labels": written, "retracted": retract},
                at=t,
            )
            final = self._row(conn, row[0])
        return self._report(final, t)

    def fail(self, claim: Claim, *, error: str, now=None) -> Report:
        """Record a failed attempt: back to pending, or dead-lettered when out of attempts."""
        where = "ReportQueue.fail"
        error = check_text(error, "error", where)
        t = self._now(now, where)
        with self._db.write() as conn:
            row = self._held(conn, claim, where)
            dead = row[9] >= self.max_attempts
            conn.execute(
                "UPDATE reports SET state = ?, claimed_by = NULL, lease_token = NULL, "
                "lease_expires = NULL, "
                "last_error = ? WHERE seq = ?",
                ("dead" if dead else "pending", error, row[0]),
            )
            self._db.audit(
                conn, "report", claim.key, "fail", actor=claim.reviewer, reason=error, at=t
            )
            if dead:
                self._db.audit(
                    conn,
                    "report",
                    claim.key,
                    "dead_letter",
                    reason="attempts exhausted",
                    detail={"attempts": row[9], "error": error},
                    at=t,
                )
            final = self._row(conn, row[0])
        return self._report(final, t)

    def release(self, claim: Claim, *, now=None) -> Report:
        """Give a claimed report back without counting an attempt."""
        where = "ReportQueue.release"
        t = self._now(now, where)
        with self._db.write() as conn:
            row = self._held(conn, claim, where)
            conn.execute(
                "UPDATE reports SET state = 'pending', claimed_by = NULL, lease_token = NULL, "
                "lease_expires = NULL, "
                "attempts = max(attempts - 1, 0) WHERE seq = ?",
                (row[0],),
            )
            self._db.audit(conn, "report", claim.key, "release", actor=claim.reviewer, at=t)
            final = self._row(conn, row[0])
        return self._report(final, t)

    def extend(self, claim: Claim, *, lease_s: float | None = None, now=None) -> Claim:
        """Renew a lease (a heartbeat); returns the claim with its new expiry."""
        where = "ReportQueue.extend"
        lease = (
            self.lease_s
            if lease_s is None
            else check_float(lease_s, "lease_s", where, low=0.0, low_open=True)
        )
        t = self._now(now, where)
        with self._db.write() as conn:
            row = self._held(conn, claim, where)
            expires = t + lease
            conn.execute("UPDATE reports SET lease_expires = ? WHERE seq = ?", (expires, row[0]))
            self._db.audit(
                conn,
                "report",
                claim.key,
                "extend",
                actor=claim.reviewer,
                detail={"lease_expires": expires},
                at=t,
            )
            final = self._row(conn, row[0])
        return Claim(self._report(final, t), claim.token, claim.reviewer, expires)

    def requeue(self, key: str, *, actor: str, reason: str, now=None) -> Report:
        """Return a dead-lettered report to the queue with its attempts reset."""
        where = "ReportQueue.requeue"
        actor = check_text(actor, "actor", where)
        reason = check_text(reason, "reason", where)
        t = self._now(now, where)
        with self._db.write() as conn:
            self._reap(conn, t)
            row = conn.execute(
                f"SELECT {_COLS} FROM reports WHERE report_key = ?", (key,)
            ).fetchone()
            if row is None or row[8] != "dead":
                raise fail("key", where, "the key of a dead-lettered report", key)
            conn.execute(
                "UPDATE reports SET state = 'pending', attempts = 0 WHERE seq = ?", (row[0],)
            )
            self._db.audit(conn, "report", key, "requeue", actor=actor, reason=reason, at=t)
            final = self._row(conn, row[0])
        return self._report(final, t)
