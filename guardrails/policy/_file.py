"""Policy files: TOML documents read with ``tomllib``, arrays in ``.npy``/``.npz`` files.

A filter type is written and read through the config spec its class declares (see
:func:`guardrails.filters.register_filter`); arrays are referenced by name (``data=``)
or by a relative path beside the file, and never loaded with pickle.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import math
import os
import tomllib
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, fail
from ..core.files import ARRAY_FILE_ERRORS, atomic_write, read_array
from ..exceptions import PolicyFileError, ValidationError
from ..filters.base import MODES, check_surfaces
from ..filters.registry import filter_class, registered_filters
from ..filters.safety import ACTIONS
from ._policy import SCHEMA_VERSION, Holdback, Policy

__all__ = ["load_policy", "save_policy", "policy_from_dict", "policy_to_dict", "dump_toml"]

#: Settings every filter type accepts in a policy file, whatever its own spec.
_COMMON = {"name": "str", "reason": "str", "mode": "str", "failure": "str", "surfaces": "strs"}


def load_policy(path, *, data: dict | None = None) -> Policy:
    """Read a policy file (TOML).

    Parameters
    ----------
    path : str or PathLike
        The policy file.
    data : dict of str to array, optional, keyword-only
        Arrays referenced by name in the file (``risk = "risk"``). A reference not in
        ``data`` that ends in ``.npy`` or ``.npz`` is loaded relative to the file,
        without pickle.

    Raises
    ------
    PolicyFileError
        Unknown keys, bad values or a newer schema, with the file and key named.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(f"Policy file {path!r} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise PolicyFileError(f"Policy file {path!r} cannot be read: {exc}") from exc
    return policy_from_dict(
        doc, data=data, source=path, base_dir=os.path.dirname(os.path.abspath(path))
    )


def save_policy(policy: Policy, path, *, data_dir: str | None = None) -> dict[str, str]:
    """Write a policy file (TOML), with its arrays as ``.npy``/``.npz`` files beside it.

    Parameters
    ----------
    policy : Policy
        A policy of built-in (or registered, configurable) filters.
    path : str or PathLike
    data_dir : str, optional, keyword-only
        Directory for the arrays, relative to the file's directory; defaults to
        ``"<file stem>.data"``.

    Returns
    -------
    dict of str to str
        Array reference -> file written.

    Notes
    -----
    Every file is written atomically (a temporary file in the same directory, then
    ``os.replace``): the arrays first, the TOML file last, so a reader never sees a torn
    file and a failed save leaves the previous policy file as it was. Array file names are
    derived from filter names and categories with unsafe characters replaced, so they
    always stay inside the data directory. Overwriting a policy while another process
    loads it may pair the old TOML with new arrays of the same names; write a new path
    and point readers to it when that matters.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    rel = data_dir if data_dir is not None else f"{stem}.data"
    written: dict[str, str] = {}

    def store(name: str, arr) -> str:
        os.makedirs(os.path.join(base, rel), exist_ok=True)
        buf = io.BytesIO()
        if sp.issparse(arr):
            ref = f"{rel}/{_file_stem(name)}.npz"
            sp.save_npz(buf, sp.csr_matrix(arr), compressed=True)
        else:
            ref = f"{rel}/{_file_stem(name)}.npy"
            np.save(buf, np.asarray(arr), allow_pickle=False)
        _write_atomic(os.path.join(base, ref), buf.getvalue())
        written[ref] = os.path.join(base, ref)
        return ref

    doc = policy_to_dict(policy, store=store)
    # The TOML text is complete (and checked) before anything replaces the old file.
    _write_atomic(path, dump_toml(doc).encode("utf-8"))
    return written


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
                return read_array(path)
            except ARRAY_FILE_ERRORS as exc:
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
        if kind == "bool_or_str":
            if not isinstance(v, (bool, str)):
                raise self.error(key, "true, false or a string", v)
            return v
        if kind == "strs":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise self.error(key, "a list of strings", v)
            return tuple(v)
        if kind == "indices":
            arr = np.asarray(self.array(key, v))
            if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
                raise self.error(key, "a reference to a bool mask or an integer array", v)
            return arr
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
            if isinstance(v, str):
                return np.asarray(self.array(key, v))
            if not isinstance(v, dict):
                raise self.error(
                    key, "a table of category = array reference, or one array reference", v
                )
            return {k: np.asarray(self.array(f"{key}.{k}", x)) for k, x in v.items()}
        raise self.error(
            key, f"a value of a known kind (spec says {kind!r})", v
        )  # pragma: no cover


def policy_from_dict(
    doc: dict, *, data: dict | None = None, source: str = "<dict>", base_dir: str | None = None
):
    """Build a :class:`~guardrails.policy.Policy` from a parsed policy file."""
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
    modes: dict[str, str] = {}
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
            f, mode = _construct(cls, kwargs)
        except ValidationError as exc:
            raise PolicyFileError(f"Policy file {source!r}, {base} (type {t!r}): {exc}") from exc
        filters.append(f)
        if mode is not None:
            modes[f.name] = mode
    kw: dict[str, Any] = {"filter_modes": modes}
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


def _construct(cls, kwargs: dict) -> tuple[Any, str | None]:
    """Build ``cls`` from the file's keys (no attribute is set after construction).

    Every built-in filter takes the common settings in its constructor. A plug-in that
    does not take one of them gets ``mode`` through the policy (its per-filter mode
    override, returned here); any other common setting must equal the class's own.
    """
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return cls(**kwargs), None
    mode = None
    where = getattr(cls, "__name__", "filter")
    for k in [k for k in kwargs if k in _COMMON and k not in params]:
        v = kwargs.pop(k)
        if k == "mode":
            mode = check_choice(v, "mode", where, MODES)
            continue
        fixed = getattr(cls, k, None)
        if k == "surfaces":
            same = check_surfaces(v, where) == fixed
        else:
            same = v == fixed
        if not same:
            raise fail(k, where, f"{fixed!r} (this filter type does not take {k!r})", v)
    return cls(**kwargs), mode


# ============================================================================ writing
def policy_to_dict(policy, *, store: Callable[[str, Any], str]) -> dict:
    """The policy as a plain dict for TOML; arrays go through ``store(name, array) -> ref``."""
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
            # Filters keep their constructor arguments as given, so the file holds
            # exactly what rebuilds the filter.
            v = getattr(f, key, None)
            if v is not None:
                d[key] = _file_value(kind, v, f"{st.name}.{key}", store)
        out.append(d)
    doc["filters"] = out
    return doc


def _file_value(kind: str, v: Any, ref: str, store: Callable[[str, Any], str]):
    """A constructor argument of ``kind`` as a TOML value; arrays go through ``store``."""
    if kind in ("vector", "ints", "indices"):
        return store(ref, np.asarray(v))
    if kind == "mask":
        return store(ref, np.asarray(v, dtype=bool))
    if kind == "csr":
        return store(ref, sp.csr_matrix(v))
    if kind == "labels":
        if isinstance(v, dict):
            return {c: store(f"{ref}.{c}", np.asarray(a)) for c, a in v.items()}
        return store(ref, np.asarray(v))
    if kind == "knots":
        return [[float(a), float(b)] for a, b in np.asarray(v, dtype=np.float64)]
    if kind == "matrix":
        return [[c if isinstance(c, str) else ACTIONS[int(c)] for c in row] for row in v]
    if kind == "strs":
        return [v] if isinstance(v, str) else [str(x) for x in v]
    if kind == "float":
        return float(v)
    if kind == "int":
        return int(v)
    if kind == "str_or_int":
        return v if isinstance(v, str) else int(v)
    if kind == "bool_or_str":
        return v if isinstance(v, str) else bool(v)
    return v


def dump_toml(doc: dict) -> str:
    """The policy document as TOML text, written by tomli-w.

    tomli-w quotes and escapes keys and strings as TOML 1.0 requires: a category such as
    ``"catégorie"`` (bare keys are ASCII only) or ``"a.b"`` (a dotted key if bare) is
    written as a quoted key, so :func:`load_policy` reads back exactly what was written.
    numpy scalars become Python numbers; non-finite floats are refused (TOML could hold
    ``nan``, but a policy threshold of NaN is a bug, not a setting).
    """
    import tomli_w

    return tomli_w.dumps(_plain(doc))


def _plain(v: Any) -> Any:
    """``v`` with Python scalars only, checked for what a policy file may hold."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise ValidationError(f"Cannot write the non-finite number {f!r} to a policy file.")
        return f
    if isinstance(v, str):
        return v
    raise ValidationError(f"Cannot write a value of type {type(v).__name__} to a policy file.")


def _write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`guardrails.core.files.atomic_write`)."""
    with atomic_write(path) as fh:
        fh.write(data)


def _file_stem(name: str) -> str:
    """A file name for an array reference: portable characters only, never a path.

    Names come from filter names and label categories, which may hold any character
    (``/``, ``..``, non-ASCII); anything but ``[A-Za-z0-9_.-]`` is replaced and a short
    hash of the original keeps two such names apart.
    """
    safe = "".join(c if (c.isascii() and (c.isalnum() or c in "_.-")) else "_" for c in name)
    safe = safe.lstrip(".") or "_"
    if safe != name:
        safe = f"{safe[:80]}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:10]}"
    return safe
