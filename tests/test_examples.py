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
