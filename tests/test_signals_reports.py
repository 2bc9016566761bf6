"""ReportQueue: idempotent intake, leases, dead letters, atomic resolution, counters, triage."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.exceptions import ValidationError
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
