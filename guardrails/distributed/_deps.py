"""Import the optional Dask extra, or say exactly which extra to install."""

from __future__ import annotations

from types import ModuleType

from .._validation import fail
from ..exceptions import missing_extra

__all__ = ["require_dask", "resolve_client", "worker_threads"]

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


def resolve_client(distributed: ModuleType, client, where: str):
    """Return ``client``, or the default client when it is None.

    Parameters
    ----------
    distributed : module
        The ``distributed`` module (from :func:`require_dask`).
    client : distributed.Client or None
    where : str
        The public function, for the error message.

    Raises
    ------
    ValidationError
        When ``client`` is not a ``distributed.Client``, or is None with no default
        client running.
    """
    if client is None:
        try:
            return distributed.default_client()
        except ValueError as exc:
            raise fail(
                "client",
                where,
                "a distributed.Client, or None with a default client running",
                None,
            ) from exc
    if not isinstance(client, distributed.Client):
        raise fail("client", where, "a distributed.Client", client)
    return client


def worker_threads(client) -> int:
    """Threads across the cluster's workers now (each worker counts one if it does not say)."""
    return sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
