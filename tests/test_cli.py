"""The command line: recsys-guardrails audit / explain / platform, and python -m guardrails."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from guardrails.cli import main


def test_help_and_version():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "audit" in r.output and "explain" in r.output
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "recsys-guardrails" in r.output


def test_python_dash_m():
    r = subprocess.run(
        [sys.executable, "-m", "guardrails", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "audit" in r.stdout


def test_audit_quick(tmp_path):
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        main,
        [
            "audit",
            "--quick",
            "--accounts",
            "1200",
            "--scenario",
            "default",
            "--walkers",
            "3",
            "--steps",
            "2",
            "--threads",
            "1",
            "--no-plots",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "unguarded" in r.output and ("PASS" in r.output or "FAIL" in r.output)
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["n_accounts"] == 1200 and rep["settings"]["n_steps"] == 2
    assert rep["runs"][0]["configs"]["unguarded"]["walks"]["follow_handful"]["n_steps"] == 2
    assert (out / "report.md").read_text().startswith("Measured with")


def test_audit_bad_option():
    r = CliRunner().invoke(main, ["audit", "--accounts", "10"])
    assert r.exit_code != 0 and "accounts" in r.output


def test_platform_and_explain():
    r = CliRunner().invoke(main, ["platform", "--accounts", "1000", "--seed", "2"])
    assert r.exit_code == 0
    s = json.loads(r.output)
    assert s["n_accounts"] == 1000 and s["seed"] == 2
    from guardrails.audit import make_platform

    p = make_platform(seed=0, n_accounts=1000)
    seller = int(p.sellers[0])
    r = CliRunner().invoke(
        main, ["explain", str(seller), "--viewer", str(int(p.buyers[0])), "--accounts", "1000"]
    )
    assert r.exit_code == 0, r.output
    assert "role seller" in r.output and f"account {seller}" in r.output


def test_example_runs(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "audit.py"
    spec = importlib.util.spec_from_file_location("example_audit", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rep = example.main(
        [
            "--accounts",
            "1200",
            "--walkers",
            "3",
            "--steps",
            "2",
            "--no-sweep",
            "--out",
            str(tmp_path),
        ]
    )
    assert rep["runs"] and (tmp_path / "report.json").exists()
