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
import math
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..exceptions import PluginError, PolicyFileError, ValidationError

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "register_filter",
    "registered_filters",
    "filter_class",
    "load_plugins",
    "policy_from_dict",
    "policy_to_dict",
    "dump_toml",
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
)

_COMMON = {"name": "str", "reason": "str", "mode": "str", "failure": "str", "surfaces": "strs"}

_LOCK = threading.Lock()
_REGISTRY: dict[str, tuple[type, dict[str, str]]] = {}
_BUILTINS_LOADED = False


def _builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    from .primitive import BlockItems, DemoteRisk, ExcludePairs, SuppressRisk
    from .safety import (
        BlockLabeled,
        CohortRule,
        RelationshipRule,
        ShareCap,
        SuppressNeighborhood,
        ViewerCircuitBreaker,
    )

    specs = {
        BlockItems: {"ids": "ints"},
        ExcludePairs: {"pairs": "csr"},
        SuppressRisk: {"risk": "vector", "threshold": "float"},
        DemoteRisk: {
            "risk": "vector",
            "weight": "float",
            "curve": "str",
            "knots": "knots",
            "floor": "float",
        },
        BlockLabeled: {
            "categories": "strs",
            "min_severity": "float",
            "labels": "labels",
            "severity": "vector",
            "action": "str",
            "weight": "float",
        },
        SuppressNeighborhood: {
            "risk": "vector",
            "threshold": "float",
            "demote_threshold": "float",
            "demote_weight": "float",
            "seeds": "mask",
            "alpha": "float",
            "demote_reason": "str",
        },
        CohortRule: {
            "viewer_cohorts": "ints",
            "candidate_cohorts": "ints",
            "matrix": "matrix",
            "viewer_labels": "strs",
            "candidate_labels": "strs",
            "weight": "float",
            "unknown_viewer": "str_or_int",
        },
        ViewerCircuitBreaker: {
            "risk": "vector",
            "item_threshold": "float",
            "trip": "float",
            "pool_threshold": "float",
            "pool": "mask",
            "viewer_risk": "vector",
            "min_interactions": "int",
            "strip_interactions": "bool",
        },
        ShareCap: {
            "max_share": "float",
            "risk": "vector",
            "threshold": "float",
            "communities": "ints",
            "min_count": "int",
        },
        RelationshipRule: {
            "targets": "mask",
            "follows": "csr",
            "use_call_interactions": "bool",
            "action": "str",
            "weight": "float",
        },
    }
    with _LOCK:
        for cls, spec in specs.items():
            _REGISTRY.setdefault(cls.name, (cls, spec))
        _BUILTINS_LOADED = True


def registered_filters() -> dict[str, type]:
    """Type name -> filter class, built-ins and registered plug-ins."""
    _builtins()
    with _LOCK:
        return {k: v[0] for k, v in sorted(_REGISTRY.items())}


def filter_class(type_name: str) -> tuple[type, dict[str, str]]:
    _builtins()
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
        returns is put through :func:`guardrails.testing.check_filter`.
    config : dict of str to str, optional, keyword-only
        Constructor keyword -> value kind (one of :data:`KINDS`), for policy files.
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
    _builtins()
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
    if (
        not isinstance(name, str)
        or not name
        or not name.replace("_", "").replace("-", "").isalnum()
    ):
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
        from ..testing import check_filter

        try:
            check_filter(example())
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


# ============================================================================ reading
class _Reader:
    def __init__(self, source: str, data: dict | None, base_dir: str | None):
        self.source = source
        self.data = dict(data or {})
        self.base_dir = base_dir

    def error(self, key: str, what: str, got: Any) -> PolicyFileError:
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return PolicyFileError(
            f"The {key!r} key of policy file {self.source!r} must be {what}. Got {shown} instead."
        )

    def array(self, key: str, ref: Any):
        if not isinstance(ref, str) or not ref:
            raise self.error(
                key, "the name of an array (from data=) or a relative .npy/.npz path", ref
            )
        if ref in self.data:
            return self.data[ref]
        if ref.endswith((".npy", ".npz")):
            if self.base_dir is None:
                raise self.error(
                    key, "an array name given in data= (no file to resolve paths against)", ref
                )
            if os.path.isabs(ref) or ".." in ref.replace("\\", "/").split("/"):
                raise self.error(key, "a relative path inside the policy file's directory", ref)
            path = os.path.join(self.base_dir, ref)
            try:
                if ref.endswith(".npz"):
                    return sp.load_npz(path)
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise self.error(key, f"a readable array file ({exc})", ref) from exc
        raise self.error(
            key,
            f"an array name given in data= (known: {sorted(self.data)}) or a .npy/.npz path",
            ref,
        )

    def value(self, key: str, kind: str, v: Any):
        if kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self.error(key, "a finite number", v)
            return float(v)
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.error(key, "an integer", v)
            return v
        if kind == "bool":
            if not isinstance(v, bool):
                raise self.error(key, "true or false", v)
            return v
        if kind == "str":
            if not isinstance(v, str):
                raise self.error(key, "a string", v)
            return v
        if kind == "str_or_int":
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise self.error(key, "a string or an integer", v)
            return v
        if kind == "strs":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise self.error(key, "a list of strings", v)
            return tuple(v)
        if kind in ("vector", "mask", "ints", "csr"):
            arr = self.array(key, v)
            if kind == "csr":
                if not sp.issparse(arr):
                    raise self.error(key, "a reference to a sparse matrix (.npz)", v)
                return arr
            arr = np.asarray(arr)
            if kind == "mask" and arr.dtype != bool:
                raise self.error(key, "a reference to a bool array", v)
            if kind == "ints" and not np.issubdtype(arr.dtype, np.integer):
                raise self.error(key, "a reference to an integer array", v)
            return arr
        if kind == "matrix":
            if (
                not isinstance(v, list)
                or not v
                or not all(isinstance(r, list) and all(isinstance(x, str) for x in r) for r in v)
            ):
                raise self.error(key, "a list of lists of actions ('allow', 'demote', 'drop')", v)
            return v
        if kind == "knots":
            ok = isinstance(v, list) and all(
                isinstance(p, list)
                and len(p) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
                for p in v
            )
            if not ok:
                raise self.error(key, "a list of [risk, level] pairs", v)
            return [tuple(float(x) for x in p) for p in v]
        if kind == "labels":
            if not isinstance(v, dict):
                raise self.error(key, "a table of category = array reference", v)
            return {k: np.asarray(self.array(f"{key}.{k}", x)) for k, x in v.items()}
        raise self.error(
            key, f"a value of a known kind (spec says {kind!r})", v
        )  # pragma: no cover


def policy_from_dict(
    doc: dict, *, data: dict | None = None, source: str = "<dict>", base_dir: str | None = None
):
    """Build a :class:`~guardrails.policy.Policy` from a parsed policy file."""
    from ..policy import SCHEMA_VERSION, Holdback, Policy

    rd = _Reader(source, data, base_dir)
    top = {"schema_version", "name", "mode", "holdback", "filters"}
    if not isinstance(doc, dict):
        raise rd.error("(document)", "a table", doc)
    for k in doc:
        if k not in top:
            raise rd.error(k, f"one of the known top-level keys {sorted(top)}", k)
    sv = doc.get("schema_version")
    if isinstance(sv, bool) or not isinstance(sv, int):
        raise rd.error("schema_version", f"an integer (this release reads {SCHEMA_VERSION})", sv)
    if sv > SCHEMA_VERSION or sv < 1:
        raise rd.error(
            "schema_version", f"at most {SCHEMA_VERSION} (written by a newer release?)", sv
        )
    filters = []
    raw = doc.get("filters", [])
    if not isinstance(raw, list):
        raise rd.error("filters", "an array of tables ([[filters]])", raw)
    for j, fd in enumerate(raw):
        base = f"filters[{j}]"
        if not isinstance(fd, dict):
            raise rd.error(base, "a table", fd)
        t = fd.get("type")
        if not isinstance(t, str):
            raise rd.error(f"{base}.type", "a filter type name", t)
        try:
            cls, spec = filter_class(t)
        except KeyError:
            raise rd.error(
                f"{base}.type", f"a registered filter type {sorted(registered_filters())}", t
            ) from None
        full = {**_COMMON, **spec}
        kwargs: dict[str, Any] = {}
        for k, v in fd.items():
            if k == "type":
                continue
            if k not in full:
                raise rd.error(
                    f"{base}.{k}", f"a key of filter type {t!r}: one of {sorted(full)}", k
                )
            kwargs[k] = rd.value(f"{base}.{k}", full[k], v)
        try:
            filters.append(_construct(cls, kwargs))
        except ValidationError as exc:
            raise PolicyFileError(f"Policy file {source!r}, {base} (type {t!r}): {exc}") from exc
    kw: dict[str, Any] = {}
    if "name" in doc:
        kw["name"] = rd.value("name", "str", doc["name"])
    if "mode" in doc:
        kw["mode"] = rd.value("mode", "str", doc["mode"])
    if "holdback" in doc:
        h = doc["holdback"]
        if not isinstance(h, dict):
            raise rd.error("holdback", "a table", h)
        for k in h:
            if k not in ("fraction", "salt", "filters"):
                raise rd.error(f"holdback.{k}", "one of 'fraction', 'salt', 'filters'", k)
        try:
            kw["holdback"] = Holdback(
                rd.value("holdback.fraction", "float", h.get("fraction")),
                salt=rd.value("holdback.salt", "str", h.get("salt")),
                filters=rd.value("holdback.filters", "strs", h.get("filters")),
            )
        except ValidationError as exc:
            if isinstance(exc, PolicyFileError):
                raise
            raise PolicyFileError(f"Policy file {source!r}, holdback: {exc}") from exc
    try:
        return Policy(filters, **kw)
    except ValidationError as exc:
        raise PolicyFileError(f"Policy file {source!r}: {exc}") from exc


def _construct(cls, kwargs: dict):
    """Construct ``cls``; common settings it does not accept are validated and set after."""
    from .._validation import check_choice
    from .base import FAILURE_MODES, MODES, _check_surfaces

    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    late = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in _COMMON and k not in params and not accepts_any
    }
    obj = cls(**kwargs)
    where = type(obj).__name__
    for k, v in late.items():
        if k == "mode":
            v = check_choice(v, "mode", where, MODES)
        elif k == "failure":
            v = check_choice(v, "failure", where, FAILURE_MODES)
        elif k == "surfaces":
            v = _check_surfaces(v, where)
        elif not isinstance(v, str) or not v:
            from .._validation import fail

            raise fail(k, where, "a non-empty string", v)
        setattr(obj, k, v)
    return obj


# ============================================================================ writing
def policy_to_dict(policy, *, store: Callable[[str, Any], str]) -> dict:
    """The policy as a plain dict for TOML; arrays go through ``store(name, array) -> ref``."""
    from ..policy import SCHEMA_VERSION

    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": policy.name,
        "mode": policy.mode,
    }
    if policy.holdback is not None:
        hb = policy.holdback
        doc["holdback"] = {"fraction": hb.fraction, "salt": hb.salt, "filters": list(hb.filters)}
    out = []
    for f, st in zip(policy.filters, policy.settings, strict=True):
        t = type(f)
        try:
            cls, spec = filter_class(t.name)
        except (KeyError, AttributeError):
            cls, spec = None, None
        if cls is not t:
            raise ValidationError(
                f"The 'policy' parameter of save_policy must hold registered filters with a config spec. "
                f"Got {t.__qualname__} (filter {st.name!r}) instead."
            )
        d: dict[str, Any] = {"type": t.name}
        d["name"] = st.name
        reason = getattr(f, "reason", None)
        if isinstance(reason, str):
            d["reason"] = reason
        d["mode"] = st.mode
        d["failure"] = st.failure
        if st.surfaces is not None:
            d["surfaces"] = list(st.surfaces)
        for key, kind in spec.items():
            v = _config_value(f, key)
            if v is None:
                continue
            ref = f"{st.name}.{key}"
            if kind in ("vector", "ints", "csr"):
                d[key] = store(ref, v)
            elif kind == "mask":
                d[key] = store(ref, np.asarray(v, dtype=bool))
            elif kind == "labels":
                d[key] = {c: store(f"{ref}.{c}", a) for c, a in v.items()}
            elif kind == "knots":
                d[key] = [[float(a), float(b)] for a, b in np.asarray(v)]
            elif kind == "matrix":
                d[key] = v
            elif kind == "strs":
                d[key] = list(v)
            elif kind == "float":
                d[key] = float(v)
            else:
                d[key] = v
        out.append(d)
    doc["filters"] = out
    return doc


def _config_value(f, key: str):
    from .safety import ACTIONS, CohortRule, RelationshipRule

    if isinstance(f, CohortRule) and key == "matrix":
        return [[ACTIONS[int(c)] for c in row] for row in f.matrix]
    if isinstance(f, RelationshipRule) and key == "targets":
        n = f.n_candidates if f.n_candidates is not None else int(f.targets.max(initial=-1)) + 1
        m = np.zeros(n, dtype=bool)
        m[f.targets] = True
        return m
    return getattr(f, key, None)


def dump_toml(doc: dict) -> str:
    """A small TOML writer for policy documents (scalars, arrays, tables, arrays of tables)."""
    lines: list[str] = []
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict) and not _is_table_array(v)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in doc.items() if _is_table_array(v)}
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_val(v)}")
    for k, v in tables.items():
        lines.append("")
        lines.append(f"[{_key(k)}]")
        for kk, vv in v.items():
            lines.append(f"{_key(kk)} = {_val(vv)}")
    for k, v in arrays.items():
        for t in v:
            lines.append("")
            lines.append(f"[[{_key(k)}]]")
            for kk, vv in t.items():
                lines.append(f"{_key(kk)} = {_val(vv)}")
    return "\n".join(lines) + "\n"


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    if k and all(c.isalnum() or c in "_-" for c in k):
        return k
    return _str(k)


def _str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _val(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise ValidationError(f"Cannot write the non-finite number {f!r} to a policy file.")
        return repr(f)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_val(x)}" for k, x in v.items()) + " }"
    raise ValidationError(f"Cannot write a value of type {type(v).__name__} to a policy file.")
