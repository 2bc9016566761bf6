"""The records a :class:`~guardrails.signals.ReportQueue` hands out: reports as stored,
acknowledgements, claims and queue counters, and how a stored row reads as a report."""

from __future__ import annotations

from dataclasses import dataclass

#: The columns of the ``reports`` table, in the order :func:`report_from_row` reads.
REPORT_COLUMNS = (
    "seq, report_key, kind, subject, reporter, category, note, created_at, state, attempts, "
    "claimed_by, lease_token, lease_expires, resolved_at, resolved_by, outcome, last_error"
)


@dataclass(frozen=True)
class Report:
    """A report as stored."""

    #: Idempotency key supplied at submission.
    key: str
    #: Arrival order.
    seq: int
    #: What is reported: ``"account"`` or ``"item"``.
    kind: str
    #: External id of the reported account or item.
    subject: int | str
    #: External id of the reporting user.
    reporter: int | str
    #: What the reporter chose (``"child_safety"``, ``"spam"``, ...).
    category: str
    #: The reporter's free-text note, if any.
    note: str | None
    #: When the report was made (given at submission, else the store's clock).
    created_at: float
    #: ``"pending"``, ``"claimed"``, ``"resolved"`` or ``"dead"``, as of the time the
    #: report was read (an expired lease reads as pending or dead).
    state: str
    #: Claims so far (a released claim is not counted).
    attempts: int
    #: The reviewer of the report's lease, if it has one.
    claimed_by: str | None
    #: When that lease expires.
    lease_expires: float | None
    #: When the report was resolved.
    resolved_at: float | None
    #: The reviewer who resolved it.
    resolved_by: str | None
    #: The reviewer's outcome (``"actioned"``, ...) of a resolved report.
    outcome: str | None
    #: Why the last claim failed or ended (``"lease expired"``), if one did.
    last_error: str | None


@dataclass(frozen=True)
class Ack:
    """Acknowledgement of a durable submission."""

    #: Idempotency key of the report.
    key: str
    #: Arrival order of the stored report (the earlier one, for a duplicate).
    seq: int
    #: True when the key was already stored (nothing was written).
    duplicate: bool


@dataclass(frozen=True)
class Claim:
    """A reviewer's lease on one report; pass it to resolve, fail, release or extend."""

    report: Report
    token: str
    reviewer: str
    expires_at: float

    @property
    def key(self) -> str:
        return self.report.key


@dataclass(frozen=True)
class QueueStats:
    """Counters over the whole queue; nothing is ever silently dropped."""

    #: Waiting for a reviewer (expired leases included).
    pending: int
    #: Held under a live lease.
    claimed: int
    #: Dead-lettered: attempts exhausted; visible until requeued.
    dead: int
    #: Resolved by a reviewer.
    resolved: int
    #: Age of the oldest pending report, ``None`` when nothing is pending.
    oldest_pending_age_s: float | None
    #: Claims whose lease has expired (counted in ``pending`` or ``dead``).
    expired_leases: int

    @property
    def total(self) -> int:
        return self.pending + self.claimed + self.dead + self.resolved


def report_from_row(row, now: float, max_attempts: int) -> Report:
    """A stored row (``REPORT_COLUMNS`` order) as a :class:`Report` read at time ``now``.

    A claimed report whose lease has expired reads as pending (or dead when its attempts
    are exhausted) at once, before any process rewrites its row.
    """
    seq, key = row[0], row[1]
    state, attempts, lease_expires = row[8], row[9], row[12]
    if state == "claimed" and lease_expires is not None and lease_expires <= now:
        state = "dead" if attempts >= max_attempts else "pending"
    # Report's fields follow the stored columns: key before seq, and no lease token (row[11]).
    # mypy cannot count the fields of a row sliced from a tuple of unknown length.
    return Report(key, seq, *row[2:8], state, attempts, row[10], lease_expires, *row[13:])  # type: ignore[call-arg]
