"""The family audit: worst case of a policy over evaluation platforms, and audit time per platform.

Runs :func:`guardrails.audit.family_run.run_family` on the *evaluation* seeds of the
platform family (nothing is tuned on them) for one or more policies, side by side on the
same platforms and models, and writes every row to JSON. Times are per (platform, model
kind): building the platform, training the model, building the policy and walking it.
The recall target is reported with its paired bootstrap interval and hit counts, and the
summary counts the rows whose whole interval misses it (significant misses).

    python benchmarks/bench_family.py --platforms 20 --size small        # ~15 min on 2 cores
    python benchmarks/bench_family.py --platforms 5 --size medium --policies default no-model
    python benchmarks/bench_family.py --split tuning --platforms 6       # for tuning only
    python benchmarks/bench_family.py --split tuning --indices 24 39 50 62 65 12 53 66

``--policies``: ``default`` (``guardrails.default_policy`` from what the platform knows
and the model's item space, :func:`guardrails.audit.family_run.family_default_policy`)
``no-model`` (the same without the model's item space, so no neighbourhood risk:
:func:`guardrails.audit.guards.default_guard_policy`) and ``no-minors-list`` (``default``
without the platform's minors' list, to measure what the policy does without age signals)
``no-minor-ties`` (``default`` without the minors' tie rule), ``minor-ties-none`` and
``minor-ties-through-minors`` (the tie rule with no, or every, minor's account as a
tie), ``no-audience-context``
(``default`` without the audience of risky contexts), ``ban-history`` (``default`` with
the banned seeds' follows at the ban in its graph), ``seed-history`` (``default`` with
them as ``seed_history``: their successors count as seeds), ``no-drop-corroboration``
(``default`` dropping every account at the drop line, without the model's agreement),
``no-minor-attention``
(``default`` without the attention-to-minors context) and ``no-strip-context``
(``default`` with a risky profile's list ranked by similarity to it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings

from guardrails.audit.family import MODEL_KINDS, SIZES
from guardrails.audit.family_run import (
    family_default_policy,
    format_family,
    model_neighbours,
    run_family,
    write_family_plot,
)
from guardrails.audit.guards import default_guard_policy, with_ban_history


def variant(name: str, **knobs):
    """``default_policy`` as in ``default`` with ``knobs`` passed on: the policy before a
    change (or without a signal), for a side-by-side run on the same platforms and models.
    ``name`` is what the report and its plot call it."""

    def policy(platform, model=None):
        return default_guard_policy(platform, **knobs, **model_neighbours(model))

    policy.__name__ = policy.__qualname__ = name
    return policy


def seed_history(platform, model=None):
    """``default`` with the banned seeds' follows at the ban as ``seed_history``: their
    successors (accounts that took most of a banned seed's followers) count as seeds
    (measured and not made the default: docs/audit.md, rule 14)."""
    return default_guard_policy(
        platform, seed_history=platform.banned_follows, **model_neighbours(model)
    )


def ban_history(platform, model=None):
    """``default`` with the banned seeds' follows at the ban added to its graph
    (:func:`guardrails.audit.guards.with_ban_history`; measured and not taken:
    docs/audit.md, rule 13)."""
    return default_guard_policy(
        platform, graph=with_ban_history(platform), **model_neighbours(model)
    )


POLICIES = {
    "default": family_default_policy,
    # Each rule of the default switched off, or set as before it changed.
    "minor-ties-none": variant("minor_ties_none", minor_ties_through_minors=False),
    "minor-ties-through-minors": variant(
        "minor_ties_through_minors", minor_ties_through_minors=True
    ),
    "no-audience-context": variant("no_audience_context", audience_context=False),
    "ban-history": ban_history,
    "seed-history": seed_history,
    "no-drop-corroboration": variant("no_drop_corroboration", drop_corroboration=False),
    "no-minor-attention": variant("no_minor_attention", minor_attention=False),
    "no-minor-ties": variant("no_minor_ties", minor_ties=False),
    "no-model": default_guard_policy,
    # Without the platform's minors' list (no age signals): what keeps minors' accounts
    # from risky viewers then is the risk machinery alone.
    "no-minors-list": variant("no_minors_list", minors=None, minor_viewers=None),
    "no-strip-context": variant("no_strip_context", strip_context=False),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platforms", type=int, default=20)
    ap.add_argument("--size", choices=tuple(SIZES), default="small")
    ap.add_argument("--split", choices=("evaluation", "tuning"), default="evaluation")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument(
        "--indices",
        type=int,
        nargs="+",
        default=None,
        help="positions in the seed stream instead of --platforms/--start "
        "(the hardest tuning platforms: --split tuning --indices 24 39 50 62 65 12 53 66)",
    )
    ap.add_argument("--kinds", nargs="+", choices=MODEL_KINDS, default=list(MODEL_KINDS))
    ap.add_argument("--policies", nargs="+", choices=tuple(POLICIES), default=["default"])
    ap.add_argument("--walkers", type=int, default=20)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="family")
    args = ap.parse_args(argv)
    # The outputs' folder exists before the platforms run, not after.
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="implicit")
    summary = {}
    for name in args.policies:
        report = run_family(
            args.platforms if args.indices is None else len(args.indices),
            split=args.split,
            size=args.size,
            kinds=args.kinds,
            start=args.start,
            indices=args.indices,
            policy_factory=POLICIES[name],
            n_walkers=args.walkers,
            n_steps=args.steps,
            num_threads=args.threads,
            log=lambda m, name=name: print(f"[{name}] {m}", flush=True),
        )
        with open(f"{args.out}-{name}.json", "w") as fh:
            json.dump(report, fh, indent=1, default=float)
        write_family_plot(report, f"{args.out}-{name}.png")
        print(f"\n== {name}: {args.platforms} {args.split} platforms ({args.size})")
        print(format_family(report, markdown=True))
        secs = [r["seconds"]["total"] for r in report["rows"]]
        summary[name] = {
            "worst": {t["target"]: t["worst"] for t in report["targets"]},
            "passed": {t["target"]: t["passed"] for t in report["targets"]},
            "missed_rows": {t["target"]: len(t["broken"]) for t in report["targets"]},
            # Rows whose whole recall interval lies below the bound (not sampling noise).
            "recall_significant_misses": next(
                len(t["significant"]) for t in report["targets"] if t["target"] == "recall_ratio"
            ),
            "recall_worst_interval": report["distribution"]["recall_ratio"].get("worst_interval"),
            "seconds_per_platform_kind_median": statistics.median(secs),
            "seconds_per_platform_kind_max": max(secs),
            "seconds_total": report["seconds"],
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
