"""Crash tests: processes killed with SIGKILL lose no acknowledged report and corrupt nothing."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from guardrails.signals import LabelStore, ReportQueue

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

KILLS = 20

SUBMITTER = r"""
import os, sys
from guardrails.signals import ReportQueue
path, start = sys.argv[1], int(sys.argv[2])
q = ReportQueue(path)
os.write(1, b"ready\n")
i = start
while True:
    q.submit(i % 50, "child_safety", reporter=i, key=f"k{i}")
    os.write(1, f"k{i}\n".encode())          # acknowledged: committed before this line
    if i % 5 == 0 and i > 0:                 # a client retry of an earlier report
        q.submit((i - 1) % 50, "child_safety", reporter=i - 1, key=f"k{i - 1}")
    i += 1
"""

THREADS = 4
KILLS_THREADED = 12  # fewer kills than the single writer: the file stays under a minute

# Several threads submit through one ReportQueue, so reports are group-committed; each
# thread also retries its own previous report and reports of other threads committed by
# earlier (killed) workers, so groups mix fresh reports with duplicates.
THREADED_SUBMITTER = r"""
import os, random, sys, threading
from guardrails.signals import ReportQueue
path, starts = sys.argv[1], [int(x) for x in sys.argv[2:]]
n = len(starts)
q = ReportQueue(path)

def content(t, i):
    return dict(subject=i % 50, category="child_safety", reporter=t * 1_000_000 + i,
                key=f"k{t}-{i}")

def work(t):
    rng = random.Random(t)
    i = starts[t]
    while True:
        q.submit(**content(t, i))
        os.write(1, f"k{t}-{i}\n".encode())   # acknowledged: committed before this line
        if i % 5 == 0 and i > starts[t]:       # a client retry of its previous report
            q.submit(**content(t, i - 1))
        u = (t + 1) % n
        if starts[u] and i % 3 == 0:           # a retry of a report committed earlier
            q.submit(**content(u, rng.randrange(starts[u])))
        if t == 0 and i % 20 == 0:
            os.write(1, f"M {q._group_stats['max_batch']}\n".encode())
        i += 1

threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(n)]
os.write(1, b"ready\n")
for th in threads:
    th.start()
threading.Event().wait()
"""

REVIEWER = r"""
import os, sys, time
from guardrails.signals import ReportQueue
path, lease = sys.argv[1], float(sys.argv[2])
q = ReportQueue(path, max_attempts=10_000)
os.write(1, b"ready\n")
while True:
    claims = q.claim(f"rev-{os.getpid()}", lease_s=lease, order="fifo")
    if not claims:
        time.sleep(0.01)
        continue
    c = claims[0]
    os.write(1, f"C {c.key}\n".encode())
    time.sleep(0.005)  # reviewing takes a moment: kills land while the lease is held
    q.resolve(c, outcome="actioned",
              labels=[{"category": "spam", "severity": 0.5, "label_id": f"L-{c.key}"}])
    os.write(1, f"R {c.key}\n".encode())
"""


def _run_and_kill(script: str, args: list[str], rng: random.Random) -> list[str]:
    """Start a worker, SIGKILL it at a random moment once it works, return its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Unbuffered pipes: a buffered readline of "ready" may read acknowledgements ahead,
    # and communicate() reads the pipe's descriptor, so those lines would be lost.
    p = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        bufsize=0,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        line = p.stdout.readline()
        assert line == b"ready\n", p.stderr.read().decode()[-2000:]
        time.sleep(rng.uniform(0.0, 0.25))
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return out.decode().splitlines()


def _integrity(path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_submitter_killed_loses_no_acknowledged_report(tmp_path):
    path = str(tmp_path / "intake.db")
    rng = random.Random(1234)
    acked: set[int] = set()
    start = 0
    for _ in range(KILLS):
        lines = _run_and_kill(SUBMITTER, [path, str(start)], rng)
        keys = [int(x[1:]) for x in lines if x.startswith("k")]
        acked.update(keys)
        # Restart just after the last acknowledged key: the one in flight at the kill may or
        # may not be committed, and is resubmitted (idempotently) by the next worker.
        start = (max(keys) + 1) if keys else start
    _integrity(path)
    with LabelStore(path, check="full") as store:
        rows = store._conn.execute(
            "SELECT report_key, subject, reporter, count(*) FROM reports GROUP BY report_key"
        ).fetchall()
    assert acked, "the workers never acknowledged a report"
    stored = {int(k[1:]): (subject, reporter, n) for k, subject, reporter, n in rows}
    for i in acked:
        assert stored[i] == (i % 50, i, 1), i
    # Nothing beyond what was attempted: at most one in-flight key per kill.
    assert len(stored) <= len(acked) + KILLS
    q = ReportQueue(path)
    assert q.stats().pending == len(stored)
    q.close()


def test_threaded_submitter_killed_loses_no_acknowledged_report(tmp_path):
    """SIGKILL a process whose threads submit concurrently (group commit): every report
    acknowledged to any thread survives, exactly once, with its content."""
    path = str(tmp_path / "group.db")
    rng = random.Random(4321)
    acked: set[tuple[int, int]] = set()
    starts = [0] * THREADS
    max_group = 0
    for _ in range(KILLS_THREADED):
        lines = _run_and_kill(THREADED_SUBMITTER, [path, *map(str, starts)], rng)
        for x in lines:
            if x.startswith("k"):
                t, i = map(int, x[1:].split("-"))
                acked.add((t, i))
                # The next worker starts after the last acknowledged report of each
                # thread; the one in flight at the kill is resubmitted (idempotently).
                starts[t] = max(starts[t], i + 1)
            elif x.startswith("M "):
                max_group = max(max_group, int(x[2:]))
    _integrity(path)
    with LabelStore(path, check="full") as store:
        rows = store._conn.execute(
            "SELECT report_key, subject, reporter, count(*) FROM reports GROUP BY report_key"
        ).fetchall()
        submits = dict(
            store._conn.execute(
                "SELECT entity_id, count(*) FROM audit WHERE action = 'submit' GROUP BY entity_id"
            ).fetchall()
        )
    assert len({t for t, _ in acked}) == THREADS, "some thread never acknowledged a report"
    assert max_group > 1, "the threads never shared a group commit"
    stored = {}
    for k, subject, reporter, n in rows:
        t, i = map(int, k[1:].split("-"))
        stored[(t, i)] = (subject, reporter, n)
    for t, i in acked:
        assert stored[(t, i)] == (i % 50, t * 1_000_000 + i, 1), (t, i)
        assert submits[f"k{t}-{i}"] == 1
    # Nothing beyond what was attempted: at most one in-flight report per thread per kill.
    assert len(stored) <= len(acked) + KILLS_THREADED * THREADS
    with ReportQueue(path) as q:
        assert q.stats().pending == len(stored)


def test_reviewer_killed_while_holding_a_lease(tmp_path):
    path = str(tmp_path / "review.db")
    lease = 0.3
    n_reports = 400
    with ReportQueue(path) as q:
        q.submit_many(
            {"subject": i, "category": "spam", "reporter": 1000 + i, "key": f"r{i}"}
            for i in range(n_reports)
        )
    rng = random.Random(99)
    resolved_acked: set[str] = set()
    held_at_kill = 0
    for _ in range(KILLS):
        lines = _run_and_kill(REVIEWER, [path, str(lease)], rng)
        claimed = [x[2:] for x in lines if x.startswith("C ")]
        done = {x[2:] for x in lines if x.startswith("R ")}
        resolved_acked |= done
        held_at_kill += sum(1 for k in claimed if k not in done)
    _integrity(path)
    time.sleep(lease + 0.1)  # every lease held by a dead reviewer has now expired
    q = ReportQueue(path, max_attempts=10_000)
    s = q.stats()
    assert s.claimed == 0
    assert s.pending + s.resolved == n_reports and s.dead == 0
    # The kills landed while leases were held (between claim and resolution), so the
    # lease-expiry path was exercised, not only clean stops.
    assert held_at_kill > 0
    print(
        f"kills with a lease held: {held_at_kill}/{KILLS}, resolved before kills: "
        f"{len(resolved_acked)}"
    )
    reports = {r.key: r for r in q.reports()}
    labels = {lab.label_id for lab in q.store.labels(None)}
    for key, rep in reports.items():
        # Resolution and its label are one transaction: both or neither.
        assert (rep.state == "resolved") == (f"L-{key}" in labels), key
    for key in resolved_acked:
        assert reports[key].state == "resolved"
    # Reports whose reviewer died return to the queue and can be finished.
    while True:
        claims = q.claim("survivor", n=50, order="fifo")
        if not claims:
            break
        for c in claims:
            q.resolve(
                c,
                outcome="actioned",
                labels=[{"category": "spam", "severity": 0.5, "label_id": f"L-{c.key}"}],
            )
    s = q.stats()
    assert (s.resolved, s.pending, s.claimed, s.dead) == (n_reports, 0, 0, 0)
    q.close()
