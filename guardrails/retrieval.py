"""Guarded approximate-nearest-neighbour retrieval for very large catalogues.

An exact product over every item per viewer stops scaling somewhere past a few million
items. :class:`ANNRetrieval` keeps the Guard's contract on approximate candidates:

1. a faiss index over the model's item factors returns a pool of ``pool`` candidates per
   viewer by inner product, with the policy's global hard mask (and the call's
   ``filter_items``) applied *inside* the search by an id selector, so suppressed items
   never take pool slots;
2. the pool goes through the exact guarded kernel (:func:`guardrails.core.kernel.pool_topk`):
   exact scores, the policy's penalties, per-viewer masks and penalties, nothing in the
   pool trusted;
3. a viewer whose pool holds fewer than ``N`` eligible items is searched again with a
   pool ``widen`` times larger, up to ``max_pool``;
4. a viewer still short then takes the exact path over the whole catalogue.

So no suppressed id is ever returned, and a slate has exactly ``N`` items whenever ``N``
eligible items exist; only the ranking is approximate (recall against the exact guarded
slate is measured by ``benchmarks/bench_ann.py``).

Building and refreshing
-----------------------
The index depends on the item factors only, never on a policy or a snapshot:
``Guard.swap_policy`` and ``Guard.swap_snapshot`` reuse it as it is. Build it once per
trained model, either explicitly (``ANNRetrieval(...).build(model.item_factors)``, e.g.
in the training job, then :meth:`save` / :meth:`load`) or implicitly when a Guard is
constructed with an unbuilt retrieval. After retraining, build a new index for the new
factors and construct a new Guard (a retrained model has new factors anyway); a
retrieval whose index does not match the model's shape is refused with a
``ValidationError``.

Needs the optional extra ``ann`` (``pip install 'recsys-guardrails[ann]'``, faiss-cpu).
faiss was chosen over usearch because usearch's Python ``Index.search`` (2.26) takes no
filter predicate, so the hard mask could only be applied after the search.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ._validation import check_factors, check_int, fail
from .core.kernel import FactorSpace, guarded_topk, pool_topk
from .exceptions import ValidationError, missing_extra

__all__ = ["ANNRetrieval"]

_WHERE = "ANNRetrieval"
_KINDS = ("ivf", "hnsw")


def _to_sphere(x: np.ndarray) -> np.ndarray:
    """Items with one more coordinate, ``sqrt(M^2 - |x|^2)``: every row then has norm ``M``.

    Inner products with a query padded by 0 are unchanged, but the largest inner product
    becomes the nearest neighbour on a sphere, which k-means lists and graph links
    capture; on raw factors a high-norm item far from a viewer's cluster is missed by the
    lists near the viewer (the MIPS-to-NNS reduction of Bachrach et al., RecSys 2014).
    """
    # float64 squared norms a slice of rows at a time (no float64 copy of all the items)
    norms = np.empty(x.shape[0], dtype=np.float64)
    for lo in range(0, x.shape[0], 1 << 16):
        part = x[lo : lo + (1 << 16)].astype(np.float64)
        norms[lo : lo + part.shape[0]] = np.einsum("ij,ij->i", part, part)
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = x
    out[:, -1] = np.sqrt(np.maximum(norms.max() - norms, 0.0))
    return out


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - exercised without the extra
        raise missing_extra("faiss", "ann", "ANNRetrieval") from e
    return faiss


class ANNRetrieval:
    """Candidate pools from a faiss index, under the Guard's contract.

    Parameters
    ----------
    kind : {"ivf", "hnsw"}, keyword-only
        ``"ivf"``: an inverted file of ``nlist`` k-means lists (fast to build, searched in
        ``nprobe`` lists); ``"hnsw"``: a graph of ``M`` links per item (slower to build,
        searched with ``ef_search`` candidates). Both index the item factors lifted onto
        a sphere (one extra coordinate, see :func:`_to_sphere`) and return the plain
        inner products of the factors.
    pool : int, keyword-only
        Candidates retrieved per viewer at first (at least ``N`` is always asked for).
    max_pool : int, keyword-only
        Largest pool tried before a short viewer falls back to the exact path.
    widen : int, keyword-only
        Factor by which a short viewer's pool grows on each retry (at least 2).
    nlist, nprobe : int, optional, keyword-only
        IVF lists (default ``2 * sqrt(n_items)``) and lists searched (default
        ``max(8, nlist // 32)``).
    M, ef_construction, ef_search : int, keyword-only
        HNSW links per item, build and search beam widths (``ef_search`` is raised to
        the pool size when smaller).
    seed : int, keyword-only
        Seed of the k-means training sample.

    Attributes
    ----------
    index_ : faiss.Index
        The built index (after :meth:`build`).
    n_items_, n_factors_ : int
        Shape of the factors it was built on.
    build_seconds_ : float
        Wall time of the last build.
    last_widened_, last_fallbacks_ : int
        Rows of the last call searched again with a wider pool, and rows that took the
        exact path.
    """

    def __init__(
        self,
        *,
        kind: str = "ivf",
        pool: int = 100,
        max_pool: int = 3200,
        widen: int = 4,
        nlist: int | None = None,
        nprobe: int | None = None,
        M: int = 32,
        ef_construction: int = 64,
        ef_search: int = 128,
        seed: int = 0,
    ):
        if kind not in _KINDS:
            raise fail("kind", _WHERE, "one of 'ivf', 'hnsw'", kind)
        self.kind = kind
        self.pool = check_int(pool, "pool", _WHERE)
        self.max_pool = check_int(max_pool, "max_pool", _WHERE, low=self.pool)
        self.widen = check_int(widen, "widen", _WHERE, low=2)
        self.nlist = None if nlist is None else check_int(nlist, "nlist", _WHERE)
        self.nprobe = None if nprobe is None else check_int(nprobe, "nprobe", _WHERE)
        self.M = check_int(M, "M", _WHERE, low=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", _WHERE)
        self.ef_search = check_int(ef_search, "ef_search", _WHERE)
        self.seed = check_int(seed, "seed", _WHERE, low=0)
        self.index_: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ index
    @property
    def built(self) -> bool:
        return self.index_ is not None

    def build(self, item_factors) -> ANNRetrieval:
        """Build the index over ``item_factors`` (shape (n_items, n_factors)); returns self.

        Safe to call again after retraining: the old index is replaced atomically.
        """
        import time

        faiss = _faiss()
        x = check_factors(item_factors, "item_factors", f"{_WHERE}.build")
        n, d = x.shape
        if n == 0:
            raise fail("item_factors", f"{_WHERE}.build", "at least one item", x)
        t0 = time.perf_counter()
        x = _to_sphere(x)
        if self.kind == "ivf":
            nlist = self.nlist or int(max(1, min(n // 39, 2 * np.sqrt(n))))
            nlist = max(1, min(nlist, n))
            quantizer = faiss.IndexFlatIP(d + 1)
            index = faiss.IndexIVFFlat(quantizer, d + 1, nlist, faiss.METRIC_INNER_PRODUCT)
            # k-means on a sample: faiss needs >= 39 points per list, more buys little.
            rng = np.random.default_rng(self.seed)
            m = min(n, 40 * nlist)
            sample = x if m == n else x[np.sort(rng.choice(n, m, replace=False))]
            index.cp.seed = self.seed
            index.train(sample)
            index.add(x)
            index.nprobe = self.nprobe or max(8, nlist // 32)
        else:
            index = faiss.IndexHNSWFlat(d + 1, self.M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.add(x)
        seconds = time.perf_counter() - t0
        with self._lock:
            self.index_ = index
            self.n_items_, self.n_factors_ = n, d
            self.build_seconds_ = seconds
        return self

    def memory_bytes(self) -> int:
        """Size of the serialised index (its vectors, lists or graph)."""
        return int(self._serialized().nbytes)

    def _serialized(self) -> np.ndarray:
        self._check_built("memory_bytes")
        return _faiss().serialize_index(self.index_)

    def save(self, path) -> None:
        """Write the index to ``path`` (faiss's own format)."""
        self._check_built("save")
        _faiss().write_index(self.index_, str(path))

    def load(self, path) -> ANNRetrieval:
        """Read an index written by :meth:`save`; returns self."""
        faiss = _faiss()
        index = faiss.read_index(str(path))
        with self._lock:
            self.index_ = index
            self.n_items_, self.n_factors_ = int(index.ntotal), int(index.d) - 1
        return self

    def __getstate__(self) -> dict:
        # A Guard with a retrieval travels to batch workers: the index goes as bytes.
        state = self.__dict__.copy()
        del state["_lock"]
        if self.index_ is not None:
            state["index_"] = self._serialized()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        if isinstance(self.index_, np.ndarray):
            self.index_ = _faiss().deserialize_index(self.index_)

    def _check_built(self, what: str) -> None:
        if self.index_ is None:
            raise ValidationError(
                f"ANNRetrieval.{what} needs a built index. Got an unbuilt ANNRetrieval "
                "instead (call build(item_factors) first)."
            )

    def matches(self, n_items: int, n_factors: int) -> bool:
        """Whether the index was built on factors of this shape."""
        return self.index_ is not None and (self.n_items_, self.n_factors_) == (n_items, n_factors)

    def check_model(self, n_items: int, n_factors: int, where: str) -> None:
        """Refuse an index built on factors of another shape (another model)."""
        if self.n_items_ != n_items or self.n_factors_ != n_factors:
            raise fail(
                "retrieval",
                where,
                f"an index built on the model's item factors ({n_items} x {n_factors})",
                f"an index over {self.n_items_} x {self.n_factors_}",
                describe=False,
            )

    # ------------------------------------------------------------------ search
    def _params(self, allowed: np.ndarray | None, k: int, scale: int = 1):
        faiss = _faiss()
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.index_.nlist, self.index_.nprobe * scale)
        else:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
        keep = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            sel = faiss.IDSelectorBitmap(allowed.size, faiss.swig_ptr(bits))
            params.sel = sel
            # the selector reads ``bits`` during every search: the caller holds both
            keep = (sel, bits)
        return params, keep

    def _search(self, q: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_items_)
        # The items' extra coordinate meets a query's 0: the distances are the plain
        # float32 inner products of the factors, which pool_topk prunes with.
        qa = np.zeros((q.shape[0], q.shape[1] + 1), dtype=np.float32)
        qa[:, :-1] = q
        dist, labels = self.index_.search(qa, k, params=params)
        return dist, labels

    def topk(
        self,
        space: FactorSpace,
        queries: np.ndarray,
        N: int,
        *,
        hard_mask: np.ndarray | None,
        call_mask: np.ndarray | None = None,
        viewer_masks=(),
        viewer_penalties=(),
        block_rows: int | None = None,
        num_threads: int = 0,
        score_dtype=np.float32,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Guarded top-``N`` per query row; the kernel's arguments, plus the hard mask.

        ``hard_mask`` (bool, shape (n_items,)) is the plan variant's global mask that
        ``space`` was compacted by; it becomes the index's id selector.
        """
        self._check_built("topk")
        m = queries.shape[0]
        ids = np.full((m, N), -1, dtype=np.int64)
        scores = np.full((m, N), -np.inf, dtype=score_dtype)
        if m == 0:
            return ids, scores
        allowed = None
        if hard_mask is not None or (call_mask is not None and np.size(call_mask)):
            allowed = np.ones(self.n_items_, dtype=bool) if hard_mask is None else ~hard_mask
            if call_mask is not None and np.size(call_mask):
                allowed = allowed.copy()
                allowed[call_mask] = False
        raw = np.ascontiguousarray(queries[:, : self.n_factors_], dtype=np.float32)
        todo = np.arange(m)
        k0 = k = max(self.pool, N)
        widened = 0
        while todo.size:
            last = k >= min(self.max_pool, self.n_items_)
            widened += todo.size if k > k0 else 0
            # A wider pool searches proportionally more IVF lists (HNSW: ef >= pool).
            params, keep = self._params(allowed, k, k // k0)
            dist, labels = self._search(raw[todo], k, params)
            del keep
            sub = [v[todo] for v in viewer_masks]
            subp = [v[todo] for v in viewer_penalties]
            got_ids, got_scores = pool_topk(
                space,
                queries[todo],
                labels,
                N,
                pool_scores=dist,
                call_mask=call_mask,
                viewer_masks=sub,
                viewer_penalties=subp,
                score_dtype=score_dtype,
            )
            full = got_ids[:, N - 1] >= 0
            if not last:
                # Widen also a full pool that cannot vouch for its slate: penalties only
                # lower scores, so an item outside the pool (raw score at most the pool's
                # last, were the search exact) could still beat the N-th guarded score.
                bound = np.where(labels[:, -1] >= 0, dist[:, -1], -np.inf)
                full &= got_scores[:, N - 1].astype(np.float64) >= bound
            ids[todo[full]] = got_ids[full]
            scores[todo[full]] = got_scores[full]
            todo = todo[~full]
            if last:
                break
            k = min(k * self.widen, self.max_pool, self.n_items_)
        if todo.size:
            # Fewer than N eligible in the widest pool: the exact path decides, so a
            # slate is short only when the catalogue has fewer than N eligible items.
            e_ids, e_scores = guarded_topk(
                space,
                queries[todo],
                N,
                call_mask=call_mask,
                viewer_masks=[v[todo] for v in viewer_masks],
                viewer_penalties=[v[todo] for v in viewer_penalties],
                block_rows=block_rows,
                num_threads=num_threads,
                score_dtype=score_dtype,
            )
            ids[todo], scores[todo] = e_ids, e_scores
        # Diagnostics of the last call (benchmarks, tests): rows searched again, rows
        # that took the exact path.
        self.last_widened_ = int(widened)
        self.last_fallbacks_ = int(todo.size)
        return ids, scores

    def __repr__(self) -> str:
        state = f"{self.n_items_} x {self.n_factors_}" if self.built else "unbuilt"
        return f"ANNRetrieval(kind={self.kind!r}, pool={self.pool}, {state})"
