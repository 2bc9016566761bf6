"""ReportQueue: idempotent intake, leases, dead letters, atomic resolution, counters, triage."""

from __future__ import annotations

import math
import os
import sqlite3
import tempfile
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.exceptions import StoreError, ValidationError
from guardrails.signals import LabelStore, LeaseLostError, ReportQueue, TriageWeights


class Clock:
    def __init__(self, t: float = 10_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def queue(clock):
    return ReportQueue(LabelStore(clock=clock), max_attempts=3, lease_s=60)


def test_submit_is_idempotent_and_conflicts_are_refused(queue):
    a = queue.submit(7, "child_safety", reporter=1, key="r1", note="selling")
    b = queue.submit(7, "child_safety", reporter=1, key="r1", note="selling")
    assert not a.duplicate and b.duplicate and a.seq == b.seq
    with pytest.raises(ValidationError, match="already stored with different content"):
        queue.submit(8, "child_safety", reporter=1, key="r1", note="selling")
    assert queue.stats().pending == 1
    assert [e.action for e in queue.store.audit("r1")] == ["submit"]


def test_submit_many_all_or_nothing(queue):
    queue.submit(1, "spam", reporter=1, key="taken")
    with pytest.raises(ValidationError):
        queue.submit_many(
            [
                {"subject": 2, "category": "spam", "reporter": 3, "key": "fresh"},
                {"subject": 9, "category": "spam", "reporter": 3, "key": "taken"},
            ]
        )
    assert [r.key for r in queue.reports()] == ["taken"]
    acks = queue.submit_many(
        {"subject": i, "category": "spam", "reporter": 3, "key": f"b{i}"} for i in range(5)
    )
    assert [a.duplicate for a in acks] == [False] * 5
    with pytest.raises(ValidationError, match="'reporter' parameter"):
        queue.submit(1, "spam", reporter=None, key="z")


def test_lease_expiry_returns_report_to_queue(queue, clock):
    queue.submit(5, "spam", reporter=1, key="r")
    [c] = queue.claim("alice", lease_s=30)
    assert queue.stats().claimed == 1 and queue.stats().pending == 0
    assert queue.claim("bob") == []
    clock.t += 31  # alice died
    st_ = queue.stats()
    assert (st_.pending, st_.claimed, st_.expired_leases) == (1, 0, 1)
    assert queue.get("r").state == "pending"
    [c2] = queue.claim("bob")
    assert c2.report.attempts == 2
    with pytest.raises(LeaseLostError, match="no longer held"):
        queue.resolve(c, outcome="actioned", labels=[{"category": "spam", "label_id": "late"}])
    assert queue.store.count() == 0  # nothing written by the lost lease
    done = queue.resolve(c2, outcome="dismissed")
    assert done.state == "resolved" and done.resolved_by == "bob"
    actions = [e.action for e in queue.store.audit("r")]
    assert actions == ["submit", "claim", "lease_expired", "claim", "resolve"]


def test_repeated_failures_dead_letter_and_stay_visible(queue, clock):
    queue.submit(5, "spam", reporter=1, key="poison")
    for attempt in range(1, 4):
        [c] = queue.claim("worker")
        assert c.report.attempts == attempt
        r = queue.fail(c, error=f"crash {attempt}")
    assert r.state == "dead" and r.last_error == "crash 3"
    s = queue.stats()
    assert (s.pending, s.claimed, s.dead) == (0, 0, 1)
    assert [d.key for d in queue.dead_letters()] == ["poison"]
    assert queue.claim("worker") == []
    back = queue.requeue("poison", actor="oncall", reason="fixed the parser")
    assert back.state == "pending" and back.attempts == 0
    with pytest.raises(ValidationError, match="dead-lettered"):
        queue.requeue("poison", actor="oncall", reason="again")


def test_expired_leases_count_towards_dead_letter(queue, clock):
    queue.submit(5, "spam", reporter=1, key="r")
    for _ in range(3):
        queue.claim("dies", lease_s=1)
        clock.t += 2
    # Visible as dead before any process rewrites the row.
    assert queue.stats().dead == 1 and queue.get("r").state == "dead"
    assert queue.claim("next") == []  # the reaper moves it to dead
    assert queue.dead_letters()[0].key == "r"


def test_release_and_extend(queue, clock):
    queue.submit(5, "spam", reporter=1, key="r")
    [c] = queue.claim("alice", lease_s=10)
    clock.t += 8
    c = queue.extend(c, lease_s=10)
    clock.t += 8
    assert queue.stats().claimed == 1
    r = queue.release(c)
    assert r.state == "pending" and r.attempts == 0
    with pytest.raises(LeaseLostError):
        queue.release(c)


def test_resolve_writes_labels_in_the_same_transaction(queue):
    queue.store.add(5, "spam", label_id="old-spam", severity=0.2)
    queue.submit(5, "child_safety", reporter=1, key="r")
    [c] = queue.claim("alice")
    done = queue.resolve(
        c,
        outcome="actioned",
        labels=[{"category": "csam_seller", "label_id": "lab-r", "severity": 1.0}],
        retract=["old-spam"],
        reason="confirmed",
    )
    assert done.outcome == "actioned"
    lab = queue.store.get("lab-r")
    assert (lab.subject, lab.source, lab.evidence) == (5, "reviewer", "report:r")
    assert queue.store.get("old-spam").retracted_by == "alice"


def test_failed_resolution_writes_nothing(queue):
    queue.store.add(9, "spam", label_id="exists", severity=0.2)
    queue.submit(5, "child_safety", reporter=1, key="r")
    [c] = queue.claim("alice")
    with pytest.raises(ValidationError):
        queue.resolve(
            c,
            outcome="actioned",
            labels=[
                {"category": "csam_seller", "label_id": "new-one"},
                {"category": "csam_seller", "label_id": "exists"},  # conflicts: rolls back all
            ],
        )
    with pytest.raises(ValidationError):
        queue.store.get("new-one")
    assert queue.get("r").state == "claimed"
    assert queue.resolve(c, outcome="dismissed").state == "resolved"


def test_stats_oldest_pending_age(queue, clock):
    assert queue.stats().oldest_pending_age_s is None
    queue.submit(1, "spam", reporter=1, key="a")
    clock.t += 100
    queue.submit(2, "spam", reporter=1, key="b")
    clock.t += 50
    s = queue.stats()
    assert s.pending == 2 and s.oldest_pending_age_s == pytest.approx(150)
    assert s.total == 2


def test_concurrent_submitters_lose_nothing(tmp_path):
    q = ReportQueue(str(tmp_path / "q.db"))
    acked: list[str] = []
    lock = threading.Lock()

    def work(t):
        for i in range(25):
            key = f"t{t}-{i}"
            q.submit(i, "spam", reporter=t, key=key)
            with lock:
                acked.append(key)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r.key for r in q.reports()) == sorted(acked)
    assert q.stats().pending == 100
    q.close()


def test_triage_orders_most_dangerous_first(queue, clock):
    queue.store.add("seller", "csam_seller", severity=1.0, confidence=0.9)
    queue.submit("spammer", "spam", reporter="u1", key="old-spam")
    clock.t += 3600
    queue.submit("seller", "spam", reporter="u2", key="seller-report")
    for i in range(5):
        queue.submit("groomer", "child_safety", reporter=f"g{i}", key=f"g{i}")
    queue.submit("neigh", "harassment", reporter="u3", key="neigh")
    order = queue.triage(neighbourhood_risk={"neigh": 0.5})
    keys = [e.report.key for e in order]
    assert keys[0] == "seller-report"  # labelled seller outranks everything
    assert keys.index("neigh") < keys.index("g0") < keys.index("old-spam")
    assert keys.index("g0") < keys.index("g1")  # same priority: older (earlier arrival) first
    top = order[0]
    w = TriageWeights()
    expected = (
        w.risk * 0.9 + w.reporters * math.log1p(1) / math.log1p(10) + w.category * 0.1 + w.age * 0.0
    )
    assert top.priority == pytest.approx(expected)
    assert top.label_risk == pytest.approx(0.9)
    g = next(e for e in order if e.report.key == "g0")
    assert g.reporters == 5
    with pytest.raises(ValidationError, match="neighbourhood_risk"):
        queue.triage(neighbourhood_risk={"neigh": 2.0})
    [c] = queue.claim("alice")
    assert c.key == "seller-report"
    [c] = queue.claim("alice", order="fifo")
    assert c.key == "old-spam"


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["submit", "claim", "resolve", "fail", "release", "tick"]),
            st.integers(0, 7),
        ),
        max_size=40,
    )
)
def test_no_report_is_ever_lost(ops):
    """Whatever reviewers do, every submitted report is in exactly one state and counted."""
    clock = Clock()
    q = ReportQueue(LabelStore(clock=clock), max_attempts=2, lease_s=5)
    claims = []
    submitted = set()
    for op, x in ops:
        if op == "submit":
            q.submit(x, "spam", reporter=x, key=f"k{x}")
            submitted.add(f"k{x}")
        elif op == "claim":
            claims += q.claim(f"rev{x}")
        elif op == "tick":
            clock.t += x
        elif claims:
            c = claims.pop(x % len(claims))
            try:
                if op == "resolve":
                    q.resolve(
                        c, outcome="done", labels=[{"category": "spam", "label_id": f"L-{c.key}"}]
                    )
                elif op == "fail":
                    q.fail(c, error="boom")
                else:
                    q.release(c)
            except LeaseLostError:
                pass
    s = q.stats()
    states = {r.key: r.state for r in q.reports()}
    assert set(states) == submitted
    assert s.total == len(submitted)
    assert s.pending == sum(v == "pending" for v in states.values())
    assert s.dead == sum(v == "dead" for v in states.values())
    for key, state in states.items():
        has_label = bool(q.store.labels(int(key[1:]), category="spam"))
        assert has_label == (state == "resolved")


# ---------------------------------------------------------------------- group commit
def _queued(q: ReportQueue, n: int, timeout: float = 20.0) -> None:
    """Wait until ``n`` submissions wait in the intake queue (the store lock is held)."""
    deadline = time.monotonic() + timeout
    while True:
        with q._intake_lock:
            if len(q._intake) >= n:
                return
        assert time.monotonic() < deadline, "submitters never queued"
        time.sleep(0.002)


def _submit_all(q: ReportQueue, calls: list[dict], *, hold: bool = True) -> list:
    """Run each call in its own thread, queued behind the held store lock so that they
    form one group; returns each call's Ack or exception, in call order."""
    out: list = [None] * len(calls)

    def one(i: int) -> None:
        try:
            out[i] = q.submit(**calls[i])
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    if hold:
        q.store._lock.acquire()
    try:
        for i, th in enumerate(threads):
            th.start()
            if hold:
                _queued(q, i + 1)  # arrival order = call order
    finally:
        if hold:
            q.store._lock.release()
    for th in threads:
        th.join(timeout=60)
        assert not th.is_alive(), "a submitter hung"
    return out


def _call(key: str, subject: int = 1, reporter: int = 1, **kw) -> dict:
    return dict(subject=subject, category="spam", reporter=reporter, key=key, **kw)


def test_group_commit_one_transaction_errors_fail_only_their_caller(tmp_path):
    q = ReportQueue(str(tmp_path / "g.db"))
    q.submit(1, "spam", reporter=1, key="taken")
    before = dict(q._group_stats)
    calls = [
        _call("a", subject=10),
        _call("taken", subject=99),  # conflicts with a stored report
        _call("b", subject=11),
        _call("a", subject=10),  # repeated in the group, same content: the first's ack
        _call("c", subject=12),
        _call("c", subject=13),  # repeated in the group, different content: refused
        _call("taken", subject=1),  # retry of the stored report
        _call("bad", subject=None),  # invalid: refused before queueing
    ]
    out = _submit_all(q, calls[:-1]) + _submit_all(q, calls[-1:], hold=False)
    a1, conflict, b, a2, c1, c2, retry, bad = out
    assert isinstance(conflict, ValidationError) and "different content" in str(conflict)
    assert isinstance(c2, ValidationError) and "different content" in str(c2)
    assert isinstance(bad, ValidationError)
    assert not a1.duplicate and a2.duplicate and a1.seq == a2.seq
    assert not b.duplicate and not c1.duplicate and retry.duplicate
    # Seven submissions queued behind the lock were written in one transaction.
    assert q._group_stats["batches"] == before["batches"] + 1
    assert q._group_stats["reports"] == before["reports"] + 5
    stored = {r.key: r for r in q.reports()}
    assert set(stored) == {"taken", "a", "b", "c"}
    assert (stored["taken"].subject, stored["a"].subject, stored["c"].subject) == (1, 10, 12)
    assert [stored[k].seq for k in "abc"] == [a1.seq, b.seq, c1.seq]  # arrival order
    assert all(len([e for e in q.store.audit(k) if e.action == "submit"]) == 1 for k in stored)
    q.close()


def test_group_commit_timeout_raises_instead_of_hanging(tmp_path):
    """A stuck leader: queued callers raise StoreError after submit_timeout; none is
    acknowledged for a report that is not committed, and retries are safe."""
    q = ReportQueue(str(tmp_path / "t.db"))  # the leader waits as long as it takes
    gate = threading.Event()
    insert = q._insert

    def slow_insert(conn, spec):
        if spec["key"] == "slow":
            assert gate.wait(60)
        return insert(conn, spec)

    q._insert = slow_insert
    results: dict = {}
    leader = threading.Thread(
        target=lambda: results.setdefault("slow", q.submit(1, "spam", reporter=1, key="slow"))
    )
    q.store._lock.acquire()
    leader.start()
    _queued(q, 1)
    # Callers arriving from now on give up after 2 s (ample for the leader, once the
    # lock is released, to take them into its batch).
    q.submit_timeout = 2.0
    followers = [_call(f"f{i}", subject=i) for i in range(3)]
    ths = []
    for i, call in enumerate(followers):  # taken into the stuck leader's batch
        ths.append(threading.Thread(target=lambda c=call: _record(results, q, c)))
        ths[-1].start()
        _queued(q, i + 2)
    q.store._lock.release()
    for th in ths:
        th.join(timeout=30)
        assert not th.is_alive()
    # Arriving while the leader is stuck: waits behind it, times out, writes nothing.
    late = _call("late", subject=7)
    _record(results, q, late)
    for key in ("f0", "f1", "f2", "late"):
        assert isinstance(results[key], StoreError), results[key]
    assert "may or may not be stored" in str(results["f0"])
    assert "nothing was written" in str(results["late"])
    gate.set()
    leader.join(timeout=30)
    assert not leader.is_alive() and not results["slow"].duplicate
    # The stuck batch committed after all: its callers got errors, never false acks,
    # and a retry with the same key returns the stored report.
    assert all(q.submit(**c).duplicate for c in followers)
    assert not q.submit(**late).duplicate
    assert q.stats().pending == 5
    q.close()


def _record(results: dict, q: ReportQueue, call: dict) -> None:
    try:
        results[call["key"]] = q.submit(**call)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        results[call["key"]] = exc


class _WriterDied(BaseException):
    pass


def test_dying_leader_fails_its_group_and_the_queue_recovers(tmp_path):
    q = ReportQueue(str(tmp_path / "d.db"))
    commit = q._group._commit_group

    def die(batch):
        raise _WriterDied()

    q._group._commit_group = die
    out = _submit_all(q, [_call(f"k{i}", subject=i) for i in range(4)])
    assert isinstance(out[0], _WriterDied)  # the leader's own exception propagates
    for exc in out[1:]:
        assert isinstance(exc, StoreError) and "interrupted" in str(exc)
    assert q.reports() == []  # nothing acknowledged, nothing written
    q._group._commit_group = commit
    acks = _submit_all(q, [_call(f"k{i}", subject=i) for i in range(4)])
    assert [a.duplicate for a in acks] == [False] * 4
    assert q.stats().pending == 4
    q.close()


def test_closed_store_fails_every_queued_caller(tmp_path):
    q = ReportQueue(str(tmp_path / "c.db"))
    q.store._lock.acquire()
    try:
        out: list = []
        ths = [
            threading.Thread(target=lambda i=i: _record_list(out, q, _call(f"k{i}")))
            for i in range(3)
        ]
        for i, th in enumerate(ths):
            th.start()
            _queued(q, i + 1)
        q.store.close()
    finally:
        q.store._lock.release()
    for th in ths:
        th.join(timeout=30)
        assert not th.is_alive()
    assert len(out) == 3 and all(isinstance(e, StoreError) and "closed" in str(e) for e in out)


def _record_list(out: list, q: ReportQueue, call: dict) -> None:
    try:
        out.append(q.submit(**call))
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        out.append(exc)


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1)), min_size=1, max_size=12),
        min_size=2,
        max_size=8,
    )
)
def test_concurrent_overlapping_keys_exactly_once(plan):
    """Many threads submit overlapping keys, each with one of two contents. For every key,
    the content committed first wins: every submission with it is acknowledged with the
    same seq (exactly one not a duplicate), every other one fails alone with
    ValidationError, and the report is stored exactly once."""
    with tempfile.TemporaryDirectory() as d:
        q = ReportQueue(os.path.join(d, "h.db"))
        outcomes: list[list] = [[None] * len(ops) for ops in plan]

        def work(t: int) -> None:
            for j, (k, variant) in enumerate(plan[t]):
                try:
                    outcomes[t][j] = q.submit(
                        10 * k + variant, "spam", reporter=1000 + k, key=f"key-{k}"
                    )
                except Exception as exc:  # noqa: BLE001 - inspected below
                    outcomes[t][j] = exc

        threads = [threading.Thread(target=work, args=(t,)) for t in range(len(plan))]
        q.store._lock.acquire()  # the first submission of every thread forms one group
        try:
            for th in threads:
                th.start()
            _queued(q, len(plan))
        finally:
            q.store._lock.release()
        for th in threads:
            th.join(timeout=60)
            assert not th.is_alive()
        assert q._group_stats["max_batch"] > 1
        stored = {r.key: r for r in q.reports()}
        seen: dict[str, list] = {}
        for t, ops in enumerate(plan):
            for (k, variant), res in zip(ops, outcomes[t], strict=True):
                seen.setdefault(f"key-{k}", []).append((variant, res))
        assert set(stored) == set(seen)
        for key, subs in seen.items():
            rep = stored[key]
            winner = rep.subject % 10
            acks = [res for v, res in subs if v == winner]
            refused = [res for v, res in subs if v != winner]
            assert all(not isinstance(a, BaseException) for a in acks), acks
            assert all(a.seq == rep.seq for a in acks)
            assert sum(not a.duplicate for a in acks) == 1
            assert all(isinstance(e, ValidationError) for e in refused), refused
            assert [e.action for e in q.store.audit(key)] == ["submit"]
        assert q.stats().pending == len(stored)
        q.close()


class _FailingCommit:
    """Connection proxy whose next COMMIT fails like a full or failing disk."""

    def __init__(self, conn):
        self._c = conn
        self.fail_next = True

    def execute(self, sql, *args):
        if sql == "COMMIT" and self.fail_next:
            self.fail_next = False
            raise sqlite3.OperationalError("disk I/O error")
        return self._c.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._c, name)


def test_failed_commit_acknowledges_no_one_in_the_group(tmp_path):
    q = ReportQueue(str(tmp_path / "f.db"))
    real = q.store._conn
    q.store._conn = _FailingCommit(real)
    calls = [_call(f"k{i}", subject=i) for i in range(4)] + [_call("k0", subject=0)]
    out = _submit_all(q, calls)
    assert all(isinstance(e, StoreError) and "disk I/O error" in str(e) for e in out), out
    assert q.reports() == []
    acks = _submit_all(q, calls)  # the retries commit (the disk recovered)
    assert [a.duplicate for a in acks] == [False] * 4 + [True]
    q.store._conn.fail_next = True  # a lone submitter (a group of one) is refused alike
    with pytest.raises(StoreError, match="disk I/O error"):
        q.submit(9, "spam", reporter=1, key="alone")
    q.store._conn = real
    assert q.stats().pending == 4
    q.close()


def test_leader_that_cannot_get_the_store_times_out_and_hands_over(tmp_path):
    """The store is held elsewhere: the head of the queue gives up after its timeout
    (nothing written) and the next caller takes over as leader."""
    q = ReportQueue(str(tmp_path / "h.db"), submit_timeout=0.3)
    results: dict = {}
    q.store._lock.acquire()  # e.g. a long reviewer transaction
    try:
        first = threading.Thread(target=_record, args=(results, q, _call("first")))
        first.start()
        _queued(q, 1)
        q.submit_timeout = 60.0
        second = threading.Thread(target=_record, args=(results, q, _call("second")))
        second.start()
        _queued(q, 2)
        first.join(timeout=30)
        assert not first.is_alive()
        assert isinstance(results["first"], StoreError)
        assert "nothing was written" in str(results["first"])
    finally:
        q.store._lock.release()
    second.join(timeout=30)
    assert not second.is_alive() and not results["second"].duplicate
    assert [r.key for r in q.reports()] == ["second"]
    q.close()
