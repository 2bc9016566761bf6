"""Batch scoring on Dask against the single-process Guard, side by side in one run.

On the same users, factors and four-filter policy (a global block of 1% of the items,
about 50 excluded pairs per viewer, risk suppression and risk demotion), N=10:

- ``guard 1 thread`` and ``guard all threads``: one ``Guard.recommend`` call over the
  whole batch, in this process;
- ``dask w workers``: ``gr.distributed.recommend_all`` on a LocalCluster of ``w``
  single-threaded worker processes (1 and 2), results kept in worker memory as a Dask
  DataFrame (``frame``), and, separately, written to Parquet in a temporary directory.

Every configuration (both clusters stay up) runs once to warm up (worker imports, thread
pools), then the configurations are run in turn, ``--repeat`` rounds, so that a change
in the machine's load hits them alike; the table reports medians. The single-process
Guard runs with BLAS on one thread, as inside a Dask task. ``ratio`` is the median time
of the 1-thread Guard divided by the row's median time (above 1: faster than one
process on one core), for the whole ``recommend_all`` call. ``setup s`` is the part
before the first block (checks, building the item-side copy, shipping it to every
worker). ``overhead / block`` is the time of the block loop not explained by the tasks'
own time, ``(wall - task_seconds / w) / n_blocks``: scheduling, shipping blocks and
results, and the client loop, per block.

    python benchmarks/bench_distributed.py                      # 30k users, 10k items
    python benchmarks/bench_distributed.py --users 200000 --block-size 5000 20000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import guardrails as gr
from guardrails.distributed import recommend_all


def make_case(n_users, n_items, factors, seed=0):
    rng = np.random.default_rng(seed)
    pop = rng.pareto(2.0, n_items).astype(np.float32) + 1.0
    V = (rng.standard_normal((n_items, factors)).astype(np.float32) * 0.1) * np.sqrt(pop)[:, None]
    U = rng.standard_normal((n_users, factors)).astype(np.float32) * 0.1
    risk = np.clip(rng.beta(0.3, 3.0, n_items) * (pop / pop.max()) ** 0.2 * 2, 0, 1).astype(
        np.float32
    )
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
    tmp = tempfile.mkdtemp(prefix="bench_distributed_")

    def single(guard):
        # BLAS on one thread, as inside a Dask task: the kernel's threads are the parallelism
        with threadpool_limits(1, "blas"):
            guard.recommend_detailed(users, None, 10, False)
        return None

    configs = {
        ("guard 1 thread", "-", "-"): lambda: single(g1),
        (f"guard {os.cpu_count()} threads", "-", "-"): lambda: single(gall),
    }
    with contextlib.ExitStack() as stack:
        for w in args.workers:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
            for bs in args.block_size:
                for mode in ("frame", "parquet"):

                    def run(client=client, mode=mode, bs=bs, w=w):
                        out = os.path.join(tmp, f"w{w}-b{bs}") if mode == "parquet" else None
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

                    configs[(f"dask {w} worker{'s' if w > 1 else ''}", mode, bs)] = run
        # Warm up everything (worker imports, thread pools), then interleave the runs so
        # that a change in the machine's load hits every configuration alike.
        for fn in configs.values():
            fn()
        times = {k: [] for k in configs}
        results = {k: [] for k in configs}
        for _ in range(args.repeat):
            for key, fn in configs.items():
                t0 = time.perf_counter()
                res = fn()
                times[key].append(time.perf_counter() - t0)
                results[key].append(res)
    shutil.rmtree(tmp, ignore_errors=True)

    base = statistics.median(times[("guard 1 thread", "-", "-")])
    head = (
        f"# bench_distributed: {args.users} users x {args.items} items x {args.factors} "
        f"factors, N=10, four filters, {os.cpu_count()} cores, medians of {args.repeat} "
        "interleaved runs\n\n"
        "| run | output | block size | blocks | median s | users/s | ratio to guard 1 thread "
        "| setup s | overhead / block ms |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for (name, mode, bs), ts in times.items():
        t = statistics.median(ts)
        rs = results[(name, mode, bs)]
        if rs[0] is None:
            nb, setup, over = "-", "-", "-"
        else:
            w = int(name.split()[1])
            nb = rs[0].n_blocks
            setup = f"{statistics.median(r.setup_seconds for r in rs):.2f}"
            over = statistics.median((r.wall_seconds - r.task_seconds / w) / r.n_blocks for r in rs)
            over = f"{over * 1e3:.1f}"
        lines.append(
            f"| {name} | {mode} | {bs} | {nb} | {t:.2f} | {args.users / t:.0f} | "
            f"{base / t:.2f} | {setup} | {over} |"
        )
    text = "\n".join(lines)
    print(text, flush=True)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
