"""Snapshots in a running Guard: atomic swaps under concurrency, and failing closed."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import FactorModel, Guard
from guardrails.core.plan import PlanPart
from guardrails.exceptions import (
    CorruptStoreError,
    FailClosedError,
    FailClosedWarning,
    StoreError,
    ValidationError,
)
from guardrails.filters import BlockItems, Filter
from guardrails.signals import IdMap, LabelStore, ServingGuard, Snapshot

N_USERS, N_ITEMS = 40, 120


class BlockCategory(Filter):
    """Test filter: drop every candidate the snapshot labels with ``category``."""

    name = "block_category"

    def __init__(self, category: str):
        self.category = category
        self.reason = "labelled"

    def params(self):
        return (self.category,)

    def compile_global(self, catalog):
        snap = catalog.snapshot
        if snap is None:
            return None
        return PlanPart(self.name, self.reason, hard_mask=snap.has(self.category))


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    return FactorModel(rng.normal(size=(N_USERS, 8)), rng.normal(size=(N_ITEMS, 8)))


@pytest.fixture(scope="module")
def id_map():
    return IdMap(np.arange(N_ITEMS) * 10 + 5)  # external account ids differ from indices


def _store_with_waves(clock, n_waves=4, seed=1):
    """Labels added in waves at times 100, 200, ...: a snapshot per wave differs."""
    rng = np.random.default_rng(seed)
    s = LabelStore(clock=clock)
    for w in range(n_waves):
        picked = rng.choice(N_ITEMS, size=15, replace=False)
        s.add_many(
            {
                "subject": int(i) * 10 + 5,
                "category": "bad",
                "created_at": 100.0 * (w + 1),
                "expires_at": 100.0 * (w + 2) + 50,
            }
            for i in picked
        )
    return s


def test_snapshot_swaps_are_atomic_under_concurrency(model, id_map):
    clock = Clock()
    store = _store_with_waves(clock)
    snaps = [store.snapshot(id_map, at=100.0 * (w + 1) + 10) for w in range(4)]
    assert len({s.version for s in snaps}) == 4
    users = np.arange(N_USERS)
    expected = {}
    for s in snaps:
        g = Guard(model, [BlockCategory("bad")], snapshot=s)
        r = g.recommend_detailed(users, N=10, filter_already_liked_items=False)
        expected[s.version] = (r.ids, r.scores)
        assert not np.isin(r.ids, np.flatnonzero(s.has("bad"))).any()
    guard = Guard(model, [BlockCategory("bad")], snapshot=snaps[0])
    stop = threading.Event()
    seen, errors = [], []

    def recommend():
        try:
            while not stop.is_set():
                r = guard.recommend_detailed(users, N=10, filter_already_liked_items=False)
                ids, scores = expected[r.snapshot_version]
                # Exactly one snapshot: the whole slate equals the slate of the version it reports.
                assert np.array_equal(r.ids, ids) and np.array_equal(r.scores, scores)
                seen.append(r.snapshot_version)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=recommend) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    k = 0
    while (len(seen) < 150 or len(set(seen)) < 4) and time.monotonic() < deadline and not errors:
        k += 1
        guard.swap_snapshot(snaps[k % 4])
        time.sleep(0.002)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(seen) >= 150 and len(set(seen)) == 4


def _serving(model, snapshot, clock, **kw):
    guard = Guard(model, [BlockCategory("bad"), BlockItems([3])], snapshot=snapshot)
    return ServingGuard(guard, clock=clock, **kw)


def test_fresh_snapshot_is_served(model, id_map):
    clock = Clock(1000.0)
    snap = _store_with_waves(clock).snapshot(id_map, at=990.0)
    sg = _serving(model, snap, clock, max_snapshot_age=60)
    r = sg.recommend_detailed(0, N=5, filter_already_liked_items=False)
    assert r.snapshot_version == snap.version and "fail_closed" not in r.info
    assert sg.stats["served"] == 1
    ids, _ = sg.similar_items(4, N=5)
    assert ids.size == 5


def test_stale_snapshot_raises(model, id_map):
    clock = Clock(1000.0)
    snap = _store_with_waves(clock).snapshot(id_map, at=900.0)
    sg = _serving(model, snap, clock, max_snapshot_age=60)
    with pytest.raises(FailClosedError, match="s old"):
        sg.recommend(0, N=5, filter_already_liked_items=False)
    assert sg.stats["stale"] == 1 and sg.stats["refused"] == 1 and sg.stats["served"] == 0
    with pytest.raises(FailClosedError):
        sg.similar_users(0)
    # A fresh snapshot restores service.
    sg.swap_snapshot(_store_with_waves(clock).snapshot(id_map, at=995.0))
    assert sg.recommend(0, N=5, filter_already_liked_items=False)[0].size == 5


def test_missing_snapshot_raises(model):
    guard = Guard(model, [BlockItems([3])])
    sg = ServingGuard(guard)
    with pytest.raises(FailClosedError, match="no safety-signal snapshot"):
        sg.recommend(0, N=5, filter_already_liked_items=False)
    assert sg.stats["missing"] == 1


def test_unreadable_snapshot_raises(model, id_map):
    clock = Clock(1000.0)
    snap = _store_with_waves(clock).snapshot(id_map, at=990.0)
    sg = _serving(model, snap, clock)
    with pytest.raises(ValidationError, match="snapshot of 120 items"):
        sg.swap_snapshot(_store_with_waves(clock).snapshot(np.arange(7), at=990.0))

    class NoTime:
        version = "x"
        n_items = N_ITEMS

        def has(self, category):
            return np.zeros(N_ITEMS, dtype=bool)

    sg.guard.swap_snapshot(NoTime())
    with pytest.raises(FailClosedError, match="no version or time"):
        sg.recommend(0, N=5, filter_already_liked_items=False)
    assert sg.stats["unreadable"] == 1


def test_corrupt_snapshot_file_keeps_old_until_stale(model, id_map, tmp_path):
    clock = Clock(1000.0)
    store = _store_with_waves(clock)
    good = store.snapshot(id_map, at=990.0)
    sg = _serving(model, good, clock, max_snapshot_age=60)
    path = tmp_path / "next.npz"
    store.snapshot(id_map, at=1000.0).save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError):
        sg.load_snapshot(path)
    with pytest.raises(StoreError):
        sg.load_snapshot(tmp_path / "missing.npz")
    assert sg.stats["load_failures"] == 2
    assert sg.snapshot is good
    assert (
        sg.recommend_detailed(0, N=5, filter_already_liked_items=False).snapshot_version
        == good.version
    )
    clock.t += 100
    with pytest.raises(FailClosedError):
        sg.recommend(0, N=5, filter_already_liked_items=False)
    fresh = store.snapshot(id_map, at=clock.t)
    fresh.save(path)
    assert sg.load_snapshot(path).version == fresh.version
    assert (
        sg.recommend_detailed(0, N=5, filter_already_liked_items=False).snapshot_version
        == fresh.version
    )


def test_fallback_honours_masks_and_records_it(model, id_map):
    clock = Clock(1000.0)
    snap = _store_with_waves(clock).snapshot(id_map, at=900.0)  # stale
    flagged = np.flatnonzero(snap.flagged)
    fallback = np.concatenate([[3], flagged[:5], np.arange(N_ITEMS)])
    sg = _serving(
        model, snap, clock, max_snapshot_age=60, on_failure="fallback", fallback_items=fallback
    )
    liked = sp.csr_matrix((np.ones(2), [0, 1], [0, 2]), shape=(1, N_ITEMS))
    with pytest.warns(FailClosedWarning, match="safe fallback"):
        r = sg.recommend_detailed(0, liked, N=8, filter_items=[2])
    assert r.info["fail_closed"] == "stale" and r.info["fallback"] is True
    assert r.snapshot_version == snap.version
    assert sg.stats["fallback"] == 1 and sg.stats["stale"] == 1
    ids = r.ids
    assert ids.size == 8
    assert 3 not in ids  # BlockItems hard mask
    assert not np.isin(ids, flagged).any()  # labelled in the held snapshot
    assert not np.isin(ids, [0, 1, 2]).any()  # liked and filter_items
    want = [i for i in fallback if i not in (0, 1, 2, 3) and i not in set(flagged.tolist())][:8]
    assert ids.tolist() == want
    assert np.all(np.diff(r.scores) < 0) and r.scores.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FailClosedWarning)
        batch = sg.recommend_detailed([0, 1], None, N=5, filter_already_liked_items=False)
        sim = sg.similar_items_detailed(want[0], N=4)
    assert batch.ids.shape == (2, 5)
    assert want[0] not in sim.ids and 3 not in sim.ids


def test_fallback_requires_items(model):
    with pytest.raises(ValidationError, match="fallback_items"):
        ServingGuard(Guard(model), on_failure="fallback")


@settings(max_examples=30, deadline=None)
@given(
    blocked=st.lists(st.integers(0, N_ITEMS - 1), max_size=30),
    fallback=st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=60),
    excluded=st.lists(st.integers(0, N_ITEMS - 1), max_size=10),
    n=st.integers(1, 20),
)
def test_fallback_never_serves_a_suppressed_item(model, blocked, fallback, excluded, n):
    guard = Guard(model, [BlockItems(np.array(blocked, dtype=np.int64))])
    sg = ServingGuard(guard, on_failure="fallback", fallback_items=fallback)  # no snapshot: missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FailClosedWarning)
        r = sg.recommend_detailed(
            [0, 1, 2], None, N=n, filter_already_liked_items=False, filter_items=excluded or None
        )
    served = r.ids[r.ids >= 0]
    assert not np.isin(served, blocked).any()
    assert not np.isin(served, excluded).any()
    assert np.isin(served, fallback).all()
    allowed = [i for i in dict.fromkeys(fallback) if i not in set(blocked) | set(excluded)]
    assert r.ids.shape == (3, n)
    for row in r.ids:
        assert row[row >= 0].tolist() == allowed[:n]


def test_fallback_that_cannot_be_built_raises(model, id_map):
    clock = Clock(1000.0)

    class Broken(Filter):
        name = "broken"
        reason = "x"
        failing = False

        def compile_viewers(self, catalog, viewers):
            if Broken.failing:
                raise RuntimeError("signals unreadable")
            return None

    snap = _store_with_waves(clock).snapshot(id_map, at=100.0)
    guard = Guard(model, [Broken()], snapshot=snap)
    sg = ServingGuard(
        guard, max_snapshot_age=1, on_failure="fallback", fallback_items=[1, 2, 3], clock=clock
    )
    Broken.failing = True
    with pytest.raises(FailClosedError, match="could not be served"):
        sg.recommend(0, N=2, filter_already_liked_items=False)
    assert sg.stats["refused"] == 1 and sg.stats["fallback"] == 0


def test_swap_race_is_retried(model, id_map):
    """A swap between the check and the slate is never served unchecked."""
    clock = Clock(1000.0)
    store = _store_with_waves(clock)
    fresh = store.snapshot(id_map, at=995.0)
    stale = store.snapshot(id_map, at=500.0)
    sg = _serving(model, fresh, clock, max_snapshot_age=60)
    real = sg.guard.execute

    def racing(*a, **k):
        sg.guard.swap_snapshot(stale)  # lands after the check, before the slate
        return real(*a, **k)

    sg.guard.execute = racing
    with pytest.raises(FailClosedError, match="s old"):
        sg.recommend(0, N=5, filter_already_liked_items=False)
    assert sg.stats["served"] == 0


def test_snapshot_save_load_into_guard(model, id_map, tmp_path):
    clock = Clock(1000.0)
    snap = _store_with_waves(clock).snapshot(id_map, at=990.0)
    snap.save(tmp_path / "s.npz")
    loaded = Snapshot.load(tmp_path / "s.npz")
    g1 = Guard(model, [BlockCategory("bad")], snapshot=snap)
    g2 = Guard(model, [BlockCategory("bad")], snapshot=loaded)
    a = g1.recommend_detailed(np.arange(5), N=10, filter_already_liked_items=False)
    b = g2.recommend_detailed(np.arange(5), N=10, filter_already_liked_items=False)
    assert a.snapshot_version == b.snapshot_version == snap.version
    assert np.array_equal(a.ids, b.ids)
