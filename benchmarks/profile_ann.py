"""Where one guarded ANN call's time goes, step by step (a diagnostic, not a ratio).

On ``bench_ann.py``'s clustered factors and four-filter policy: one warm
``Guard.recommend`` call of ``--users`` viewers with ``ANNRetrieval`` is timed whole, then
each step is timed again on the arguments captured from that call (medians of
``--repeat``): the faiss search (with and without its id selector, and its coarse
quantizer alone), the head's exact kernel, the pass over the pools (``pool_topk``, on
all worker threads and on one), faiss's rescoring of the pools, and the merge.

    python benchmarks/profile_ann.py --items 1000000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from bench_ann import make_case

import guardrails as gr
import guardrails.retrieval as retrieval


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    U, V, risk, blocked, pairs = make_case(args.users, args.items, 64, args.seed)
    policy = [
        gr.filters.BlockItems(blocked, reason="csam_seller"),
        gr.filters.ExcludePairs(pairs, reason="viewer_blocked"),
        gr.filters.SuppressRisk(risk, threshold=0.7),
        gr.filters.DemoteRisk(risk, weight=2.0),
    ]
    ann = gr.ANNRetrieval().build(V)
    guard = gr.Guard(gr.FactorModel(U, V), policy, retrieval=ann)
    users = np.arange(args.users)
    call = dict(N=10, filter_already_liked_items=False)
    whole = median_ms(lambda: guard.recommend(users, None, **call), args.repeat)

    # Capture the steps' arguments from one call.
    seen: dict = {}
    real = {name: getattr(retrieval, name) for name in ("guarded_topk", "pool_topk", "_merge")}

    def spy(name):
        def wrapped(*a, **k):
            seen.setdefault(name, (a, k))
            return real[name](*a, **k)

        return wrapped

    for name in real:
        setattr(retrieval, name, spy(name))
    try:
        guard.recommend(users, None, **call)
    finally:
        for name, fn in real.items():
            setattr(retrieval, name, fn)

    index = ann.index_
    qa = np.zeros((args.users, index.d), dtype=np.float32)
    qa[:, : U.shape[1]] = U
    hard = np.zeros(args.items, dtype=bool)
    hard[blocked] = True
    hard |= risk >= 0.7
    bits = ann._tail_bits(hard, None)
    pool = max(ann.pool, 10)
    with_sel, keep = ann._params(bits, int(ann.tail_ids_.size), pool)
    no_sel, _ = ann._params(None, int(ann.tail_ids_.size), pool)
    a, k = seen["pool_topk"]
    head_a, head_k = seen["guarded_topk"]
    rows = {
        "whole call": whole,
        "faiss search (id selector)": median_ms(
            lambda: index.search(qa, pool, params=with_sel), args.repeat
        ),
        "faiss search (no selector)": median_ms(
            lambda: index.search(qa, pool, params=no_sel), args.repeat
        ),
        "coarse quantizer alone": median_ms(
            lambda: index.quantizer.search(qa, index.nprobe), args.repeat
        ),
        "head's exact kernel": median_ms(
            lambda: real["guarded_topk"](*head_a, **head_k), args.repeat
        ),
        "pool pass (pool_topk)": median_ms(lambda: real["pool_topk"](*a, **k), args.repeat),
        "pool pass, one thread": median_ms(
            lambda: real["pool_topk"](*a, **{**k, "num_threads": 1}), args.repeat
        ),
        "faiss pool rescoring": median_ms(
            lambda: retrieval._inner_products_by_id(
                np.ascontiguousarray(U, dtype=np.float32), a[0].item_rows, a[2]
            ),
            args.repeat,
        ),
        "merge": median_ms(lambda: real["_merge"](*seen["_merge"][0]), args.repeat),
    }
    del keep
    print(
        f"# profile_ann: {args.items} items x 64, {args.users} viewers, seed {args.seed}, "
        f"head {ann.head_ids_.size}, nlist {index.nlist}, nprobe {index.nprobe}, "
        f"medians of {args.repeat}, compiled step: {gr.core.kernel.HAS_COMPILED_TILE}\n"
    )
    print("| step | ms |\n|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
