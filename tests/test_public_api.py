"""The curated public API: every name in __all__ exists, and nothing private leaks."""

from __future__ import annotations

import importlib

import guardrails as gr


def test_all_names_exist():
    for name in gr.__all__:
        assert hasattr(gr, name), name


def test_all_is_curated():
    public = {n for n in dir(gr) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(gr, n)).__name__ == "module"}
    # submodules imported by the package itself are listed or are subpackages of the API
    assert set(gr.__all__) - {"__version__"} <= public
    assert not (public - set(gr.__all__) - modules), sorted(public - set(gr.__all__) - modules)


def test_version():
    from importlib.metadata import version

    assert gr.__version__ == version("recsys-guardrails")


def test_subpackages_have_all():
    for mod in ("guardrails.filters", "guardrails.core", "guardrails.exceptions"):
        m = importlib.import_module(mod)
        for name in m.__all__:
            assert hasattr(m, name), (mod, name)
