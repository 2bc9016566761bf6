"""Batch scoring on Dask: risk propagation and guarded suggestions for every account.

    pip install 'recsys-guardrails[dask]'
    python examples/dask_batch.py [--accounts 3000] [--workers 2] [--output DIR]

Accounts follow accounts (one id space). The script starts a local Dask cluster (on a
real platform, connect a ``distributed.Client`` to your cluster instead), then:

1. propagates risk from a few flagged accounts over the follow graph with
   ``gr.distributed.personalized_pagerank`` (the graph stays partitioned by rows on the
   workers);
2. guards an ALS model with a policy built from that risk;
3. scores every account with ``gr.distributed.recommend_all``, writing Parquet, one file
   per block;
4. reads the files back and checks that no flagged account was suggested, that every
   account appears exactly once per rank, and that a sample equals the single-process
   ``Guard.recommend``.
"""

from __future__ import annotations

import argparse
import tempfile

import implicit
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import guardrails as gr
from guardrails.distributed import personalized_pagerank, recommend_all


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=500)
    ap.add_argument("--output", default=None, help="Parquet directory (a temporary one if omitted)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import pandas as pd
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(args.seed)
    n = args.accounts
    # who follows whom: heavy-tailed popularity, 20 follows each
    pop = rng.pareto(1.5, n) + 1
    rows = np.repeat(np.arange(n), 20)
    cols = rng.choice(n, size=rows.size, p=pop / pop.sum())
    follows = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n))
    follows.sum_duplicates()
    follows.data[:] = 1
    with threadpool_limits(1, "blas"):
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=32, iterations=5, random_state=args.seed
        )
        model.fit(follows, show_progress=False)
    flagged = rng.choice(n, size=10, replace=False)

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        # 1. risk: a walk that restarts at the flagged accounts, over follows both ways
        seeds = np.zeros(n)
        seeds[flagged] = 1.0
        ppr = personalized_pagerank(
            (follows + follows.T).tocsr(), seeds, damping=0.5, client=client
        )
        others = np.setdiff1d(np.arange(n), flagged)
        risk = np.clip(ppr / ppr[others].max(), 0.0, 1.0).astype(np.float32)
        risk[flagged] = 1.0

        # 2. the guard
        guard = gr.Guard(
            model,
            policy=[
                gr.filters.BlockItems(flagged, reason="csam_seller"),
                gr.filters.SuppressRisk(risk, threshold=0.5),
                gr.filters.DemoteRisk(risk, weight=2.0),
            ],
        )

        # 3. every account, block by block, to Parquet
        users = np.arange(n)
        with tempfile.TemporaryDirectory() as tmp:
            out = args.output or tmp
            result = recommend_all(
                guard,
                users,
                follows,
                N=10,
                client=client,
                output=out,
                block_size=args.block_size,
                overwrite=args.output is not None,
                progress=True,
            )
            table = pd.read_parquet(out)

    # 4. checks
    assert not table["item_id"].isin(flagged).any(), "a flagged account was suggested"
    assert not table.duplicated(["user_id", "rank"]).any(), "a user appears twice"
    assert set(table["user_id"]) == set(users.tolist()) or result.n_short > 0
    sample = rng.choice(n, size=20, replace=False)
    ids, _ = guard.recommend(sample, follows[sample], N=10)
    got = table[table["user_id"].isin(sample)].sort_values(["user_id", "rank"])
    for u, row in zip(sample, ids, strict=True):
        assert got.loc[got["user_id"] == u, "item_id"].tolist() == row[row >= 0].tolist()
    print(
        f"{result.n_users} accounts in {result.n_blocks} blocks, {result.n_rows} rows, "
        f"policy {result.policy_version}; no flagged account suggested; "
        f"{int((risk >= 0.5).sum())} accounts suppressed by propagated risk"
    )
    return result


if __name__ == "__main__":
    main()
