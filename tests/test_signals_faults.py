"""Store faults: a full disk, a read-only file, a snapshot file corrupted under a running
ServingGuard. Nothing is acknowledged that is not durably stored, intake recovers once the
fault is gone, and serving keeps failing closed and says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import FactorModel, Guard, ServingGuard
from guardrails.core.plan import PlanPart
from guardrails.exceptions import FailClosedError, FailClosedWarning, StoreError
from guardrails.filters import BlockItems, Filter
from guardrails.signals import IdMap, LabelStore, ReportQueue, Snapshot

N_USERS, N_ITEMS = 30, 80


def _fill(q: ReportQueue, n: int, prefix: str = "seed") -> None:
    for i in range(n):
        q.submit(i, "spam", reporter=1000 + i, key=f"{prefix}{i}")


def _limit_pages(q: ReportQueue, extra: int | None) -> None:
    """Simulate a full disk: the file may grow by ``extra`` pages (``None``: no limit)."""
    db = q.store.database
    with db.lock:
        if extra is None:
            db.conn.execute("PRAGMA max_page_count = 1073741823")
        else:
            pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
            db.conn.execute(f"PRAGMA max_page_count = {pages + extra}")


def _stored(path: str) -> dict:
    """Reports in the file as a fresh process would see them: key -> (subject, note)."""
    with LabelStore(path, check="full") as s:
        rows = s.database.query("SELECT report_key, subject, note FROM reports")
    return {k: (subj, note) for k, subj, note in rows}


# ---------------------------------------------------------------------- full disk
def test_full_disk_refuses_submit_and_recovers(tmp_path):
    path = str(tmp_path / "full.db")
    q = ReportQueue(path)
    _fill(q, 5)
    _limit_pages(q, 0)
    acked, refused = {}, []
    for i in range(200):
        key = f"k{i}"
        try:
            acked[key] = q.submit(i, "spam", reporter=i, key=key, note="x" * 300)
        except StoreError as exc:
            assert "full" in str(exc) and "not acknowledged" in str(exc)
            refused.append(key)
    assert refused, "the page limit never filled the store"
    # Reads keep working on a full store.
    assert q.stats().pending == 5 + len(acked)
    with pytest.raises(StoreError, match="full"):
        q.submit_many(
            [
                dict(subject=1, category="spam", reporter=2, key=f"m{i}", note="y" * 500)
                for i in range(20)
            ]
        )
    # Space returns: the refused reports are accepted on retry, each exactly once.
    _limit_pages(q, None)
    for key in refused:
        i = int(key[1:])
        ack = q.submit(i, "spam", reporter=i, key=key, note="x" * 300)
        assert not ack.duplicate  # it was not stored before
    q.close()
    stored = _stored(path)
    assert all(stored[k] == (int(k[1:]), "x" * 300) for k in acked)
    assert all(k in stored for k in refused)
    assert not any(k.startswith("m") for k in stored)  # submit_many: all or none


def test_full_disk_under_group_commit_acknowledges_only_what_is_stored(tmp_path):
    path = str(tmp_path / "group-full.db")
    q = ReportQueue(path)
    _fill(q, 3)
    _limit_pages(q, 2)
    results: dict = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(40):
            key = f"t{t}-{i}"
            try:
                out = q.submit(t * 100 + i, "spam", reporter=t, key=key, note="z" * 400)
            except StoreError as exc:
                out = exc
            with lock:
                results[key] = out

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads)
    acked = [k for k, v in results.items() if not isinstance(v, BaseException)]
    refused = [k for k, v in results.items() if isinstance(v, BaseException)]
    assert refused and acked
    assert all(isinstance(results[k], StoreError) for k in refused)
    _limit_pages(q, None)
    q.close()
    stored = _stored(path)
    for k in acked:  # no false acknowledgement
        t, i = map(int, k[1:].split("-"))
        assert stored[k] == (t * 100 + i, "z" * 400), k
    # A report refused for lack of space was rolled back, not half-written.
    assert not [k for k in refused if k in stored]
    with ReportQueue(path) as q2:
        assert q2.submit(1, "spam", reporter=1, key=refused[0]).duplicate is False


# ---------------------------------------------------------------------- read-only file
_READ_ONLY_CHILD = r"""
import json, os, sys
from guardrails.exceptions import StoreError
from guardrails.signals import ReportQueue
if os.geteuid() == 0:  # root writes through file modes: drop to an ordinary user
    os.setgid(65534)
    os.setuid(65534)
out = {}
q = ReportQueue(sys.argv[1])
out["pending"] = q.stats().pending
try:
    q.submit(77, "spam", reporter=5, key="while-read-only")
    out["submit"] = "acknowledged"
except StoreError as exc:
    out["submit"] = str(exc)
out["keys"] = sorted(r.key for r in q.reports())
print(json.dumps(out))
"""


def test_read_only_file_refuses_submit_and_recovers():
    # A directory of its own that an unprivileged child may enter (pytest's tmp_path is
    # private to the user running the tests).
    d = tempfile.mkdtemp(prefix="guardrails-ro-")
    try:
        os.chmod(d, 0o777)
        path = os.path.join(d, "ro.db")
        with ReportQueue(path) as q:
            _fill(q, 4)
        os.chmod(path, 0o444)
        proc = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CHILD, path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
            pytest.skip("cannot drop privileges to test a read-only file as root")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["pending"] == 4  # reads still work
        assert "read-only" in out["submit"] and "not acknowledged" in out["submit"]
        assert out["keys"] == [f"seed{i}" for i in range(4)]
        # Writable again: intake resumes, and the refused report was never stored.
        os.chmod(path, 0o644)
        for side in ("-wal", "-shm"):
            if os.path.exists(path + side):
                os.chmod(path + side, 0o666)
        with ReportQueue(path) as q:
            assert not q.submit(77, "spam", reporter=5, key="while-read-only").duplicate
            assert q.stats().pending == 5
    finally:
        for name in os.listdir(d):
            os.chmod(os.path.join(d, name), 0o666)
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


# ---------------------------------------------------------------------- snapshots
class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(3)
    return FactorModel(rng.normal(size=(N_USERS, 6)), rng.normal(size=(N_ITEMS, 6)))


@pytest.fixture(scope="module")
def snapshot_bytes(tmp_path_factory):
    """One saved snapshot (labels on a third of the items) and its content hash."""
    clock = Clock(1_000.0)
    store = LabelStore(clock=clock)
    store.add_many({"subject": int(i), "category": "bad"} for i in range(0, N_ITEMS, 3))
    snap = store.snapshot(IdMap(np.arange(N_ITEMS)), at=1_000.0)
    path = tmp_path_factory.mktemp("snap") / "s.npz"
    snap.save(path)
    return path.read_bytes(), snap


def _corrupt(data: bytes, how: str, where: float) -> bytes:
    pos = min(len(data) - 1, int(where * len(data)))
    if how == "flip":
        out = bytearray(data)
        out[pos] ^= 0xFF
        return bytes(out)
    if how == "truncate":
        return data[:pos]
    if how == "zero":
        out = bytearray(data)
        out[pos : pos + 512] = bytes(len(out[pos : pos + 512]))
        return bytes(out)
    return os.urandom(len(data))  # "garbage"


@settings(max_examples=60, deadline=None)
@given(how=st.sampled_from(["flip", "truncate", "zero", "garbage"]), where=st.floats(0, 1))
def test_corrupted_snapshot_file_never_loads_different_content(snapshot_bytes, how, where):
    """A damaged file either fails to load with the library's StoreError, or (damage in
    bytes nothing reads, such as a zip timestamp) loads exactly the saved content."""
    data, snap = snapshot_bytes
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.npz")
        with open(path, "wb") as fh:
            fh.write(_corrupt(data, how, where))
        try:
            loaded = Snapshot.load(path)
        except StoreError:
            return
        assert loaded.content_hash == snap.content_hash
        assert np.array_equal(loaded.flagged, snap.flagged)


def test_snapshot_file_corrupted_under_running_serving_guard(model, snapshot_bytes, tmp_path):
    data, snap = snapshot_bytes
    clock = Clock(1_010.0)
    path = tmp_path / "live.npz"
    path.write_bytes(data)
    guard = Guard(model, [BlockItems([0])])
    raising = ServingGuard(guard, max_snapshot_age=60, clock=clock)
    held = raising.load_snapshot(path)
    served = raising.recommend_detailed(np.arange(5), N=5, filter_already_liked_items=False)
    assert served.snapshot_version == held.version
    # The file is damaged while the guard serves: the refresher's loads fail, the held
    # snapshot (in memory, verified when it was loaded) is served until it is too old.
    path.write_bytes(_corrupt(data, "flip", 0.4))
    for _ in range(3):
        with pytest.raises(StoreError):
            raising.load_snapshot(path)
    assert raising.stats["load_failures"] == 3 and "Corrupt" in raising.last_load_error
    again = raising.recommend_detailed(np.arange(5), N=5, filter_already_liked_items=False)
    assert np.array_equal(again.ids, served.ids)
    clock.t += 120  # past max_snapshot_age
    with pytest.raises(FailClosedError, match="s old.*snapshot refresh failed: Corrupt"):
        raising.recommend(0, N=5, filter_already_liked_items=False)
    with pytest.raises(StoreError):
        raising.load_snapshot(path)
    with pytest.raises(FailClosedError, match="refresh failed"):
        raising.similar_items(4, N=5)
    assert raising.stats["served"] == 2 and raising.stats["refused"] == 2

    # The same under a fallback: the vetted list, less every item the held snapshot
    # labels, and the result says that it failed closed and why.
    fallback = np.arange(N_ITEMS)
    sg = ServingGuard(
        guard, max_snapshot_age=60, on_failure="fallback", fallback_items=fallback, clock=clock
    )
    with pytest.raises(StoreError):
        sg.load_snapshot(path)
    with pytest.warns(FailClosedWarning, match="refresh failed"):
        r = sg.recommend_detailed(np.arange(4), N=6, filter_already_liked_items=False)
    assert r.info["fail_closed"] == "stale" and "Corrupt" in r.info["message"]
    assert not np.isin(r.ids, np.flatnonzero(snap.flagged)).any()
    assert not np.isin(r.ids, [0]).any()

    # A good file restores service and clears the error.
    path.write_bytes(data)
    clock.t = 1_010.0
    assert raising.load_snapshot(path).version == held.version
    assert raising.last_load_error is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", FailClosedWarning)
        assert raising.recommend(0, N=5, filter_already_liked_items=False)[0].size == 5


def test_refresher_on_a_corrupt_file_never_lets_a_slate_through_unchecked(
    model, snapshot_bytes, tmp_path
):
    """A refresher thread keeps reloading a file that is corrupted and repaired under it
    while readers call: every call is served from the verified snapshot or refused."""
    data, snap = snapshot_bytes
    clock = Clock(1_010.0)
    path = tmp_path / "flaky.npz"
    path.write_bytes(data)
    sg = ServingGuard(Guard(model, [BlockItems([0])]), max_snapshot_age=60, clock=clock)
    sg.load_snapshot(path)
    stop = threading.Event()
    outcomes: list = []

    def refresher() -> None:
        k = 0
        while not stop.is_set():
            tmp = tmp_path / "next.npz"
            tmp.write_bytes(data if k % 3 == 0 else _corrupt(data, "flip", (k % 7) / 7))
            os.replace(tmp, path)
            try:
                sg.load_snapshot(path)
            except StoreError:
                pass
            k += 1

    def reader() -> None:
        for i in range(60):
            if i == 30:
                clock.t = 1_200.0  # the held snapshot turns stale mid-run
            try:
                r = sg.recommend_detailed(i % N_USERS, N=5, filter_already_liked_items=False)
                outcomes.append(r.snapshot_version)
            except FailClosedError as exc:
                outcomes.append(exc)

    t = threading.Thread(target=refresher)
    t.start()
    try:
        reader()
    finally:
        stop.set()
        t.join(timeout=60)
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert served and all(v == snap.version for v in served)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert refused and all("s old" in str(e) for e in refused)


# ---------------------------------------------------------------------- fallback = policy
class _HideFromViewer(Filter):
    """Test filter: viewer ``u`` never sees item ``u + 1``; item 5 is demoted below all."""

    name = "hide_from_viewer"

    def __init__(self):
        self.reason = "test"

    def params(self):
        return ()

    def compile_global(self, catalog):
        pen = np.zeros(catalog.n, dtype=np.float32)
        pen[5] = 10.0
        return PlanPart(self.name, self.reason, penalty=pen)

    def compile_viewers(self, catalog, viewers):
        if viewers.userids is None:
            return None
        m = viewers.size
        cols = np.minimum(viewers.userids + 1, catalog.n - 1)
        mask = sp.csr_matrix((np.ones(m, bool), cols, np.arange(m + 1)), shape=(m, catalog.n))
        return PlanPart(self.name, self.reason, viewer_mask=mask)


@settings(max_examples=25, deadline=None)
@given(users=st.lists(st.integers(0, N_USERS - 1), min_size=1, max_size=6), n=st.integers(1, 12))
def test_fallback_runs_through_the_policy_and_batches_equal_single_calls(model, users, n):
    """The fallback is the guard's own run over the vetted list: per-viewer masks and
    penalties apply, and a batch equals its single calls row for row."""
    fallback = np.arange(20)
    sg = ServingGuard(
        Guard(model, [_HideFromViewer()]), on_failure="fallback", fallback_items=fallback
    )  # no snapshot: fails closed as "missing"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FailClosedWarning)
        batch = sg.recommend_detailed(users, None, N=n, filter_already_liked_items=False)
        singles = [
            sg.recommend_detailed(u, None, N=n, filter_already_liked_items=False) for u in users
        ]
    assert batch.info["fail_closed"] == "missing" and batch.ids.shape == (len(users), n)
    for u, row, single in zip(users, batch.ids, singles, strict=True):
        assert row[row >= 0].tolist() == single.ids.tolist()
        want = [i for i in fallback.tolist() if i not in (u + 1, 5)] + [5]
        assert single.ids.tolist() == [i for i in want if i != u + 1][:n]
