"""Guarded ANN retrieval against the exact Guard, side by side in one run.

Clustered synthetic factors (items and users drawn around shared cluster centres, as
trained factors of a catalogue with communities are), the four-filter policy of
``bench_recommend.py`` (a global block of 1% of the items, 50 excluded pairs per viewer,
risk suppression and risk demotion), N=10. For each size the table reports:

- index build time and size (the serialised index), and the process's peak RSS;
- throughput (users per second) of the exact Guard and of the Guard with
  ``retrieval=gr.ANNRetrieval(...)``, medians of ``--repeat`` runs on the same users;
- recall@10 of the guarded ANN slates against the exact guarded slates (mean and worst
  decile over users), the share of viewers widened or sent to the exact fallback, and a
  check that no suppressed id came back and every slate is full.

    python benchmarks/bench_ann.py                          # 1M items x 64 factors
    python benchmarks/bench_ann.py --items 200000 --users 1000
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time
from functools import partial

import numpy as np
import scipy.sparse as sp

import guardrails as gr
from guardrails.core.kernel import HAS_COMPILED_TILE


def make_case(n_users, n_items, factors, seed):
    rng = np.random.default_rng(seed)
    n_clusters = max(16, int(np.sqrt(n_items)))
    centres = rng.standard_normal((n_clusters, factors)).astype(np.float32)
    item_c = rng.integers(0, n_clusters, n_items)
    # drawn in slices of rows (the same numbers as one draw, in float32 without a float64
    # copy of the whole matrix: at 10M items that copy alone would be 5 GB)
    V = np.empty((n_items, factors), dtype=np.float32)
    for lo in range(0, n_items, 1 << 20):
        hi = min(n_items, lo + (1 << 20))
        V[lo:hi] = centres[item_c[lo:hi]]
        V[lo:hi] += 0.5 * rng.standard_normal((hi - lo, factors)).astype(np.float32)
    V *= (rng.pareto(3.0, n_items) + 1.0).astype(np.float32)[:, None] ** 0.5
    user_c = rng.integers(0, n_clusters, n_users)
    U = centres[user_c] + 0.5 * rng.standard_normal((n_users, factors)).astype(np.float32)
    U *= 0.1
    # risk concentrated in a tenth of the clusters (flagged communities)
    risky = rng.random(n_clusters) < 0.1
    risk = np.where(risky[item_c], rng.random(n_items), 0.1 * rng.random(n_items))
    risk = risk.astype(np.float32)
    blocked = rng.choice(n_items, size=max(1, n_items // 100), replace=False)
    rows = np.repeat(np.arange(n_users), 50)
    cols = rng.integers(0, n_items, size=rows.size)
    pairs = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    return U, V, risk, blocked, pairs


def timed(fn, repeat):
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), max(times)


def run(n_users, n_items, factors, repeat, seed, kinds, pool, head, nprobe, apart_above):
    U, V, risk, blocked, pairs = make_case(n_users, n_items, factors, seed)
    model = gr.FactorModel(U, V)
    policy = [
        gr.filters.BlockItems(blocked, reason="csam_seller"),
        gr.filters.ExcludePairs(pairs, reason="viewer_blocked"),
        gr.filters.SuppressRisk(risk, threshold=0.7),
        gr.filters.DemoteRisk(risk, weight=2.0),
    ]
    users = np.arange(n_users)
    call = dict(N=10, filter_already_liked_items=False)
    exact = gr.Guard(model, policy)
    (e_ids, _), te, te_max = timed(partial(exact.recommend, users, None, **call), repeat)
    # Up to --apart-above items (default 2M) the exact Guard stays and is timed again
    # round-robin with each ANN Guard (load on a shared machine hits both alike). Beyond,
    # its spaces (a compacted and a norm-ordered copy of the factors) are released before
    # the index is built, so that 10M items fit in a smaller memory: the peak is one
    # Guard's, not two Guards' and the index's, and the exact time is the one measured
    # before. On 24 GiB, 10M x 64 runs side by side (--apart-above 10000000, peak about
    # 13 GiB).
    side_by_side = n_items <= apart_above
    if not side_by_side:
        del exact
        gc.collect()
    out = []
    for kind in kinds:
        retrieval = gr.ANNRetrieval(kind=kind, pool=pool, head=head, nprobe=nprobe)
        retrieval.build(V)
        ann = gr.Guard(model, policy, retrieval=retrieval)
        if side_by_side:
            fns = [
                partial(exact.recommend, users, None, **call),
                partial(ann.recommend, users, None, **call),
            ]
            a_ids = fns[1]()[0]
            rounds: list[list[float]] = [[], []]
            for _ in range(repeat):
                for j, fn in enumerate(fns):
                    t0 = time.perf_counter()
                    fn()
                    rounds[j].append(time.perf_counter() - t0)
            te, te_max = statistics.median(rounds[0]), max(rounds[0])
            ta, ta_max = statistics.median(rounds[1]), max(rounds[1])
        else:
            (a_ids, _), ta, ta_max = timed(partial(ann.recommend, users, None, **call), repeat)
        recall = np.array(
            [np.intersect1d(x, y).size / 10 for x, y in zip(a_ids, e_ids, strict=True)]
        )
        suppressed = np.isin(a_ids, blocked) | (risk[a_ids] >= 0.7)
        suppressed |= np.asarray(pairs[users[:, None], a_ids].todense()) != 0
        out.append(
            dict(
                kind=kind,
                build=retrieval.build_seconds_,
                mib=retrieval.memory_bytes() / 2**20,
                exact=n_users / te,
                exact_worst=n_users / te_max,
                ann=n_users / ta,
                ann_worst=n_users / ta_max,
                recall=recall.mean(),
                recall_p10=np.quantile(recall, 0.1),
                widened=retrieval.last_widened_ / n_users,
                fallback=retrieval.last_fallbacks_ / n_users,
                bad=int(suppressed.sum()),
                full=bool((a_ids >= 0).all()),
                rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
            )
        )
        del ann, retrieval
        gc.collect()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kind", nargs="*", default=["ivfpq"], choices=["ivf", "ivfpq", "hnsw"])
    ap.add_argument("--pool", type=int, default=100)
    ap.add_argument("--head", type=int, default=None, help="default: 2 * sqrt(n_items)")
    ap.add_argument("--nprobe", type=int, default=None, help="default: 8")
    ap.add_argument(
        "--apart-above",
        type=int,
        default=2_000_000,
        help="above this many items, time the exact Guard first and release it (memory)",
    )
    args = ap.parse_args()
    print(
        f"# bench_ann: pool {args.pool}, head {args.head or '2 sqrt(n)'}, "
        f"nprobe {args.nprobe or 'default'}, {args.users} users, N=10, medians (worst) of "
        f"{args.repeat} runs, seed {args.seed}, side by side up to {args.apart_above} items, "
        f"compiled step: {HAS_COMPILED_TILE}, load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| items | factors | kind | build s | index MiB | exact u/s | ANN u/s | ANN / exact "
        "| recall@10 | recall@10 p10 | widened | exact fallback | suppressed returned "
        "| all full | peak RSS MiB |"
    )
    print("|" + "---|" * 15)
    for n_items in args.items:
        rows = run(
            args.users,
            n_items,
            args.factors,
            args.repeat,
            args.seed,
            args.kind,
            args.pool,
            args.head,
            args.nprobe,
            args.apart_above,
        )
        for r in rows:
            print(
                f"| {n_items} | {args.factors} | {r['kind']} | {r['build']:.1f} | {r['mib']:.0f} "
                f"| {r['exact']:.0f} ({r['exact_worst']:.0f}) | {r['ann']:.0f} "
                f"({r['ann_worst']:.0f}) | {r['ann'] / r['exact']:.1f} | {r['recall']:.3f} "
                f"| {r['recall_p10']:.2f} | {r['widened']:.1%} | {r['fallback']:.1%} "
                f"| {r['bad']} | {r['full']} | {r['rss']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
