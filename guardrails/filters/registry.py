"""Filter registry, plug-ins and the policy-file schema.

Built-in filters are registered under their ``name``. Third-party filters register with
:func:`register_filter` or through the entry-point group ``guardrails.filters`` (loaded
only when :func:`load_plugins` is called: a policy file can never cause an import).
Registration checks the filter and names a failing plug-in in the :class:`PluginError`.

A registered filter is usable from policy files when it has a *config spec*: a mapping
of its constructor's keyword names to value kinds (see :data:`KINDS`). Arrays are never
inlined: a file refers to them by name (resolved from the ``data`` mapping given to the
loader) or by a relative ``.npy``/``.npz`` path loaded without pickle.
"""

from __future__ import annotations

import inspect
import threading

from ..exceptions import PluginError
from ._contract import check_conformance, example_parts, random_viewers
from .base import is_filter_name
from .context import ContextRisk
from .primitive import BlockItems, DemoteRisk, ExcludePairs, SuppressRisk
from .safety import BlockLabeled, CohortRule, SuppressNeighborhood
from .ties import RequireTie
from .viewers import RelationshipRule, ShareCap, ViewerCircuitBreaker

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "register_filter",
    "registered_filters",
    "filter_class",
    "load_plugins",
    "BUILTINS",
]

#: The entry-point group third-party filters register under.
ENTRY_POINT_GROUP = "guardrails.filters"

#: Value kinds of config specs.
KINDS = (
    "float",
    "int",
    "bool",
    "str",
    "strs",
    "vector",
    "mask",
    "ints",
    "csr",
    "matrix",
    "knots",
    "labels",
    "str_or_int",
    "bool_or_str",
    "indices",
)

#: The built-in filters; each declares its ``config_spec`` beside its ``__init__``.
BUILTINS = (
    BlockItems,
    ExcludePairs,
    SuppressRisk,
    DemoteRisk,
    BlockLabeled,
    SuppressNeighborhood,
    CohortRule,
    ViewerCircuitBreaker,
    ContextRisk,
    ShareCap,
    RelationshipRule,
    RequireTie,
)

_LOCK = threading.Lock()
_REGISTRY: dict[str, tuple[type, dict[str, str]]] = {
    cls.name: (cls, dict(cls.config_spec)) for cls in BUILTINS
}


def registered_filters() -> dict[str, type]:
    """Type name -> filter class, built-ins and registered plug-ins."""
    with _LOCK:
        return {k: v[0] for k, v in sorted(_REGISTRY.items())}


def filter_class(type_name: str) -> tuple[type, dict[str, str]]:
    """The class registered under ``type_name`` and its config spec (``KeyError`` if none)."""
    with _LOCK:
        return _REGISTRY[type_name]


def register_filter(
    cls: type, *, config: dict[str, str] | None = None, plugin: str | None = None
) -> type:
    """Register a filter class (usable as ``type = "<cls.name>"`` in policy files).

    Parameters
    ----------
    cls : type
        A class implementing :class:`~guardrails.filters.FilterProtocol`, with a
        class-level ``name``. If it has a classmethod ``example()``, the instance it
        returns is put through the filter contract (the checks of
        :func:`guardrails.testing.check_filter` that need no Guard).
    config : dict of str to str, optional, keyword-only
        Constructor keyword -> value kind (one of :data:`KINDS`), for policy files;
        defaults to the class's ``config_spec``.
    plugin : str, optional, keyword-only
        How to name the plug-in in errors (defaults to the class's qualified name).

    Returns
    -------
    type
        ``cls``, so this can be used as a decorator.

    Raises
    ------
    PluginError
        If the class fails the checks; the message names the plug-in.
    """
    if config is None and isinstance(cls, type):
        config = getattr(cls, "config_spec", None)
    label = plugin or f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"
    try:
        _check_plugin(cls, config)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a plug-in is its own
        raise PluginError(
            f"Plug-in filter {label!r} failed registration: {type(exc).__name__}: {exc}"
        ) from exc
    name = cls.name
    with _LOCK:
        old = _REGISTRY.get(name)
        if old is not None and old[0] is not cls:
            raise PluginError(
                f"Plug-in filter {label!r} failed registration: the type name {name!r} is already "
                f"taken by {old[0].__module__}.{old[0].__qualname__}."
            )
        _REGISTRY[name] = (cls, dict(config or {}))
    return cls


def _check_plugin(cls, config) -> None:
    if not isinstance(cls, type):
        raise PluginError(f"Plug-in filter {cls!r} failed registration: it is not a class.")
    label = f"{cls.__module__}.{cls.__qualname__}"
    name = getattr(cls, "name", None)
    if not is_filter_name(name):
        raise PluginError(
            f"Plug-in filter {label!r} failed registration: it needs a class-level string 'name' of letters, digits, '_' and '-'."
        )
    for meth in ("compile_global", "compile_viewers", "fingerprint"):
        if not callable(getattr(cls, meth, None)):
            raise PluginError(
                f"Plug-in filter {label!r} failed registration: it has no method {meth!r}."
            )
    if config is not None:
        params = inspect.signature(cls.__init__).parameters
        for key, kind in config.items():
            if kind not in KINDS:
                raise PluginError(
                    f"Plug-in filter {label!r} failed registration: config key {key!r} has unknown kind {kind!r}; use one of {KINDS}."
                )
            if key not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                raise PluginError(
                    f"Plug-in filter {label!r} failed registration: config key {key!r} is not a constructor parameter."
                )
    example = getattr(cls, "example", None)
    if example is not None:
        try:
            f, catalog = example_parts(example())
            check_conformance(f, catalog, random_viewers(catalog.n, 20, 6))
        except Exception as exc:  # noqa: BLE001
            raise PluginError(
                f"Plug-in filter {label!r} failed the conformance checks: {exc}"
            ) from exc


def load_plugins() -> list[str]:
    """Load and register every filter in the ``guardrails.filters`` entry-point group.

    Returns
    -------
    list of str
        The type names registered.

    Raises
    ------
    PluginError
        Naming the entry point that failed to load or to register.
    """
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        label = f"{ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001
            raise PluginError(
                f"Plug-in filter {label!r} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        config = getattr(obj, "config_spec", None)
        register_filter(obj, config=config, plugin=label)
        names.append(obj.name)
    return names
