"""Group commit of report submissions: many callers, one transaction, no false
acknowledgement.

Concurrent submissions join one intake queue. The caller at its head becomes the
leader: it takes the store's lock, then every queued submission (at most 256), and
commits them in one transaction, each in its own savepoint, so that one bad report fails
only its own caller. Every caller returns only after the transaction holding its report
has committed, or raises ``StoreError``; none waits longer than its timeout. See
:class:`~guardrails.signals.ReportQueue` for the guarantees callers see.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from ..exceptions import StoreError, ValidationError
from ._db import Database, as_store_error

__all__ = ["GroupCommit"]

#: Most reports one group commit writes in one transaction (a leader leaves the rest
#: queued for the next leader, so one huge burst does not become one huge transaction).
_MAX_GROUP = 256


class GroupCommit:
    """The intake queue of one :class:`~guardrails.signals.ReportQueue`.

    Parameters
    ----------
    db : Database
        The store's SQLite layer; its lock is held for each group's transaction.
    write : callable
        ``write(conn, spec) -> ack``: writes one submission inside the open transaction
        (raising ``ValidationError`` fails that submission alone).

    Attributes
    ----------
    intake : deque
        Pending submissions in arrival order; the head's thread leads.
    intake_lock : threading.Lock
        Guards ``intake`` and every submission's outcome.
    stats : dict
        Committed transactions (``batches``), submissions acknowledged in them
        (``reports``) and the most submissions one transaction handled (``max_batch``).
    """

    def __init__(self, db: Database, write: Callable[[sqlite3.Connection, dict], Any]):
        self._db = db
        self._write = write
        self.intake: collections.deque[_Pending] = collections.deque()
        self.intake_lock = threading.Lock()
        self.stats = {"batches": 0, "reports": 0, "max_batch": 0}

    def submit(self, spec: dict, timeout: float) -> Any:
        """Queue ``spec``; lead a group commit when at the head, else wait for the leader.

        A caller arriving at an empty queue leads at once (no waiting, no event). Every
        other caller sleeps on its own event, woken only when its outcome is set or it
        becomes the head (no thundering herd on every commit).
        """
        item = _Pending(spec)
        deadline = time.monotonic() + timeout
        mutex = self.intake_lock
        lock = self._db.lock
        with mutex:
            lead = not self.intake
            if not lead:
                item.wake = threading.Event()
            self.intake.append(item)
        try:
            while not lead:
                item.wake.clear()
                with mutex:
                    if item.done:
                        return item.outcome()
                    lead = self.intake[0] is item
                    remaining = deadline - time.monotonic()
                    if not lead and remaining <= 0:
                        self._abandon(item, timeout)
                if not lead:
                    item.wake.wait(remaining)
            # Head of the queue: lead. Take the store first (outside the intake lock, so
            # that more submissions queue up meanwhile), then the batch.
            if not lock.acquire(blocking=False) and not lock.acquire(
                timeout=max(0.0, deadline - time.monotonic())
            ):
                with mutex:
                    self._abandon(item, timeout)
        except BaseException:
            # Interrupted while waiting (or timed out): never leave a report in the queue
            # that nobody waits for; if it was the head, wake the next leader.
            with mutex:
                if not item.taken and item in self.intake:
                    self._withdraw(item)
            raise
        batch: list[_Pending] = []
        try:
            with mutex:
                intake = self.intake
                batch = (
                    list(intake)
                    if len(intake) <= _MAX_GROUP
                    else [intake[i] for i in range(_MAX_GROUP)]
                )
                for it in batch:
                    it.taken = True
            if len(batch) == 1:
                self._commit_one(item)
            else:
                self._commit_group(batch)
        finally:
            lock.release()
            with mutex:
                for it in batch:
                    if not it.done:  # the leader died mid-batch (BaseException)
                        it.fail(
                            StoreError(
                                f"The group commit of {self._db.path!r} was interrupted; the "
                                "report is not acknowledged (it may or may not be stored: "
                                "retry with the same key)."
                            )
                        )
                    self.intake.popleft()
                head = self.intake[0] if self.intake else None
            for it in batch:
                if it.wake is not None:
                    it.wake.set()
            if head is not None and head.wake is not None:
                head.wake.set()  # the next leader (it queued behind us: it has an event)
        return item.outcome()

    def _abandon(self, item: _Pending, timeout: float) -> None:
        """Time out ``item`` (the intake lock is held) and raise ``StoreError``."""
        where = f"within submit_timeout={timeout:g} s"
        if item.taken:
            # In a leader's transaction that has not finished: outcome unknown.
            raise StoreError(
                f"The store {self._db.path!r} did not commit the report {item.spec['key']!r} "
                f"{where}; it is not acknowledged (it may or may not be stored: retry with "
                "the same key)."
            )
        self._withdraw(item)
        raise StoreError(
            f"The store {self._db.path!r} did not accept the report {item.spec['key']!r} "
            f"{where}; nothing was written (retry with the same key)."
        )

    def _withdraw(self, item: _Pending) -> None:
        """Remove an untaken ``item`` (the intake lock is held); wake the next leader."""
        was_head = self.intake[0] is item
        self.intake.remove(item)
        if was_head and self.intake and self.intake[0].wake is not None:
            self.intake[0].wake.set()

    def _commit_one(self, item: _Pending) -> None:
        """A group of one: the report's own transaction (as without group commit)."""
        try:
            with self._db.write() as conn:
                ack = self._write(conn, item.spec)
        except ValidationError as exc:
            item.fail(exc)
        except Exception as exc:
            err = _as_error(exc, self._db.path)
            item.fail(_batch_error(err, self._db.path))
        else:
            self._count_group(1, 1)
            item.succeed(ack)

    def _count_group(self, n: int, size: int) -> None:
        """Count a committed group of ``size`` submissions, ``n`` of them acknowledged."""
        stats = self.stats
        stats["batches"] += 1
        stats["reports"] += n
        stats["max_batch"] = max(stats["max_batch"], size)

    def _commit_group(self, batch: list[_Pending]) -> None:
        """Write ``batch`` in one transaction; set each item's outcome after the commit.

        Each report gets a savepoint: a report that fails (``ValidationError``, or an
        SQLite error that leaves the transaction open) is rolled back alone and fails only
        its caller. An error that ends the transaction, or a failed commit, fails every
        report of the batch that had not failed on its own; nothing is acknowledged
        before the commit returns.
        """
        acks: list[Any] = [None] * len(batch)
        errors: list[BaseException | None] = [None] * len(batch)
        try:
            with self._db.write() as conn:
                for i, it in enumerate(batch):
                    conn.execute("SAVEPOINT submit")
                    try:
                        acks[i] = self._write(conn, it.spec)
                    except Exception as exc:
                        if not conn.in_transaction:
                            raise
                        conn.execute("ROLLBACK TO submit")
                        errors[i] = _as_error(exc, self._db.path)
                    conn.execute("RELEASE submit")
        except Exception as exc:
            err = _as_error(exc, self._db.path)
            for it, own in zip(batch, errors, strict=True):
                it.fail(own if own is not None else _batch_error(err, self._db.path))
            return
        # Committed: publish.
        self._count_group(len(batch) - sum(e is not None for e in errors), len(batch))
        for it, ack, err in zip(batch, acks, errors, strict=True):
            if err is not None:
                it.fail(err)
            else:
                it.succeed(ack)


class _Pending:
    """One queued submission and, once its group has committed, its outcome."""

    __slots__ = ("spec", "taken", "done", "ack", "error", "wake")

    def __init__(self, spec: dict):
        self.spec = spec
        # Set when done or when it becomes the head; only for callers that may wait.
        self.wake: threading.Event | None = None
        self.taken = False  # in a leader's batch: can no longer be withdrawn
        self.done = False
        self.ack: Any = None
        self.error: BaseException | None = None

    def succeed(self, ack: Any) -> None:
        self.ack, self.done = ack, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        assert self.ack is not None
        return self.ack


def _as_error(exc: BaseException, path: str) -> BaseException:
    """An SQLite error as the library's ``StoreError``; any other error as it is."""
    return as_store_error(exc, path) if isinstance(exc, sqlite3.DatabaseError) else exc


def _batch_error(exc: BaseException, path: str) -> StoreError:
    if isinstance(exc, StoreError):
        msg = str(exc)
    else:
        msg = f"The store {path!r} failed: {type(exc).__name__}: {exc}."
    err = StoreError(
        f"{msg} The report is not acknowledged (it may or may not be stored: retry with the "
        "same key)."
    )
    err.__cause__ = exc
    return err
