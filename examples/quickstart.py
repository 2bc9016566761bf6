"""Quick start: guard an implicit ALS model with four filters.

    python examples/quickstart.py [--users 2000] [--items 1000]

Builds a small synthetic follow matrix, trains ALS, flags a few accounts, and shows that
the guarded recommendations never contain them while every slate stays full.
"""

from __future__ import annotations

import argparse

import implicit
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import guardrails as gr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    # who follows whom: heavy-tailed popularity
    pop = rng.pareto(1.5, args.items) + 1
    p = pop / pop.sum()
    rows = np.repeat(np.arange(args.users), 20)
    cols = rng.choice(args.items, size=rows.size, p=p)
    user_items = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, cols)), shape=(args.users, args.items)
    )
    user_items.sum_duplicates()
    user_items.data[:] = 1

    with threadpool_limits(1, "blas"):
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=32, iterations=5, random_state=args.seed
        )
        model.fit(user_items, show_progress=False)

    flagged = rng.choice(args.items, size=20, replace=False)  # known bad accounts
    risk = np.zeros(args.items, dtype=np.float32)  # e.g. from gr.propagate_risk
    risk[flagged] = 1.0
    risk[rng.choice(args.items, size=50, replace=False)] = 0.4  # their neighbourhood
    blocks = sp.random(args.users, args.items, density=0.01, format="csr", random_state=args.seed)

    guard = gr.Guard(
        model,
        policy=[
            gr.filters.BlockItems(flagged, reason="csam_seller"),
            gr.filters.SuppressRisk(risk, threshold=0.3),
            gr.filters.DemoteRisk(risk, weight=2.0),
            gr.filters.ExcludePairs(blocks, reason="viewer_blocked"),
        ],
    )
    userids = np.arange(100)
    ids, scores = guard.recommend(userids, user_items[userids], N=10)
    assert not np.isin(ids, flagged).any() and (ids >= 0).all()
    one, one_scores = guard.recommend(0, user_items[0], N=10)
    similar, _ = guard.similar_items(int(flagged[0]), N=10)
    print(f"policy {guard.policy_version}: {ids.shape[0]} slates of {ids.shape[1]}, none flagged")
    print("user 0:", one.tolist())
    print(f"suggested next to flagged account {flagged[0]}:", similar.tolist())
    return ids


if __name__ == "__main__":
    main()
