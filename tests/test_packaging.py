"""Packaging metadata: one version source, the license file, project URLs."""

from __future__ import annotations

import importlib.metadata as md
import tomllib
from pathlib import Path

import guardrails as gr

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_source():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "guardrails.__version__"
    }
    assert md.version("recsys-guardrails") == gr.__version__


def test_license_and_urls():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    meta = md.metadata("recsys-guardrails")
    assert meta["License-Expression"] == "MIT"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
