"""The audit from Python: reproduce the test-account flood and measure a guard against it.

    python examples/audit.py [--accounts 30000] [--seed 0] [--out audit-report]

Builds the synthetic platform, trains ALS, runs the test-account walks with and without the
guard, prints the table and the targets, and writes report.json, report.md and the plots
(the same as ``recsys-guardrails audit``).
"""

from __future__ import annotations

import argparse

from guardrails.audit import run_audit
from guardrails.audit.report import format_table, format_targets, write_report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--walkers", type=int, default=20)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--out", default="audit-report")
    args = ap.parse_args(argv)
    report = run_audit(
        n_accounts=args.accounts,
        seeds=(args.seed,),
        n_walkers=args.walkers,
        n_steps=args.steps,
        sweep=not args.no_sweep,
        progress=False,
        log=print,
    )
    print(format_table(report))
    print()
    print(format_targets(report))
    files = write_report(report, args.out, log=print)
    print("wrote", files["json"])
    return report


if __name__ == "__main__":
    main()
