"""Large demotions against small ones: the kernel's pruning does not depend on their size.

The clustered, norm-skewed factors of ``bench_ann.py`` (where the fused path skips most of
the product), N=10, default tiling, side by side in one run (round-robin, medians):

- ``none``: no demotion;
- ``viewer w``: a per-viewer penalty of ``w`` score units on 50 random items per viewer
  (``viewer_penalties``, what FollowGraph's per-viewer cells and demoting filters give);
- ``folded w``: a global penalty of ``w`` on 5% of the items, folded into the product
  (what DemoteRisk / DemoteItems give);
- ``folded w + restored``: the same, with each viewer getting the demotion of 5 demoted
  items back (negative per-viewer cells, FollowGraph's followers).

Each case has its own space (the kernel remembers per space whether its fused path paid).

For each: users per second, the share of the product computed (``scored / cells``) and
the candidates rescored exactly per user (``stats["rescored"]``).

    python benchmarks/bench_demotion.py                     # 200k items x 64, 2000 users
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import scipy.sparse as sp
from bench_ann import make_case

from guardrails.core.kernel import FactorSpace, guarded_topk


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    m, n = args.users, args.items
    U, V, *_ = make_case(m, n, args.factors, args.seed)
    rng = np.random.default_rng(args.seed)
    rows = np.repeat(np.arange(m), 50)
    cols = rng.integers(0, n, rows.size)
    demoted = np.flatnonzero(rng.random(n) < 0.05)
    # A space per case: the kernel remembers per space whether the fused path paid.
    cases = {"none": (FactorSpace.build(V), None)}
    for w in (2.0, 1e6):
        vp = sp.csr_matrix((np.full(rows.size, w, np.float32), (rows, cols)), shape=(m, n))
        cases[f"viewer {w:g}"] = (FactorSpace.build(V), vp)
    for w in (2.0, 1e6):
        pen = np.zeros(n, dtype=np.float32)
        pen[demoted] = w
        cases[f"folded {w:g}"] = (FactorSpace.build(V, penalty=pen), None)
        back_c = rng.choice(demoted, size=(m, 5))
        back = sp.csr_matrix(
            (np.full(back_c.size, -w, np.float32), (np.repeat(np.arange(m), 5), back_c.ravel())),
            shape=(m, n),
        )
        cases[f"folded {w:g} + restored"] = (FactorSpace.build(V, penalty=pen), back)

    def call(space, vp, stats=None):
        return guarded_topk(space, U, 10, viewer_penalties=[] if vp is None else [vp], stats=stats)

    for space, vp in cases.values():
        call(space, vp)  # warm-up: prune indexes, thread pools, the path probe
    times: dict = {k: [] for k in cases}
    for _ in range(args.repeat):
        for k, (space, vp) in cases.items():
            t0 = time.perf_counter()
            call(space, vp)
            times[k].append(time.perf_counter() - t0)
    print(
        f"# bench_demotion: {n} items x {args.factors}, {m} users, N=10, "
        f"medians of {args.repeat} runs, load {os.getloadavg()[0]:.2f}\n"
    )
    print("| demotion | users/s | product computed | rescored per user |")
    print("|---|---|---|---|")
    for k, (space, vp) in cases.items():
        stats: dict = {}
        call(space, vp, stats)
        print(
            f"| {k} | {m / statistics.median(times[k]):.0f} "
            f"| {stats['scored'] / stats['cells']:.1%} | {stats['rescored'] / m:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
