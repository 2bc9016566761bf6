"""Guarded recommend against implicit and a plain numpy product, side by side in one run.

For each size (items x factors), on the same users and factors:

- ``implicit``: implicit's batch ``recommend``, unfiltered, BLAS limited to one thread as
  implicit advises (its own threads parallelise);
- ``implicit+filter``: the same with ``filter_items`` holding the blocked 1%;
- ``guard-0``: the Guard with no policy;
- ``guard-4``: the Guard with four filters: a global block of 1% of the items, about 50
  excluded pairs per viewer, risk suppression and risk demotion;
- ``numpy``: a plain chunked product of the same user blocks with the item factors on the
  same number of threads, writing the scores, no selection at all;
- ``pruned`` / ``unfused``: the kernel alone (``guarded_topk``) on the four-filter plan's
  arrays with the fused tile path (item tiles by decreasing norm, tiles skipped where the
  Cauchy-Schwarz bound cannot reach a row's N-th score) forced on (``tile_items=2048``)
  and off (``0``); ``skipped`` is the share of the product the pruned path did not
  compute. ``pruned`` selects with the compiled step (``guardrails.core._tile``) where it
  was built, ``pruned-numpy`` with its numpy fallback.

Factors are random (``--data gaussian``: popularity-skewed Gaussian items, the flat score
distribution that is the hard case for block pruning) or trained (``--data als``:
implicit's ALS, a few iterations on synthetic power-law interactions).

Everything is timed round-robin (one call of each per round, ``--repeat`` rounds, after a
warm-up) so that load on a shared machine hits all alike, and the median reported, as
users per second and as a ratio to implicit and to numpy. Peak extra memory of the kernel
is measured in a separate run with tracemalloc (the kernel's default path, the pruned
path with 128-row chunks, the unfused path), next to the unfused path's documented bound
(``threads x block_rows x eligible items`` float32 scores). Results print as a markdown
table.

    python benchmarks/bench_recommend.py                   # 50k items, 64 factors
    python benchmarks/bench_recommend.py --items 50000 200000 --factors 64 128 --data gaussian als
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

import guardrails as gr
from guardrails.core.kernel import HAS_COMPILED_TILE


def make_case(n_users, n_items, factors, seed=0):
    rng = np.random.default_rng(seed)
    # popularity-skewed items: a popular item has a larger norm, as trained factors do
    pop = rng.pareto(2.0, n_items).astype(np.float32) + 1.0
    V = (rng.standard_normal((n_items, factors)).astype(np.float32) * 0.1) * np.sqrt(pop)[:, None]
    U = rng.standard_normal((n_users, factors)).astype(np.float32) * 0.1
    # Risk concentrated in one region of the embedding (a niche), as a flagged network is:
    # viewers whose taste points there find mostly risky items at the top of their slate,
    # which is why filtering after top-k leaves their slates short.
    direction = rng.standard_normal(factors).astype(np.float32)
    direction /= np.linalg.norm(direction)
    proj = (V / np.linalg.norm(V, axis=1, keepdims=True)) @ direction
    lo, hi = np.quantile(proj, [0.90, 0.995])
    risk = np.clip((proj - lo) / (hi - lo), 0, 1).astype(np.float32)
    U[: max(1, n_users // 20)] += 4.0 * direction  # 5% of viewers lean into the niche
    blocked = rng.choice(n_items, size=max(1, n_items // 100), replace=False)
    pairs_per_user = 50
    rows = np.repeat(np.arange(n_users), pairs_per_user)
    cols = rng.integers(0, n_items, size=rows.size)
    pairs = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    return U, V, risk, blocked, pairs


def als_case(n_users, n_items, factors, seed=0):
    """Factors trained by implicit's ALS on power-law interactions, the same filters."""
    import implicit

    U, V, risk, blocked, pairs = make_case(n_users, n_items, factors, seed)
    rng = np.random.default_rng(seed + 1)
    per_user = 30
    pop = rng.pareto(1.2, n_items) + 1.0
    pop /= pop.sum()
    rows = np.repeat(np.arange(n_users), per_user)
    cols = rng.choice(n_items, size=rows.size, p=pop)
    X = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    X.sum_duplicates()
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=factors, iterations=3, random_state=seed, num_threads=2
    )
    with threadpool_limits(1, "blas"):
        model.fit(X, show_progress=False)
    U = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    V = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    # Risk in one region of the trained embedding, as for the Gaussian case.
    direction = V[np.argmax(np.linalg.norm(V, axis=1))]
    unit = V / (np.linalg.norm(V, axis=1, keepdims=True) + 1e-12)
    proj = unit @ (direction / np.linalg.norm(direction))
    lo, hi = np.quantile(proj, [0.90, 0.995])
    risk = np.clip((proj - lo) / (hi - lo), 0, 1).astype(np.float32)
    return U, V, risk, blocked, pairs


def interleaved_medians(fns: dict, repeat: int) -> dict:
    """Median wall time of every callable, timed round-robin so drift hits all alike.

    Each callable is ``(fn, blas_one_thread)``; the BLAS limit is set around its call only.
    """

    def call(fn, one):
        if one:
            with threadpool_limits(1, "blas"):
                fn()
        else:
            fn()

    for fn, one in fns.values():
        call(fn, one)  # warm-up: variant spaces, prune indexes, thread pools
    times: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, (fn, one) in fns.items():
            t0 = time.perf_counter()
            call(fn, one)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run_case(n_users, n_items, factors, repeat, threads, data="gaussian"):
    import implicit

    from guardrails.core.kernel import FactorSpace, guarded_topk

    maker = als_case if data == "als" else make_case
    U, V, risk, blocked, pairs = maker(n_users, n_items, factors)
    users = np.arange(n_users)
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)

    model = implicit.cpu.als.AlternatingLeastSquares(factors=factors, num_threads=threads)
    model.user_factors, model.item_factors = U, V
    g0 = gr.Guard(model, num_threads=threads)
    g4 = gr.Guard(
        model,
        [
            gr.filters.BlockItems(blocked, reason="csam_seller"),
            gr.filters.ExcludePairs(pairs, reason="viewer_blocked"),
            gr.filters.SuppressRisk(risk, threshold=0.3),
            gr.filters.DemoteRisk(risk, weight=2.0),
        ],
        num_threads=threads,
    )
    block = 256

    def numpy_product():
        def one(lo):
            U[lo : lo + block] @ V.T

        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(one, range(0, n_users, block)))

    # The kernel alone on the same plan: global block and risk suppression compacted
    # away, risk demotion folded into the product, excluded pairs per viewer.
    hard = np.zeros(n_items, dtype=bool)
    hard[blocked] = True
    hard |= risk >= 0.3
    space = FactorSpace.build(V, hard_mask=hard, penalty=2.0 * risk, block_width=32)

    def kernel(tile, stats=None, backend="auto"):
        return guarded_topk(
            space,
            U,
            10,
            viewer_masks=[pairs],
            num_threads=threads,
            tile_items=tile,
            stats=stats,
            backend=backend,
        )

    fns = {
        "implicit": (
            lambda: model.recommend(users, empty, N=10, filter_already_liked_items=False),
            True,
        ),
        "implicit+filter": (
            lambda: model.recommend(
                users, empty, N=10, filter_already_liked_items=False, filter_items=blocked
            ),
            True,
        ),
        "numpy": (numpy_product, True),
        "guard-0": (
            lambda: g0.recommend(users, None, N=10, filter_already_liked_items=False),
            False,
        ),
        "guard-4": (
            lambda: g4.recommend(users, None, N=10, filter_already_liked_items=False),
            False,
        ),
        # The pruned path forced on (2048-item tiles, what it picks for 128-row chunks)
        # and off.
        "pruned": (lambda: kernel(2048), False),
        "pruned-numpy": (lambda: kernel(2048, backend="numpy"), False),
        "unfused": (lambda: kernel(0), False),
    }
    out = interleaved_medians(fns, repeat)
    stats: dict = {}
    kernel(2048, stats)
    out["skipped"] = 1.0 - stats["scored"] / stats["cells"]

    peaks = {}
    for name, tile in (("default", None), ("pruned", 2048), ("unfused", 0)):

        def call(tile=tile):
            guarded_topk(
                space,
                U[:2000],
                10,
                viewer_masks=[pairs[:2000]],
                num_threads=threads,
                tile_items=tile,
            )

        call()  # a path's first call on a space builds its tile index (kept on the space)
        tracemalloc.start()
        call()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    peak = peaks
    rows = min(128, max(32, (1 << 25) // space.n_eligible))  # the kernel's default block_rows
    peak["bound"] = threads * rows * space.n_eligible * 4
    # short slates from filtering implicit's top-k afterwards, for the record
    ids, _ = model.recommend(users[:2000], empty[:2000], N=110, filter_already_liked_items=False)
    bad = (risk[ids] >= 0.3) | np.isin(ids, blocked)
    short = float(np.mean((~bad).sum(axis=1) < 10))
    return out, peak, short


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--users", type=int, default=20_000, help="users per call (throughput is per user)"
    )
    ap.add_argument("--items", type=int, nargs="*", default=[50_000])
    ap.add_argument("--factors", type=int, nargs="*", default=[64])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--data", nargs="*", default=["gaussian"], choices=["gaussian", "als"])
    args = ap.parse_args()
    grid = [(args.users, i, f, d) for d in args.data for i in args.items for f in args.factors]

    blas = [
        (x["internal_api"], x.get("architecture"), x["num_threads"])
        for x in threadpool_info()
        if x["user_api"] == "blas"
    ]
    print(
        f"# bench_recommend: {args.threads} threads, BLAS {blas}, "
        f"medians of {args.repeat} runs, N=10, compiled selection step: {HAS_COMPILED_TILE}\n"
    )
    print(
        "| data | users | items | factors | implicit u/s | implicit+filter u/s | guard-0 u/s "
        "| guard-4 u/s | numpy u/s | guard-4 / implicit | guard-4 / numpy | pruned u/s "
        "| pruned-numpy u/s | unfused u/s | pruned / unfused | product skipped "
        "| peak MiB default / pruned / unfused / bound (2k users) "
        "| short slates, filter after top-110 |"
    )
    print("|" + "---|" * 18)
    for n_users, n_items, factors, data in grid:
        t, peak, short = run_case(n_users, n_items, factors, args.repeat, args.threads, data)
        skipped = t.pop("skipped")
        ups = {k: n_users / v for k, v in t.items()}
        print(
            f"| {data} | {n_users} | {n_items} | {factors} | {ups['implicit']:.0f} "
            f"| {ups['implicit+filter']:.0f} | {ups['guard-0']:.0f} | {ups['guard-4']:.0f} "
            f"| {ups['numpy']:.0f} | {ups['guard-4'] / ups['implicit']:.2f} "
            f"| {ups['guard-4'] / ups['numpy']:.2f} | {ups['pruned']:.0f} "
            f"| {ups['pruned-numpy']:.0f} | {ups['unfused']:.0f} "
            f"| {ups['pruned'] / ups['unfused']:.2f} | {skipped:.0%} "
            f"| {peak['default'] / 2**20:.1f} / {peak['pruned'] / 2**20:.1f} "
            f"/ {peak['unfused'] / 2**20:.1f} "
            f"/ {peak['bound'] / 2**20:.1f} | {short:.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
