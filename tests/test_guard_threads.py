"""One Guard under many threads: slates stay exact and BLAS settings come back intact.

threadpoolctl's limits are process-wide. The kernel limits BLAS to one thread while its
pool runs; overlapping calls from several threads must leave the process's BLAS thread
count as they found it (a naive save/restore per call leaves it at 1 for good).

The checks run in a fresh interpreter: OpenBLAS honours thread-count settings only from
the first thread that ever made one, so in a process where an earlier test set a limit
from the main thread the kernel's settings would be ignored and these checks would pass
without testing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import guardrails as gr
from guardrails.core.plan import PlanPart
from guardrails.core.threads import blas_single_thread as _blas_single_thread
from guardrails.filters import BlockItems, Filter

N_USERS, N_ITEMS = 96, 400


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def _in_fresh_process(name: str) -> None:
    # Two BLAS threads whatever the runner (or an earlier test) set, so that a limit of
    # one left behind shows.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), name],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if "SKIP:" in done.stdout:
        pytest.skip(done.stdout.split("SKIP:", 1)[1].strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout


def _blas_before() -> list[int]:
    before = _blas_threads()
    if not before:
        print("SKIP: no BLAS library that threadpoolctl can control")
        sys.exit(0)
    if min(before) < 2:
        print("SKIP: BLAS already runs one thread: a stuck limit of 1 would not show")
        sys.exit(0)
    return before


class BlockSnapshot(Filter):
    """Drops whatever the snapshot's ``blocked`` mask marks (a snapshot-aware filter)."""

    name = "block_snapshot"
    reason = "labelled"

    def params(self):
        return ()

    def compile_global(self, catalog):
        snap = catalog.snapshot
        if snap is None:
            return None
        return PlanPart(self.name, self.reason, hard_mask=snap.blocked)


class _Snap:
    def __init__(self, version: str, blocked: np.ndarray):
        self.version = version
        self.blocked = blocked


def test_overlapping_limits_restore_the_original():
    _in_fresh_process("overlap")


def test_six_threads_with_policy_and_snapshot_swaps():
    _in_fresh_process("stress")


def test_swap_model_under_concurrent_calls():
    """Every slate comes from exactly one of the models swapped in, and no call fails."""
    rng = np.random.default_rng(5)
    models = [
        gr.FactorModel(rng.normal(size=(N_USERS, 8)), rng.normal(size=(N_ITEMS, 8)))
        for _ in range(2)
    ]
    policy = [BlockItems(np.arange(0, N_ITEMS, 9))]
    users = np.arange(N_USERS)
    want = [
        gr.Guard(m, policy, num_threads=1).recommend(
            users, None, N=8, filter_already_liked_items=False
        )
        for m in models
    ]
    guard = gr.Guard(models[0], policy, block_rows=16, num_threads=2)
    stop = threading.Event()
    seen: list = []
    errors: list = []

    def serve():
        try:
            while not stop.is_set():
                ids, scores = guard.recommend(users, None, N=8, filter_already_liked_items=False)
                hit = [
                    k
                    for k, (i, s) in enumerate(want)
                    if np.array_equal(ids, i) and np.array_equal(scores, s)
                ]
                assert len(hit) == 1
                seen.append(hit[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    k = 0
    while (len(seen) < 60 or len(set(seen)) < 2) and time.monotonic() < deadline and not errors:
        k += 1
        guard.swap_model(models[k % 2])
        time.sleep(0.002)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert len(set(seen)) == 2


def _overlap() -> None:
    """A enters, B enters, A leaves, B leaves: the order that broke a per-call restore."""
    before = _blas_before()
    limiter = _blas_single_thread()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    def a():
        with _blas_single_thread():
            a_in.set()
            b_in.wait(5)
            inside.append((limiter.users, _blas_threads()))
        a_out.set()

    def b():
        a_in.wait(5)
        with _blas_single_thread():
            b_in.set()
            a_out.wait(5)
            inside.append((limiter.users, _blas_threads()))

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert a_out.is_set()
    assert [u for u, _ in inside] == [2, 1]
    # limited while either call runs, whichever thread looks
    assert all(n == 1 for _, counts in inside for n in counts), inside
    assert _blas_threads() == before
    assert limiter.users == 0


def _stress() -> None:
    before = _blas_before()
    rng = np.random.default_rng(11)
    model = gr.FactorModel(rng.normal(size=(N_USERS, 16)), rng.normal(size=(N_ITEMS, 16)))
    policies = [
        gr.Policy([BlockItems(rng.choice(N_ITEMS, 40, replace=False)), BlockSnapshot()])
        for _ in range(3)
    ]
    snaps = [_Snap(f"s{k}", rng.random(N_ITEMS) < 0.2) for k in range(3)]
    users = np.arange(N_USERS)
    # Expected slate and forbidden ids per (policy, snapshot), from single-threaded Guards.
    expected, forbidden = {}, {}
    for p in policies:
        for s in snaps:
            g = gr.Guard(model, p, snapshot=s, num_threads=1)
            r = g.recommend_detailed(users, None, N=10, filter_already_liked_items=False)
            key = (r.policy_version, r.snapshot_version)
            expected[key] = (r.ids, r.scores)
            blocked = s.blocked.copy()
            blocked[p.filters[0].ids] = True
            forbidden[key] = blocked
            assert not blocked[r.ids].any() and (r.ids >= 0).all()
    assert len(expected) == 9
    # Small blocks and two kernel threads: every call runs its pool under the BLAS limit.
    guard = gr.Guard(model, policies[0], snapshot=snaps[0], block_rows=8, num_threads=2)
    stop = threading.Event()
    seen: list = []
    errors: list = []

    def serve(offset: int):
        try:
            while not stop.is_set():
                r = guard.recommend_detailed(users, None, N=10, filter_already_liked_items=False)
                key = (r.policy_version, r.snapshot_version)
                ids, scores = expected[key]
                assert not forbidden[key][r.ids].any()
                assert np.array_equal(r.ids, ids) and np.array_equal(r.scores, scores)
                one = guard.recommend(int(offset), None, N=10, filter_already_liked_items=False)[0]
                assert one.size == 10
                seen.append(key)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    k = 0
    while (len(seen) < 120 or len(set(seen)) < 9) and time.monotonic() < deadline and not errors:
        k += 1
        if k % 2:
            guard.swap_policy(policies[(k // 2) % 3])
        else:
            guard.swap_snapshot(snaps[(k // 6) % 3])
        time.sleep(0.003)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert len(seen) >= 120 and len(set(seen)) == 9
    # Every overlapping limit was released: BLAS is back where the test put it.
    assert _blas_single_thread().users == 0
    assert _blas_threads() == before


if __name__ == "__main__":
    {"overlap": _overlap, "stress": _stress}[sys.argv[1]]()
    print("OK")
