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
    """A report as stored.

    Attributes
    ----------
    key : str
        Idempotency key supplied at submission.
    seq : int
        Arrival order.
    kind : {"account", "item"}
    subject : int or str
        External id of the reported account or item.
    reporter : int or str
        External id of the reporting user.
    category : str
        What the reporter chose (``"child_safety"``, ``"spam"``, ...).
    note : str or None
    created_at : float
    state : {"pending", "claimed", "resolved", "dead"}
        As of the time the report was read (an expired lease reads as pending or dead).
    attempts : int
        Claims so far (a released claim is not counted).
    claimed_by : str or None
    lease_expires : float or None
    resolved_at : float or None
    resolved_by : str or None
    outcome : str or None
    last_error : str or None
    """

    key: str
    seq: int
    kind: str
    subject: int | str
    reporter: int | str
    category: str
    note: str | None
    created_at: float
    state: str
    attempts: int
    claimed_by: str | None
    lease_expires: float | None
    resolved_at: float | None
    resolved_by: str | None
    outcome: str | None
    last_error: str | None


@dataclass(frozen=True)
class Ack:
    """Acknowledgement of a durable submission.

    Attributes
    ----------
    key : str
    seq : int
    duplicate : bool
        True when the key was already stored (nothing was written).
    """

    key: str
    seq: int
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
    """Counters over the whole queue; nothing is ever silently dropped.

    Attributes
    ----------
    pending : int
        Waiting for a reviewer (expired leases included).
    claimed : int
        Held under a live lease.
    dead : int
        Dead-lettered: attempts exhausted; visible until requeued.
    resolved : int
    oldest_pending_age_s : float or None
        Age of the oldest pending report, ``None`` when nothing is pending.
    expired_leases : int
        Claims whose lease has expired (counted in ``pending`` or ``dead``).
    """

    pending: int
    claimed: int
    dead: int
    resolved: int
    oldest_pending_age_s: float | None
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
