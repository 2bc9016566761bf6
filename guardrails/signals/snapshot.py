"""Snapshots: an immutable, versioned, array view of the labels for one model catalogue.

A :class:`Snapshot` is what a Guard and its filters read. It is built by
:meth:`LabelStore.snapshot` for a model's catalogue (an :class:`IdMap` from external ids to
model indices), as of a time ``at``, and never changes afterwards. Its ``version`` is a
content hash: two snapshots with the same labels for the same catalogue have the same
version.

Storage: per category, the indices of the flagged candidates and their effective
severity, confidence and source (a CSR matrix of shape ``(n_categories, n_items)``); dense
per-item arrays (``max_severity``, ``source_flags``) are derived from it. Files are ``.npz``
archives without pickled objects, with JSON metadata, verified against the content hash
when loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import fail
from ..core.files import atomic_write
from ..exceptions import CorruptStoreError, NotAGuardrailsStoreError, SchemaVersionError, StoreError
from .labels import KNOWN_SOURCES, SUBJECT_KINDS

__all__ = ["IdMap", "Snapshot"]

_SNAPSHOT_FORMAT = "recsys-guardrails-snapshot"
_SNAPSHOT_FORMAT_VERSION = 1
_ARRAYS = ("indptr", "items", "severity", "confidence", "source", "unknown_ids")
#: The constructor's other arguments, in the order a saved file's metadata lists them.
_META = ("kind", "n_items", "categories", "sources", "at", "created_at", "id_map_fingerprint")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class IdMap:
    """The catalogue of a model: external id at each model index.

    Parameters
    ----------
    ids : array-like of int or of str, shape (n_items,), or mapping
        ``ids[idx]`` is the external id of model index ``idx``. A mapping from external id
        to index is accepted too (its indices must be exactly ``0 .. n-1``). Ids must be
        unique and all ints or all strs.

    Attributes
    ----------
    ids : ndarray, shape (n_items,)
        int64 or unicode; read-only.
    fingerprint : str
        SHA-256 of the ids (hex).

    Notes
    -----
    Lookups are vectorized (a sort once, then ``searchsorted``), so mapping a million
    labels onto ten million accounts takes a fraction of a second. Build the map once per
    model and reuse it across snapshots.
    """

    def __init__(self, ids):
        where = "IdMap"
        if isinstance(ids, IdMap):
            ids = ids.ids
        if isinstance(ids, Mapping):
            keys = list(ids.keys())
            idx = np.fromiter((int(v) for v in ids.values()), dtype=np.int64, count=len(keys))
            if idx.size and not np.array_equal(np.sort(idx), np.arange(idx.size)):
                raise fail(
                    "ids",
                    where,
                    "a mapping onto the indices 0 .. n-1, each once",
                    "a mapping with gaps or repeats",
                    describe=False,
                )
            arr = np.empty(len(keys), dtype=object)
            arr[idx] = keys
            ids = arr.tolist()
        if not isinstance(ids, np.ndarray):
            ids = list(ids)
            types = set(map(type, ids))
            if types == {int}:
                ids = np.array(ids, dtype=np.int64)
        if not isinstance(ids, np.ndarray):
            n_str = sum(isinstance(v, str) for v in ids)
            n_int = sum(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in ids)
            if n_str + n_int != len(ids) or (n_str and n_int):
                raise fail("ids", where, "a 1-d array of unique ints or strs (not mixed)", ids)
            if n_int:
                ids = np.array(ids, dtype=np.int64)
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise fail("ids", where, "a 1-d array of unique ints or strs", ids)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        elif np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "U":
            pass
        else:
            raise fail("ids", where, "a 1-d array of unique ints or strs (not mixed)", arr)
        sorter = np.argsort(arr, kind="stable")
        srt = arr[sorter]
        if srt.size > 1:
            dup = srt[1:] == srt[:-1]
            if dup.any():
                raise fail(
                    "ids",
                    where,
                    "unique external ids",
                    f"duplicates {srt[1:][dup][:5].tolist()}",
                    describe=False,
                )
        self.ids = _readonly(arr)
        self._sorter = sorter.astype(np.int64)
        self._sorted = srt
        h = hashlib.sha256(f"idmap{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
        self.fingerprint = h.hexdigest()

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def is_int(self) -> bool:
        return self.ids.dtype.kind == "i"

    def __len__(self) -> int:
        return self.n

    def lookup(self, external: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Model indices of external ids, ``-1`` for ids not in the catalogue.

        Parameters
        ----------
        external : sequence of int or str, or ndarray, shape (m,)

        Returns
        -------
        ndarray of int64, shape (m,)
        """
        if isinstance(external, np.ndarray) and external.dtype.kind in "iuU":
            q = external
            if (q.dtype.kind == "U") != (not self.is_int):
                return np.full(q.shape[0], -1, dtype=np.int64)
            return self._search(q.astype(np.int64) if self.is_int else q)
        seq = list(external)
        out = np.full(len(seq), -1, dtype=np.int64)
        if not seq:
            return out
        types = set(map(type, seq))
        if types <= ({int} if self.is_int else {str}):
            q = np.array(seq, dtype=np.int64) if self.is_int else np.array(seq, dtype=str)
            return self._search(q)
        if self.is_int:
            ok = np.fromiter(
                (isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in seq),
                dtype=bool,
                count=len(seq),
            )
        else:
            ok = np.fromiter((isinstance(v, str) for v in seq), dtype=bool, count=len(seq))
        if ok.all():
            q = np.array(seq, dtype=np.int64) if self.is_int else np.array(seq, dtype=str)
            return self._search(q)
        pos = np.flatnonzero(ok)
        if pos.size:
            vals = [seq[i] for i in pos.tolist()]
            q = np.array(vals, dtype=np.int64) if self.is_int else np.array(vals, dtype=str)
            out[pos] = self._search(q)
        return out

    def _search(self, q: np.ndarray) -> np.ndarray:
        if self._sorted.size == 0 or q.size == 0:
            return np.full(q.shape[0], -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted, q)
        pos = np.minimum(pos, self._sorted.size - 1)
        hit = self._sorted[pos] == q
        return np.where(hit, self._sorter[pos], -1).astype(np.int64)

    def __repr__(self) -> str:
        return f"IdMap(n={self.n}, dtype={self.ids.dtype})"


def as_id_map(id_map) -> IdMap:
    return id_map if isinstance(id_map, IdMap) else IdMap(id_map)


class Snapshot:
    """Immutable per-candidate safety signals for one catalogue, as of one time.

    Built by :meth:`LabelStore.snapshot` or :meth:`Snapshot.load`; not meant to be
    constructed by hand (the constructor validates and hashes its arrays).

    Attributes
    ----------
    version : str
        The first 16 hex digits of ``content_hash``; what ``GuardResult.snapshot_version``
        reports.
    content_hash : str
        SHA-256 (hex) of the catalogue fingerprint, categories, sources, the per-category
        arrays and the unknown ids. Independent of ``at`` and ``created_at``.
    at : float
        Labels are as of this time (seconds since the epoch); staleness is measured from it.
    created_at : float
        When the snapshot was built.
    kind : {"account", "item"}
    n_items : int
        Catalogue size (the model's candidates).
    categories : tuple of str
        Every category the store knows, sorted; :meth:`has` accepts exactly these.
    sources : tuple of str
        Bit ``j`` of ``source_flags`` is ``sources[j]``.
    max_severity : ndarray of float32, shape (n_items,)
        Highest effective severity over all categories (0 where unlabelled); read-only.
    source_flags : ndarray of uint32, shape (n_items,)
        Bit ``j`` set when an effective label with ``severity > 0`` has source
        ``sources[j]``; read-only.
    unknown_ids : ndarray, shape (n_unknown,)
        External ids with effective labels (severity > 0) that are not in the catalogue;
        they are reported here, never silently dropped.
    risk : ndarray of float32, shape (n_items,), or None
        Neighbourhood risk attached with :meth:`with_risk` (read by risk filters).
    id_map_fingerprint : str
    """

    def __init__(
        self,
        *,
        kind: str,
        n_items: int,
        categories: Sequence[str],
        sources: Sequence[str],
        indptr: np.ndarray,
        items: np.ndarray,
        severity: np.ndarray,
        confidence: np.ndarray,
        source: np.ndarray,
        unknown_ids: np.ndarray,
        at: float,
        created_at: float,
        id_map_fingerprint: str,
        risk: np.ndarray | None = None,
    ):
        self.kind = str(kind)
        self.n_items = int(n_items)
        self.categories = tuple(str(c) for c in categories)
        self.sources = tuple(str(s) for s in sources)
        self.at = float(at)
        self.created_at = float(created_at)
        self.id_map_fingerprint = str(id_map_fingerprint)
        self._indptr = _readonly(np.ascontiguousarray(indptr, dtype=np.int64))
        self._items = _readonly(np.ascontiguousarray(items, dtype=np.int64))
        self._severity = _readonly(np.ascontiguousarray(severity, dtype=np.float32))
        self._confidence = _readonly(np.ascontiguousarray(confidence, dtype=np.float32))
        self._source = _readonly(np.ascontiguousarray(source, dtype=np.uint8))
        unknown = np.asarray(unknown_ids)
        if unknown.size == 0:
            unknown = np.zeros(0, dtype=np.int64)
        self.unknown_ids = _readonly(unknown)
        self.risk = None if risk is None else _readonly(np.array(risk, dtype=np.float32))
        self._validate()
        self._cat_pos = {c: j for j, c in enumerate(self.categories)}
        self._src_pos = {s: j for j, s in enumerate(self.sources)}
        max_sev = np.zeros(self.n_items, dtype=np.float32)
        flags = np.zeros(self.n_items, dtype=np.uint32)
        if self._items.size:
            np.maximum.at(max_sev, self._items, self._severity)
            np.bitwise_or.at(
                flags, self._items, np.left_shift(np.uint32(1), self._source.astype(np.uint32))
            )
        self.max_severity = _readonly(max_sev)
        self.source_flags = _readonly(flags)
        self.content_hash = self._hash()
        self.version = self.content_hash[:16]

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        n_cat = len(self.categories)
        bad = None
        if self.kind not in SUBJECT_KINDS:
            bad = f"kind {self.kind!r}"
        elif self.n_items < 0:
            bad = f"n_items {self.n_items}"
        elif len(set(self.categories)) != n_cat or list(self.categories) != sorted(self.categories):
            bad = "categories not sorted and unique"
        elif len(set(self.sources)) != len(self.sources) or len(self.sources) > 32:
            bad = "sources not unique or more than 32"
        elif (
            self._indptr.shape != (n_cat + 1,)
            or self._indptr[0] != 0
            or np.any(np.diff(self._indptr) < 0)
        ):
            bad = "indptr malformed"
        elif self._indptr[-1] != self._items.size:
            bad = "indptr does not cover items"
        elif not (
            self._items.shape
            == self._severity.shape
            == self._confidence.shape
            == self._source.shape
        ):
            bad = "per-label arrays of different lengths"
        elif self._items.size and (self._items.min() < 0 or self._items.max() >= self.n_items):
            bad = "item indices outside the catalogue"
        elif self._items.size and not (
            np.all(np.isfinite(self._severity))
            and self._severity.min() > 0
            and self._severity.max() <= 1
            and np.all(np.isfinite(self._confidence))
            and self._confidence.min() >= 0
            and self._confidence.max() <= 1
        ):
            bad = "severity or confidence outside their ranges"
        elif self._source.size and int(self._source.max()) >= len(self.sources):
            bad = "source codes outside the source list"
        elif self.unknown_ids.ndim != 1 or self.unknown_ids.dtype.kind not in "iU":
            bad = "unknown_ids not a 1-d int or str array"
        elif self.risk is not None and (
            self.risk.shape != (self.n_items,)
            or not np.all(np.isfinite(self.risk))
            or (self.risk.size and (self.risk.min() < 0 or self.risk.max() > 1))
        ):
            bad = "risk not a finite array in [0, 1] of one entry per item"
        else:
            for j in range(n_cat):
                seg = self._items[self._indptr[j] : self._indptr[j + 1]]
                if seg.size > 1 and np.any(np.diff(seg) <= 0):
                    bad = f"items of category {self.categories[j]!r} not strictly increasing"
                    break
        if bad is not None:
            raise CorruptStoreError(f"Snapshot arrays are inconsistent: {bad}.")

    def _hash(self) -> str:
        h = hashlib.sha256(f"{_SNAPSHOT_FORMAT}/{_SNAPSHOT_FORMAT_VERSION}".encode())
        meta = {
            "kind": self.kind,
            "n_items": self.n_items,
            "categories": list(self.categories),
            "sources": list(self.sources),
            "id_map": self.id_map_fingerprint,
            "unknown_dtype": self.unknown_ids.dtype.str,
            "has_risk": self.risk is not None,
        }
        h.update(json.dumps(meta, sort_keys=True).encode())
        arrays = [
            self._indptr,
            self._items,
            self._severity,
            self._confidence,
            self._source,
            self.unknown_ids,
        ]
        if self.risk is not None:
            arrays.append(self.risk)
        for a in arrays:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ access
    def _cat(self, category: str, where: str) -> int:
        j = self._cat_pos.get(category) if isinstance(category, str) else None
        if j is None:
            raise fail(
                "category",
                where,
                f"one of the snapshot's categories {list(self.categories)}",
                category,
            )
        return j

    def labeled(self, category: str) -> tuple[np.ndarray, np.ndarray]:
        """Indices and severities of the candidates that have ``category``.

        Returns
        -------
        idx : ndarray of int64, shape (k,), strictly increasing
        severity : ndarray of float32, shape (k,), in (0, 1]
        """
        j = self._cat(category, "Snapshot.labeled")
        s = slice(self._indptr[j], self._indptr[j + 1])
        return self._items[s], self._severity[s]

    def has(self, category: str) -> np.ndarray:
        """Boolean column: which candidates have ``category`` (effective severity > 0).

        Parameters
        ----------
        category : str
            One of :attr:`categories`; any other name raises
            :class:`~guardrails.exceptions.ValidationError` (a misspelt category must not
            silently match nothing).

        Returns
        -------
        ndarray of bool, shape (n_items,)
            A fresh array.
        """
        j = self._cat(category, "Snapshot.has")
        out = np.zeros(self.n_items, dtype=bool)
        out[self._items[self._indptr[j] : self._indptr[j + 1]]] = True
        return out

    def severity(self, category: str) -> np.ndarray:
        """Effective severity of ``category`` per candidate (0 where absent).

        Returns
        -------
        ndarray of float32, shape (n_items,)
        """
        return self._dense(category, "Snapshot.severity", self._severity)

    def confidence(self, category: str) -> np.ndarray:
        """Confidence of the effective label of ``category`` per candidate (0 where absent).

        Returns
        -------
        ndarray of float32, shape (n_items,)
        """
        return self._dense(category, "Snapshot.confidence", self._confidence)

    def _dense(self, category: str, where: str, values: np.ndarray) -> np.ndarray:
        """``values`` of the labels of ``category`` scattered to a float32 column."""
        j = self._cat(category, where)
        s = slice(self._indptr[j], self._indptr[j + 1])
        out = np.zeros(self.n_items, dtype=np.float32)
        out[self._items[s]] = values[s]
        return out

    def from_source(self, source: str) -> np.ndarray:
        """Which candidates have an effective label from ``source``.

        Returns
        -------
        ndarray of bool, shape (n_items,)
            All False for a source the snapshot does not list.
        """
        j = self._src_pos.get(source)
        if j is None:
            return np.zeros(self.n_items, dtype=bool)
        return (self.source_flags & np.uint32(1 << j)) != 0

    @property
    def flagged(self) -> np.ndarray:
        """Candidates with any category (bool, shape (n_items,))."""
        return self.max_severity > 0

    @property
    def n_labels(self) -> int:
        """Number of (candidate, category) flags."""
        return int(self._items.size)

    def to_csr(self) -> sp.csr_matrix:
        """Severities as a CSR matrix of shape ``(n_categories, n_items)``."""
        return sp.csr_matrix(
            (self._severity.copy(), self._items.copy(), self._indptr.copy()),
            shape=(len(self.categories), self.n_items),
        )

    def with_risk(self, risk) -> Snapshot:
        """A new snapshot with a per-item neighbourhood risk attached (a new version).

        Parameters
        ----------
        risk : array-like of float, shape (n_items,)
            Risk in [0, 1] per candidate, for example from graph propagation; filters
            read it as ``snapshot.risk``.
        """
        from .._validation import check_vector

        arr = check_vector(
            risk, "risk", "Snapshot.with_risk", length=self.n_items, low=0.0, high=1.0
        )
        return Snapshot(**self._arguments(), risk=arr)

    def _arguments(self) -> dict:
        """The constructor's arguments that rebuild this snapshot, ``risk`` aside."""
        out = {key: getattr(self, key) for key in _META}
        for a in _ARRAYS:  # per-label arrays are private; unknown_ids is public
            out[a] = getattr(self, a if a == "unknown_ids" else f"_{a}")
        return out

    def age(self, now: float | None = None) -> float:
        """Seconds between ``at`` and ``now`` (default: the current time)."""
        return (time.time() if now is None else float(now)) - self.at

    def __repr__(self) -> str:
        return (
            f"Snapshot(version={self.version!r}, kind={self.kind!r}, n_items={self.n_items}, "
            f"categories={len(self.categories)}, flags={self.n_labels}, "
            f"unknown={self.unknown_ids.size})"
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the snapshot to ``path`` atomically (a temporary file, fsync, rename).

        The file is an ``.npz`` archive of plain arrays plus JSON metadata; nothing is
        pickled.
        """
        path = os.fspath(path)
        args = self._arguments()
        meta = {
            "format": _SNAPSHOT_FORMAT,
            "format_version": _SNAPSHOT_FORMAT_VERSION,
            **{key: args[key] for key in _META},  # tuples are written as JSON lists
            "content_hash": self.content_hash,
        }
        arrays = {a: args[a] for a in _ARRAYS}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        if self.risk is not None:
            arrays["risk"] = self.risk
        with atomic_write(path, prefix=".snapshot-") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Snapshot:
        """Read a snapshot written by :meth:`save`, verifying its content hash.

        Raises
        ------
        StoreError
            The file does not exist or cannot be read.
        NotAGuardrailsStoreError
            The file is not a snapshot archive.
        SchemaVersionError
            The snapshot was written by a newer format.
        CorruptStoreError
            The arrays or metadata are damaged, or the content hash does not match.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise StoreError(f"Cannot read the snapshot file {path!r}: {exc}.") from exc
        if not data.startswith(b"PK"):
            raise NotAGuardrailsStoreError(
                f"The file {path!r} is not a recsys-guardrails snapshot."
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                names = set(npz.files)
                if "meta" not in names:
                    raise NotAGuardrailsStoreError(
                        f"The file {path!r} is not a recsys-guardrails snapshot."
                    )
                meta = json.loads(bytes(npz["meta"]).decode())
                if not isinstance(meta, dict) or meta.get("format") != _SNAPSHOT_FORMAT:
                    raise NotAGuardrailsStoreError(
                        f"The file {path!r} is not a recsys-guardrails snapshot."
                    )
                fv = meta.get("format_version")
                if not isinstance(fv, int) or fv > _SNAPSHOT_FORMAT_VERSION:
                    raise SchemaVersionError(
                        f"The snapshot {path!r} has format version {fv!r}; this version of "
                        f"recsys-guardrails reads up to {_SNAPSHOT_FORMAT_VERSION}."
                    )
                missing = [a for a in _ARRAYS if a not in names]
                if missing:
                    raise CorruptStoreError(f"The snapshot {path!r} lacks the arrays {missing}.")
                arrays = {a: npz[a] for a in _ARRAYS}
                arrays["risk"] = npz["risk"] if "risk" in names else None
        except StoreError:
            raise
        except (
            ValueError,
            OSError,
            KeyError,
            zipfile.BadZipFile,
            NotImplementedError,  # zipfile, on a damaged header: "compression method", "version"
            EOFError,
            UnicodeDecodeError,
        ) as exc:
            raise CorruptStoreError(f"The snapshot {path!r} is unreadable: {exc}.") from exc
        try:
            snap = cls(
                kind=meta["kind"],
                n_items=meta["n_items"],
                categories=meta["categories"],
                sources=meta["sources"],
                at=meta["at"],
                created_at=meta["created_at"],
                id_map_fingerprint=meta["id_map_fingerprint"],
                **arrays,
            )
        except CorruptStoreError as exc:
            raise CorruptStoreError(f"The snapshot {path!r} is corrupt: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStoreError(
                f"The snapshot {path!r} has malformed metadata: {exc}."
            ) from exc
        if snap.content_hash != meta.get("content_hash"):
            raise CorruptStoreError(
                f"The snapshot {path!r} fails its content hash: recorded "
                f"{str(meta.get('content_hash'))[:16]}, computed {snap.content_hash[:16]}."
            )
        return snap


# ---------------------------------------------------------------------- building
def build_snapshot(
    *,
    kind: str,
    id_map: IdMap,
    categories: Sequence[str],
    subjects: list,
    category: list,
    severity: np.ndarray,
    confidence: np.ndarray,
    source: list,
    created_at: np.ndarray,
    seq: np.ndarray,
    at: float,
    created: float,
) -> Snapshot:
    """Build a snapshot from the in-force labels (rows already filtered to ``at``).

    Vectorized: rows are grouped by (subject, category) with one lexsort, and the latest
    of each group is the effective label.
    """
    from .labels import select_effective

    n = len(subjects)
    cats = sorted(set(categories) | set(category))
    cat_pos = {c: j for j, c in enumerate(cats)}
    n_cat = max(len(cats), 1)
    idx = id_map.lookup(subjects)
    # Unknown subjects get codes after the catalogue so they group like known ones.
    unknown_rows = np.flatnonzero(idx < 0)
    code = idx.copy()
    unknown_keys: list = []
    if unknown_rows.size:
        first: dict = {}
        for r in unknown_rows.tolist():
            s = subjects[r]
            key = (type(s) is str, s)
            j = first.get(key)
            if j is None:
                j = first[key] = len(unknown_keys)
                unknown_keys.append(s)
            code[r] = id_map.n + j
    cat_code = np.fromiter(map(cat_pos.__getitem__, category), dtype=np.int64, count=n)
    group = code * n_cat + cat_code
    win = select_effective(group, created_at, seq)
    sev_w = severity[win]
    live = sev_w > 0
    win = win[live]
    w_code = code[win]
    known = w_code < id_map.n
    # Unknown ids: those with a live effective label, in first-seen order of their codes.
    unk_codes = np.unique(w_code[~known]) - id_map.n
    unk_vals = [unknown_keys[j] for j in unk_codes.tolist()]
    if unk_vals and all(type(v) is int for v in unk_vals):
        unknown_ids = np.array(unk_vals, dtype=np.int64)
    elif unk_vals:
        unknown_ids = np.array([str(v) for v in unk_vals], dtype=str)
    else:
        unknown_ids = np.zeros(0, dtype=np.int64)
    win = win[known]
    # Sources: known ones first (stable bits), then others sorted.
    src_all = list(map(source.__getitem__, win.tolist()))
    extra = sorted(set(src_all) - set(KNOWN_SOURCES)) if win.size else []
    sources = list(KNOWN_SOURCES) + extra
    if len(sources) > 32:
        raise StoreError(
            "A snapshot can carry at most 32 distinct label sources; the labels use "
            f"{len(sources)}."
        )
    src_pos = {s: j for j, s in enumerate(sources)}
    src_code_w = np.fromiter(map(src_pos.__getitem__, src_all), dtype=np.uint8, count=win.size)
    c_w = cat_code[win]
    i_w = code[win]
    order = np.lexsort((i_w, c_w))
    c_w, i_w = c_w[order], i_w[order]
    win_sorted = win[order]
    counts = (
        np.bincount(c_w, minlength=len(cats)) if c_w.size else np.zeros(len(cats), dtype=np.int64)
    )
    indptr = np.zeros(len(cats) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Snapshot(
        kind=kind,
        n_items=id_map.n,
        categories=cats,
        sources=sources,
        indptr=indptr,
        items=i_w,
        severity=severity[win_sorted],
        confidence=confidence[win_sorted],
        source=src_code_w[order],
        unknown_ids=unknown_ids,
        at=at,
        created_at=created,
        id_map_fingerprint=id_map.fingerprint,
    )
