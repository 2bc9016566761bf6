"""Benchmark: durable report intake and snapshot build time.

Run::

    python benchmarks/bench_signals.py            # full: snapshots at 1M and 10M accounts
    python benchmarks/bench_signals.py --quick    # small sizes, for a smoke run
    python benchmarks/bench_signals.py --intake-only --repeats 5   # report intake only

Measures, side by side in one run, medians of ``--repeats`` runs:

1. Durable report intake (WAL, ``synchronous=FULL``, acknowledged after the commit):
   reports per second with one writer thread and with 2, 4 and 8 writer threads calling
   ``ReportQueue.submit`` (group commit: concurrent submissions share a transaction), and,
   as the reference, the same threads with one transaction per report (the pre-group-commit
   path, ``store.database.write()`` + ``_insert`` per report), plus ``submit_many`` batches of 100;
   ratios are to the single writer. The modes run round-robin within each repeat so that
   a change in the machine's load hits them alike.
2. Snapshot build (``LabelStore.snapshot``) for 1M and 10M accounts with 100k and 1M
   labels, against the floor of reading the in-force rows out of SQLite
   (``SELECT ... fetchall``), and the one-off ``IdMap`` build.

Labels for the snapshot benchmark are bulk-inserted with ``executemany`` (the public
``add_many`` validates and audits every label, and is measured separately at a small size).
Numbers depend on the disk's fsync latency and on other load; the script prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

from guardrails.signals import IdMap, LabelStore, ReportQueue


def _median(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def _submit_one_txn(q: ReportQueue, **kw) -> None:
    """The pre-group-commit path: one transaction (one fsync) per report."""
    spec = q._submit_spec(kw, "bench")
    with q.store.database.write() as conn:
        q._insert(conn, spec)


def intake_threads(directory: str, n: int, threads: int, *, group: bool = True) -> dict:
    """Reports/s with ``threads`` writer threads (1 = the single writer)."""
    path = os.path.join(directory, f"threads-{time.perf_counter_ns()}.db")
    per = n // threads
    with ReportQueue(path) as q:

        def work(t: int) -> None:
            for i in range(per):
                kw = {"subject": i % 1000, "category": "child_safety", "reporter": t}
                if group:
                    q.submit(**kw, key=f"t{t}-{i}")
                else:
                    _submit_one_txn(q, **kw, key=f"t{t}-{i}")

        ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        t0 = time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        dt = time.perf_counter() - t0
        assert q.stats().pending == per * threads
        g = q._group_stats
        txns = g["batches"] if group else per * threads
    return {"rate": per * threads / dt, "per_txn": per * threads / max(txns, 1)}


def intake_batched(directory: str, n: int, batch: int) -> float:
    path = os.path.join(directory, f"batch-{time.perf_counter_ns()}.db")
    with ReportQueue(path) as q:
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            q.submit_many(
                {"subject": i % 1000, "category": "child_safety", "reporter": i, "key": f"b{i}"}
                for i in range(start, min(n, start + batch))
            )
        dt = time.perf_counter() - t0
    return n / dt


def labels_add_many(n: int) -> float:
    s = LabelStore()
    t0 = time.perf_counter()
    s.add_many(
        {"subject": i, "category": "spam", "label_id": f"l{i}", "source": "classifier"}
        for i in range(n)
    )
    return n / (time.perf_counter() - t0)


def populate(path: str, n_accounts: int, n_labels: int, seed: int = 0) -> None:
    """Bulk-insert ``n_labels`` labels over ``n_accounts`` accounts (some unknown, some
    expired, some retracted, some superseded)."""
    rng = np.random.default_rng(seed)
    with LabelStore(path) as s:
        cats = ["csam_seller", "csam_buyer", "sexualised_minor", "spam", "scam", "impersonation"]
        sources = ["report", "reviewer", "classifier", "hash_match", "propagated"]
        s.declare_categories(cats)
        subj = rng.integers(0, int(n_accounts * 1.01), size=n_labels)  # ~1% unknown ids
        cat = rng.integers(0, len(cats), size=n_labels)
        src = rng.integers(0, len(sources), size=n_labels)
        sev = rng.choice([0.0, 0.3, 0.6, 1.0], size=n_labels, p=[0.05, 0.35, 0.3, 0.3])
        created = rng.uniform(0, 1000, size=n_labels)
        expires = np.where(
            rng.random(n_labels) < 0.2, created + rng.uniform(1, 500, size=n_labels), np.nan
        )
        retracted = np.where(rng.random(n_labels) < 0.05, created + 10, np.nan)
        rows = (
            (
                f"bulk-{i}",
                "account",
                int(subj[i]),
                cats[cat[i]],
                float(sev[i]),
                1.0,
                sources[src[i]],
                float(created[i]),
                None if np.isnan(expires[i]) else float(expires[i]),
                None if np.isnan(retracted[i]) else float(retracted[i]),
            )
            for i in range(n_labels)
        )
        with s.database.write() as conn:
            conn.executemany(
                "INSERT INTO labels (label_id, kind, subject, category, severity, confidence, "
                "source, "
                "created_at, expires_at, retracted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )


def snapshot_case(directory: str, n_accounts: int, n_labels: int, repeats: int) -> dict:
    path = os.path.join(directory, f"labels-{n_accounts}.db")
    t0 = time.perf_counter()
    populate(path, n_accounts, n_labels)
    fill = time.perf_counter() - t0
    ids = np.arange(n_accounts, dtype=np.int64)
    t0 = time.perf_counter()
    id_map = IdMap(ids)
    idmap_s = time.perf_counter() - t0
    at = 800.0
    with LabelStore(path, check="none") as store:

        def floor() -> float:
            t = time.perf_counter()
            with store.database.read() as conn:
                conn.execute(
                    "SELECT subject, category, severity, confidence, source, created_at, seq FROM "
                    "labels NOT INDEXED "
                    "WHERE kind = ? AND created_at <= ? AND (expires_at IS NULL OR expires_at > ?) "
                    "AND (retracted_at IS NULL OR retracted_at > ?)",
                    ("account", at, at, at),
                ).fetchall()
            return time.perf_counter() - t

        def build() -> float:
            t = time.perf_counter()
            snap = store.snapshot(id_map, at=at)
            dt = time.perf_counter() - t
            assert snap.n_items == n_accounts
            build.last = snap  # type: ignore[attr-defined]
            return dt

        f = _median(floor, repeats)
        b = _median(build, repeats)
        snap = build.last  # type: ignore[attr-defined]
    os.unlink(path)
    return {
        "accounts": n_accounts,
        "labels": n_labels,
        "fill_s": fill,
        "idmap_s": idmap_s,
        "floor_s": f,
        "build_s": b,
        "flags": snap.n_labels,
        "unknown": int(snap.unknown_ids.size),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reports", type=int, default=400, help="reports per intake run")
    ap.add_argument(
        "--threads", type=int, nargs="+", default=[2, 4, 8], help="writer thread counts"
    )
    ap.add_argument("--intake-only", action="store_true", help="skip the snapshot benchmark")
    ap.add_argument(
        "--dir", default=None, help="directory for the database files (default: a temp dir)"
    )
    args = ap.parse_args(argv)
    sizes = (
        [(100_000, 10_000), (1_000_000, 100_000)]
        if args.quick
        else [(1_000_000, 100_000), (10_000_000, 1_000_000)]
    )
    n = 120 if args.quick else args.reports
    counts = [1, *args.threads]
    modes = [(t, g) for t in counts for g in (True, False)]
    runs: dict = {m: [] for m in modes}
    batched_runs, add_many_runs = [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for _ in range(args.repeats):  # round-robin: load drift hits every mode alike
            for m in modes:
                runs[m].append(intake_threads(d, n, m[0], group=m[1]))
            batched_runs.append(intake_batched(d, n * 10, 100))
            add_many_runs.append(labels_add_many(n * 10))
        snaps = (
            [] if args.intake_only else [snapshot_case(d, a, lab, args.repeats) for a, lab in sizes]
        )
    med = {m: statistics.median(r["rate"] for r in runs[m]) for m in modes}
    per_txn = {m: statistics.median(r["per_txn"] for r in runs[m]) for m in modes}
    single = med[(1, True)]
    batched = statistics.median(batched_runs)
    add_many = statistics.median(add_many_runs)
    print(
        f"# bench_signals ({platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {os.cpu_count()} cores, median of {args.repeats}, "
        f"{n} reports per intake run)\n"
    )
    print("## Durable report intake (WAL, synchronous=FULL; acknowledged after commit)\n")
    print(
        "| writers | `submit` (group commit) reports/s | ratio | reports per commit | "
        "one commit per report (old path) reports/s | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for t in counts:
        g = med[(t, True)]
        old = med[(t, False)]
        print(
            f"| {t} | {g:,.0f} | {g / single:.2f} | {per_txn[(t, True)]:.1f} | {old:,.0f} | "
            f"{old / single:.2f} |"
        )
    print(
        f"\nSingle writer, `submit_many` batches of 100: {batched:,.0f} reports/s "
        f"({batched / single:.2f} x the single writer)."
    )
    print(
        "\n`LabelStore.add_many` (validated, audited, one transaction, in memory): "
        f"{add_many:,.0f} labels/s\n"
    )
    if not snaps:
        return 0
    print("## Snapshot build (`LabelStore.snapshot`, IdMap reused)\n")
    print(
        "| accounts | labels | in-force read floor (s) | snapshot build (s) | build / floor | "
        "IdMap build (s) | flags | unknown ids |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in snaps:
        print(
            f"| {r['accounts']:,} | {r['labels']:,} | {r['floor_s']:.2f} | {r['build_s']:.2f} | "
            f"{r['build_s'] / r['floor_s']:.2f} | {r['idmap_s']:.2f} | {r['flags']:,} | "
            f"{r['unknown']:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
