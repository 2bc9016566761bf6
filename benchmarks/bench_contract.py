"""Per-call cost of the contract check "a filter leaves out only the viewers' interactions".

Every call whose policy has a query filter (the circuit breaker) that trips for some
viewer runs :func:`guardrails.filters._contract.compile_queries`, which checks that the
cells the filter leaves out of the queries are cells of the call's ``user_items``. Timed
side by side in one run, round-robin, medians (and worst) over ``--repeat`` rounds:

- ``filter``: the circuit breaker's own ``compile_queries`` (what the check guards);
- ``check-sparse``: the check as it was, with sparse intermediates (a copy of each
  matrix, an element-wise product and a difference), kept here as the reference;
- ``check-keys``: the check as it is, comparing sorted cell keys;
- ``recommend``: the guarded ``recommend`` of the same batch (the check's share of it).

    python benchmarks/bench_contract.py                 # batches of 1 and 256 viewers
    python benchmarks/bench_contract.py --viewers 1 64 1024 --items 200000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.sparse as sp

import guardrails as gr
from guardrails.filters import Catalog, ViewerBatch, ViewerCircuitBreaker
from guardrails.filters._contract import _cells_within


def within_sparse(s: sp.csr_matrix, ui: sp.csr_matrix) -> bool:
    """The previous implementation of the check, for comparison."""
    has = sp.csr_matrix(ui, copy=True)
    has.data = np.ones_like(has.data)
    extra = sp.csr_matrix(s, copy=True)
    extra.data = np.ones_like(extra.data, dtype=np.float32)
    return not (extra - extra.multiply(has)).nnz


def timed(fns: dict, repeat: int) -> dict:
    for fn in fns.values():
        fn()
    runs: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v) * 1e3, max(v) * 1e3) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--viewers", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--per-viewer", type=int, default=40, help="interactions per viewer")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.items
    risk = np.zeros(n, np.float32)
    risk[: n // 10] = 0.9  # a tenth of the catalogue is risky, so most viewers trip
    breaker = ViewerCircuitBreaker(risk, trip=0.05)
    model = gr.FactorModel(
        rng.standard_normal((max(args.viewers), 32)).astype(np.float32),
        rng.standard_normal((n, 32)).astype(np.float32),
    )
    guard = gr.Guard(model, [breaker])
    catalog = Catalog("items", n)
    print(
        "| viewers | strip cells | filter ms | check-sparse ms | check-keys ms | recommend ms "
        "| sparse / keys | keys / recommend |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for m in args.viewers:
        rows = np.repeat(np.arange(m), args.per_viewer)
        cols = rng.integers(0, n, rows.size)
        ui = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(m, n))
        ui.sum_duplicates()
        strip, t = time_batch(guard, breaker, catalog, ui, args.repeat)
        print(
            f"| {m} | {strip} | {t['filter'][0]:.3f} | {t['sparse'][0]:.3f} (worst "
            f"{t['sparse'][1]:.3f}) | {t['keys'][0]:.3f} (worst {t['keys'][1]:.3f}) | "
            f"{t['recommend'][0]:.2f} | {t['sparse'][0] / t['keys'][0]:.1f} | "
            f"{t['keys'][0] / t['recommend'][0]:.4f} |"
        )


def time_batch(guard, breaker, catalog, ui: sp.csr_matrix, repeat: int) -> tuple[int, dict]:
    """Cells the breaker leaves out for the batch ``ui``, and the four timings."""
    users = np.arange(ui.shape[0])
    viewers = ViewerBatch(users, ui)
    s = sp.csr_matrix(breaker.compile_queries(catalog, viewers))
    assert within_sparse(s, ui) and _cells_within(s, ui)
    fns = {
        "filter": lambda: breaker.compile_queries(catalog, viewers),
        "sparse": lambda: within_sparse(s, ui),
        "keys": lambda: _cells_within(s, ui),
        "recommend": lambda: guard.recommend(users, ui, N=10),
    }
    return s.nnz, timed(fns, repeat)


if __name__ == "__main__":
    main()
