"""Snapshots: expiry, retraction and supersession (property tests), id maps, files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.exceptions import (
    CorruptStoreError,
    NotAGuardrailsStoreError,
    SchemaVersionError,
    StoreError,
    ValidationError,
)
from guardrails.signals import IdMap, LabelStore, Snapshot
from guardrails.signals.labels import KNOWN_SOURCES

CATS = ("a", "b")
SOURCES = ("reviewer", "classifier", "hash_match", "zz_custom")


def _label_strategy():
    return st.fixed_dictionaries(
        {
            "subject": st.sampled_from([0, 1, 2, 3, 77, "s"]),
            "category": st.sampled_from(CATS),
            "created": st.integers(0, 20),
            "ttl": st.one_of(st.none(), st.integers(1, 10)),
            "severity": st.sampled_from([0.0, 0.25, 0.5, 1.0]),
            "confidence": st.sampled_from([0.5, 1.0]),
            "source": st.sampled_from(SOURCES),
            "retract": st.one_of(st.none(), st.integers(0, 30)),
        }
    )


def _reference(history, at):
    """The documented semantics, written directly: effective label per (subject, category)."""
    best = {}
    for seq, lab in enumerate(history):
        created = float(lab["created"])
        expires = None if lab["ttl"] is None else created + lab["ttl"]
        retracted = None if lab["retract"] is None else float(lab["retract"])
        if not (
            created <= at
            and (expires is None or expires > at)
            and (retracted is None or retracted > at)
        ):
            continue
        key = (lab["subject"], lab["category"])
        if key not in best or (created, seq) >= (best[key][0], best[key][1]):
            best[key] = (created, seq, lab)
    return {k: (v[1], v[2]) for k, v in best.items()}


def _fill(history) -> LabelStore:
    s = LabelStore()
    for i, lab in enumerate(history):
        created = float(lab["created"])
        s.add(
            lab["subject"],
            lab["category"],
            severity=lab["severity"],
            confidence=lab["confidence"],
            source=lab["source"],
            label_id=f"L{i}",
            created_at=created,
            expires_at=None if lab["ttl"] is None else created + lab["ttl"],
        )
    for i, lab in enumerate(history):
        if lab["retract"] is not None:
            s.retract(f"L{i}", by="rev", reason="test", at=float(lab["retract"]))
    return s


@settings(max_examples=40, deadline=None)
@given(history=st.lists(_label_strategy(), max_size=25), at=st.integers(0, 35))
def test_snapshot_matches_documented_semantics(history, at):
    s = _fill(history)
    id_map = IdMap([0, 1, 2, 3])
    snap = s.snapshot(id_map, at=float(at))
    ref_seq = _reference(history, float(at))
    ref = {k: v[1] for k, v in ref_seq.items()}
    for _j, cat in enumerate(CATS):
        want_has = np.zeros(4, dtype=bool)
        want_sev = np.zeros(4, dtype=np.float32)
        for (subj, c), lab in ref.items():
            if c == cat and isinstance(subj, int) and subj < 4 and lab["severity"] > 0:
                want_has[subj] = True
                want_sev[subj] = lab["severity"]
        if cat in snap.categories:
            np.testing.assert_array_equal(snap.has(cat), want_has)
            np.testing.assert_array_equal(snap.severity(cat), want_sev)
        else:
            assert not want_has.any()
    want_max = np.zeros(4, dtype=np.float32)
    want_flags = np.zeros(4, dtype=np.uint32)
    for (subj, _c), lab in ref.items():
        if isinstance(subj, int) and subj < 4 and lab["severity"] > 0:
            want_max[subj] = max(want_max[subj], lab["severity"])
            want_flags[subj] |= 1 << snap.sources.index(lab["source"])
    np.testing.assert_array_equal(snap.max_severity, want_max)
    np.testing.assert_array_equal(snap.source_flags, want_flags)
    unknown = {
        subj
        for (subj, _c), lab in ref.items()
        if lab["severity"] > 0 and not (isinstance(subj, int) and subj < 4)
    }
    assert (
        set(snap.unknown_ids.tolist()) == {str(u) for u in unknown}
        or set(snap.unknown_ids.tolist()) == unknown
    )
    assert len(snap.unknown_ids) == len(unknown)
    # The per-subject view agrees with the snapshot.
    for subj in (0, 1, 2, 3):
        eff = s.effective(subj, at=float(at))
        want = {c: f"L{seq}" for (sj, c), (seq, _lab) in ref_seq.items() if sj == subj}
        assert {c: lab.label_id for c, lab in eff.items()} == want


@settings(max_examples=30, deadline=None)
@given(history=st.lists(_label_strategy(), max_size=15), at=st.integers(0, 35))
def test_snapshot_is_deterministic_and_round_trips(history, at, tmp_path_factory):
    s = _fill(history)
    a = s.snapshot(IdMap([3, 2, 1, 0]), at=float(at))
    b = s.snapshot(IdMap([3, 2, 1, 0]), at=float(at))
    assert a.content_hash == b.content_hash and a.version == b.version
    path = tmp_path_factory.mktemp("snap") / "s.npz"
    a.save(path)
    c = Snapshot.load(path)
    assert c.content_hash == a.content_hash
    for cat in a.categories:
        np.testing.assert_array_equal(c.has(cat), a.has(cat))
    np.testing.assert_array_equal(c.max_severity, a.max_severity)
    assert c.at == a.at


def test_supersession_retraction_and_expiry_examples():
    s = LabelStore()
    s.add(1, "csam_seller", severity=1.0, source="classifier", label_id="c1", created_at=10)
    s.add(
        1,
        "csam_seller",
        severity=0.5,
        source="reviewer",
        label_id="r1",
        created_at=20,
        expires_at=40,
    )
    s.add(1, "csam_seller", severity=0.0, source="reviewer", label_id="clear", created_at=30)
    ids = np.array([0, 1])
    assert s.snapshot(ids, at=15).severity("csam_seller")[1] == 1.0  # only c1
    assert s.snapshot(ids, at=25).severity("csam_seller")[1] == 0.5  # r1 supersedes c1 (lower!)
    assert not s.snapshot(ids, at=35).has("csam_seller")[1]  # the clearance supersedes both
    s.retract("clear", by="lead", reason="clearance was wrong", at=36)
    assert s.snapshot(ids, at=37).severity("csam_seller")[1] == 0.5  # r1 back in force
    assert s.snapshot(ids, at=45).severity("csam_seller")[1] == 1.0  # r1 expired: c1 again
    assert not s.snapshot(ids, at=35).has("csam_seller")[1]  # history as of 35 unchanged


def test_id_map_strings_unknown_ids_reported():
    s = LabelStore()
    s.add("alice", "spam", source="report")
    s.add("mallory", "csam_buyer", source="hash_match")
    s.add("ghost", "csam_buyer", source="hash_match")
    s.add(7, "spam")
    snap = s.snapshot(["bob", "mallory", "alice"])
    assert snap.has("csam_buyer").tolist() == [False, True, False]
    assert snap.has("spam").tolist() == [False, False, True]
    assert sorted(snap.unknown_ids.tolist()) == ["7", "ghost"]
    assert snap.from_source("hash_match").tolist() == [False, True, False]
    assert snap.from_source("report").tolist() == [False, False, True]
    assert not snap.from_source("never").any()
    assert snap.sources[: len(KNOWN_SOURCES)] == KNOWN_SOURCES


def test_id_map_validation_and_lookup():
    with pytest.raises(ValidationError, match="unique external ids"):
        IdMap([1, 2, 1])
    with pytest.raises(ValidationError):
        IdMap([1, "a"])
    m = IdMap({10: 1, 20: 0})
    assert m.ids.tolist() == [20, 10]
    assert m.lookup([10, 20, 30, "10", True]).tolist() == [1, 0, -1, -1, -1]
    assert m.lookup(np.array([20, 99])).tolist() == [0, -1]
    big = IdMap(np.arange(1000)[::-1] * 3)
    q = np.array([0, 3, 2997, 5])
    assert big.lookup(q).tolist() == [999, 998, 0, -1]
    assert IdMap(np.array([], dtype=np.int64)).lookup([1]).tolist() == [-1]


def test_snapshot_arrays_are_read_only():
    s = LabelStore()
    s.add(0, "spam")
    snap = s.snapshot([0, 1])
    with pytest.raises(ValueError):
        snap.max_severity[0] = 0
    with pytest.raises(ValueError):
        snap.source_flags[0] = 0
    h = snap.has("spam")
    h[:] = False  # a fresh array: mutating it changes nothing
    assert snap.has("spam")[0]


def _saved(tmp_path) -> tuple[Snapshot, str]:
    s = LabelStore()
    for i in range(50):
        s.add(
            i, "spam" if i % 2 else "csam_seller", severity=0.5 + (i % 3) / 10, source="classifier"
        )
    snap = s.snapshot(np.arange(100))
    path = str(tmp_path / "snap.npz")
    snap.save(path)
    return snap, path


def test_load_missing_file(tmp_path):
    with pytest.raises(StoreError, match="Cannot read"):
        Snapshot.load(tmp_path / "nothing.npz")


def test_load_not_a_snapshot(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"hello")
    with pytest.raises(NotAGuardrailsStoreError):
        Snapshot.load(p)
    np.savez(tmp_path / "y.npz", a=np.arange(3))
    with pytest.raises(NotAGuardrailsStoreError):
        Snapshot.load(tmp_path / "y.npz")


def test_load_truncated_and_flipped_bytes(tmp_path):
    _, path = _saved(tmp_path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError):
        Snapshot.load(path)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    open(path, "wb").write(bytes(flipped))
    with pytest.raises(CorruptStoreError):
        Snapshot.load(path)


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    change(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _halve_severity(arrays, meta):
    arrays["severity"] = (arrays["severity"] * 0.5).astype(np.float32)


def _items_out_of_range(arrays, meta):
    arrays["items"] = arrays["items"] + 1000


def _newer_format(arrays, meta):
    meta["format_version"] = 99


@pytest.mark.parametrize(
    ("tamper", "error", "match"),
    [
        (_halve_severity, CorruptStoreError, "content hash"),
        (_items_out_of_range, CorruptStoreError, "outside the catalogue"),
        (_newer_format, SchemaVersionError, None),
    ],
    ids=["tampered_content_fails_hash", "inconsistent_arrays", "newer_format"],
)
def test_load_refuses_rewritten_file(tmp_path, tamper, error, match):
    _, path = _saved(tmp_path)
    _rewrite(path, tamper)
    with pytest.raises(error, match=match):
        Snapshot.load(path)


def test_saved_file_has_no_pickles(tmp_path):
    snap, path = _saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert "meta.npy" in names
    with np.load(path, allow_pickle=False) as npz:
        for k in npz.files:
            assert npz[k].dtype != object
    assert Snapshot.load(path).version == snap.version


def test_to_csr_and_labeled():
    s = LabelStore()
    s.add(2, "spam", severity=0.5)
    s.add(0, "spam", severity=0.25)
    snap = s.snapshot(np.arange(3))
    idx, sev = snap.labeled("spam")
    assert idx.tolist() == [0, 2] and sev.tolist() == [0.25, 0.5]
    m = snap.to_csr()
    assert m.shape == (1, 3) and m.toarray().tolist() == [[0.25, 0.0, 0.5]]


def test_with_risk_is_a_new_version_and_round_trips(tmp_path):
    s = LabelStore()
    s.add(1, "spam")
    snap = s.snapshot(np.arange(3))
    assert snap.risk is None
    r = snap.with_risk([0.0, 0.5, 1.0])
    assert r.version != snap.version
    np.testing.assert_array_equal(r.has("spam"), snap.has("spam"))
    r.save(tmp_path / "r.npz")
    back = Snapshot.load(tmp_path / "r.npz")
    assert back.version == r.version and back.risk.tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValidationError, match="'risk' parameter of Snapshot.with_risk"):
        snap.with_risk([0.0, 2.0, 0.0])
