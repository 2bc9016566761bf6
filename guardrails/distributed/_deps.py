"""Import the optional Dask extra, or say exactly which extra to install."""

from __future__ import annotations

from types import ModuleType

from ..exceptions import missing_extra

__all__ = ["require_dask"]

_MODULES = ("dask", "distributed", "pandas", "pyarrow")


def require_dask(feature: str) -> dict[str, ModuleType]:
    """Import the modules of the ``dask`` extra.

    Parameters
    ----------
    feature : str
        What needs them, for the error message (for example ``"recommend_all"``).

    Returns
    -------
    dict of str to module
        ``{"dask": ..., "distributed": ..., "pandas": ..., "pyarrow": ...}``.

    Raises
    ------
    MissingDependencyError
        When one of them is not installed; the message names the extra
        ``recsys-guardrails[dask]``.
    """
    import importlib

    out = {}
    for name in _MODULES:
        try:
            out[name] = importlib.import_module(name)
        except ImportError as exc:
            raise missing_extra(name, "dask", f"guardrails.distributed.{feature}") from exc
    return out
