"""The price of the minors' tie rule: ``default_policy`` with and without it, side by side.

Same users, factors, interactions and follow graph for every row, timed round-robin in
one run (medians of ``--repeat`` rounds, after a warm-up):

- ``guard-4``: the foundation's four filters (as in ``bench_policy.py``);
- ``default``: ``gr.default_policy(risk=..., seeds=...)``;
- ``minors``: the same with ``interactions``, ``minors`` (2% of accounts) and
  ``minor_viewers`` (10% of viewers): ``protect_minors`` and the minor-viewer cohort;
- ``minors+ties``: the same with the follow graph between accounts (``graph=``), which
  adds the tie rule (:class:`guardrails.filters.RequireTie`; anchored ties, the default);
- ``ties-through``: the same with ``minor_ties_through_minors=True`` (one sparse product
  fewer per batch than anchored ties).

Every call passes the viewers' interactions (about 20 per viewer). Ratios are users/s
relative to ``guard-4``; ``ties / minors`` is the rule's own price.

    python benchmarks/bench_minor_ties.py --items 10000 --repeat 5
"""

from __future__ import annotations

import os
import sys

import numpy as np
import scipy.sparse as sp

import guardrails as gr
from guardrails.policy import default_policy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_policy import case_arguments, interleaved_medians, policies  # noqa: E402
from bench_recommend import make_case  # noqa: E402


def run_case(n_users, n_items, factors, repeat, threads, follows_per_account=20):
    U, V, risk, blocked, pairs = make_case(n_users, n_items, factors)
    model = gr.FactorModel(U, V)
    rng = np.random.default_rng(1)
    users = np.arange(n_users)
    ui = sp.random(
        n_users, n_items, density=20 / n_items, format="csr", random_state=3, dtype=np.float32
    )
    graph = sp.random(
        n_items,
        n_items,
        density=follows_per_account / n_items,
        format="csr",
        random_state=4,
        dtype=np.float32,
    )
    minors = rng.random(n_items) < 0.02
    minor_viewers = rng.random(n_users) < 0.10
    four, dflt, _ = policies(n_users, n_items, risk, blocked, pairs)
    common = {
        "risk": risk,
        "seeds": blocked,
        "interactions": ui,
        "minors": minors,
        "minor_viewers": minor_viewers,
    }
    with_minors = default_policy(**common)
    with_ties = default_policy(**common, graph=graph)
    assert "minors_need_tie" in [f.name for f in with_ties.filters]
    through = default_policy(**common, graph=graph, minor_ties_through_minors=True)
    guards = {
        "guard-4": gr.Guard(model, four, num_threads=threads),
        "default": gr.Guard(model, dflt, num_threads=threads),
        "minors": gr.Guard(model, with_minors, num_threads=threads),
        "minors+ties": gr.Guard(model, with_ties, num_threads=threads),
        "ties-through": gr.Guard(model, through, num_threads=threads),
    }
    fns = {name: (lambda g=g: g.recommend(users, ui, N=10)) for name, g in guards.items()}
    return interleaved_medians(fns, repeat)


def main():
    ap = case_arguments(__doc__.split("\n")[0], items=10_000, repeat=5)
    args = ap.parse_args()
    names = ["guard-4", "default", "minors", "minors+ties", "ties-through"]
    print(f"# bench_minor_ties: {args.threads} threads, medians of {args.repeat} runs, N=10\n")
    print(
        "| users | items | "
        + " | ".join(f"{n} u/s" for n in names)
        + " | default / guard-4 | minors / guard-4 | ties / guard-4 | ties / minors"
        + " | anchored / through |"
    )
    print("|" + "---|" * (2 + len(names) + 5))
    for n_items in args.items:
        t = run_case(args.users, n_items, args.factors, args.repeat, args.threads)
        ups = {k: args.users / v for k, v in t.items()}
        cells = " | ".join(f"{ups[n]:.0f}" for n in names)
        g4 = ups["guard-4"]
        print(
            f"| {args.users} | {n_items} | {cells} | {ups['default'] / g4:.2f} | "
            f"{ups['minors'] / g4:.2f} | {ups['minors+ties'] / g4:.2f} | "
            f"{ups['minors+ties'] / ups['minors']:.2f} | "
            f"{ups['minors+ties'] / ups['ties-through']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
