"""Every example runs on small data, so that none of them rots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quickstart(capsys):
    ids = _load("quickstart").main(["--users", "300", "--items", "200"])
    assert ids.shape == (100, 10) and (ids >= 0).all()
    assert "none flagged" in capsys.readouterr().out


def test_serving_example_fails_closed():
    """The HTTP service serves guarded slates, exports metrics, and answers 503 once its
    refresher breaks and the last snapshot ages out."""
    out = _load("serving").main(
        ["--demo", "--users", "150", "--items", "100", "--refresh", "0.1", "--max-age", "0.6"]
    )
    assert out["ok"] == [10] * 20
    assert out["health"] == 200
    assert 'guardrails_decisions_total{counter="calls"}' in out["metrics"]
    assert "guardrails_serving_healthy 1.0" in out["metrics"]
    assert out["after_break"] == (503, "fail_closed")
    assert out["health_after"] == 503
    assert out["refresh_failures"] >= 1


def test_audit_own_data(tmp_path, capsys):
    rc = _load("audit_own_data").main(
        [
            "--accounts",
            "1000",
            "--folder",
            str(tmp_path / "plat"),
            "--out",
            str(tmp_path / "rep"),
            "--walkers",
            "2",
            "--steps",
            "2",
            "--no-sweep",
        ]  # fmt: skip
    )
    out = capsys.readouterr().out
    assert rc in (0, 1) and f"exit status {rc}" in out
    assert (tmp_path / "plat" / "evaluation.npz").exists()
    assert (tmp_path / "rep" / "report.json").exists()
