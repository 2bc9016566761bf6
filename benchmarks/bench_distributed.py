"""Batch scoring on Dask against the single-process Guard, side by side in one run.

On the same users, factors and four-filter policy (a global block of 1% of the items,
about 50 excluded pairs per viewer, risk suppression and risk demotion), N=10:

- ``guard 1 thread`` and ``guard all threads``: one ``Guard.recommend`` call over the
  whole batch, in this process;
- ``dask w workers``: ``gr.distributed.recommend_all`` on a LocalCluster of ``w``
  single-threaded worker processes (1 and 2), results kept in worker memory as a Dask
  DataFrame (``frame``), and, separately, written to Parquet in a temporary directory.

Each is run once to warm up (worker imports, the first shipment) and then timed
``--repeat`` times; the table reports medians. ``ratio`` is the median time of the
1-thread Guard divided by the row's median time (above 1: faster than one process on
one core). ``overhead / block`` is the client's wall time not explained by the tasks'
own time, ``(wall - task_seconds / w) / n_blocks``: scheduling, shipping blocks and
results, and the client loop, per block.

    python benchmarks/bench_distributed.py                      # 30k users, 10k items
    python benchmarks/bench_distributed.py --users 200000 --block-size 5000 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import scipy.sparse as sp

import guardrails as gr
from guardrails.distributed import recommend_all


def make_case(n_users, n_items, factors, seed=0):
    rng = np.random.default_rng(seed)
    pop = rng.pareto(2.0, n_items).astype(np.float32) + 1.0
    V = (rng.standard_normal((n_items, factors)).astype(np.float32) * 0.1) * np.sqrt(pop)[:, None]
    U = rng.standard_normal((n_users, factors)).astype(np.float32) * 0.1
    risk = np.clip(rng.beta(0.3, 3.0, n_items) * (pop / pop.max()) ** 0.2 * 2, 0, 1).astype(np.float32)
    blocked = rng.choice(n_items, size=max(1, n_items // 100), replace=False)
    rows = np.repeat(np.arange(n_users), 50)
    cols = rng.integers(0, n_items, size=rows.size)
    pairs = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    policy = [
        gr.filters.BlockItems(blocked, reason="csam_seller"),
        gr.filters.ExcludePairs(pairs, reason="viewer_blocked"),
        gr.filters.SuppressRisk(risk, threshold=0.3),
        gr.filters.DemoteRisk(risk, weight=2.0),
    ]
    return gr.FactorModel(U, V), policy


def timed(fn, repeat):
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = fn()
        out.append((time.perf_counter() - t0, r))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=30_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--block-size", type=int, nargs="*", default=[2_000, 10_000])
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    model, policy = make_case(args.users, args.items, args.factors)
    users = np.arange(args.users)
    g1 = gr.Guard(model, policy, num_threads=1)
    gall = gr.Guard(model, policy, num_threads=0)
    rows = []

    def single(guard):
        return guard.recommend_detailed(users, None, 10, False)

    base = statistics.median(t for t, _ in timed(lambda: single(g1), args.repeat))
    rows.append(("guard 1 thread", "-", "-", "-", base, None))
    t_all = statistics.median(t for t, _ in timed(lambda: single(gall), args.repeat))
    rows.append((f"guard {os.cpu_count()} threads", "-", "-", "-", t_all, None))

    for w in args.workers:
        with (
            LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            for bs in args.block_size:
                for mode in ("frame", "parquet"):
                    with tempfile.TemporaryDirectory() as tmp:

                        def run(mode=mode, bs=bs, tmp=tmp):
                            out = os.path.join(tmp, "out") if mode == "parquet" else None
                            return recommend_all(
                                g1,
                                users,
                                None,
                                N=10,
                                client=client,
                                output=out,
                                overwrite=True,
                                block_size=bs,
                                filter_already_liked_items=False,
                            )

                        runs = timed(run, args.repeat)
                    t = statistics.median(x for x, _ in runs)
                    over = statistics.median(
                        (x - r.task_seconds / w) / max(1, r.n_blocks) for x, r in runs
                    )
                    rows.append((f"dask {w} worker{'s' if w > 1 else ''}", mode, bs, runs[0][1].n_blocks, t, over))

    head = (
        f"# bench_distributed: {args.users} users x {args.items} items x {args.factors} factors, "
        f"N=10, four filters, {os.cpu_count()} cores, medians of {args.repeat} runs\n\n"
        "| run | output | block size | blocks | median s | users/s | ratio to guard 1 thread "
        "| overhead / block ms |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for name, mode, bs, nb, t, over in rows:
        ov = "-" if over is None else f"{over * 1e3:.1f}"
        lines.append(f"| {name} | {mode} | {bs} | {nb} | {t:.2f} | {args.users / t:.0f} | {base / t:.2f} | {ov} |")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return rows


if __name__ == "__main__":
    main()
