"""Guarded approximate-nearest-neighbour retrieval for very large catalogues.

An exact product over every item per viewer stops scaling somewhere past a few million
items. :class:`ANNRetrieval` keeps the Guard's contract on approximate candidates:

0. at build, the items are split by the norm of their factors: the *head* (the
   ``2 * sqrt(n_items)`` largest norms by default, as many items as the index has
   lists) is scored exactly for every viewer, by the guarded kernel on a small space;
   only the *tail* is indexed. Large inner products concentrate on large norms, which
   direction-partitioned lists miss most (measured: every exact-slate item an IVF pool
   of 100 missed at 1M items had one of the 5,000 largest norms);
1. a faiss index over the tail returns a pool of ``pool`` candidates per viewer by inner
   product, with the policy's global hard mask (and the call's ``filter_items``)
   applied *inside* the search by an id selector, so suppressed items never take pool
   slots;
2. the pool goes through the exact guarded kernel (:func:`guardrails.core.kernel.pool_topk`):
   exact scores, the policy's penalties, per-viewer masks and penalties, nothing in the
   pool trusted; the head's and the pool's slates merge by exact score, then item id
   (the kernel's order). Where the optional C step was built, the pool's masks, pruning
   and exact rescoring run in it, the viewers split over the worker threads, and the
   head is selected by it as one tile (numpy otherwise: the same results);
3. a viewer whose merged slate has fewer than ``N`` items, or whose ``N``-th score is
   below the index's score of its ``pool``-th candidate (an item left out could still
   beat it), is searched again with a pool ``widen`` times larger (and as many times
   more lists), up to ``max_pool``;
4. a viewer still short then takes the exact path over the whole catalogue.

What is guaranteed, exactly:

- no suppressed id is ever returned (masks are applied by the exact kernel to every
  candidate, whatever the index returned), and a slate has exactly ``N`` items whenever
  ``N`` eligible items exist (widening, then the exact path);
- a batch returns what single calls return: each row's pool, widening and fallback
  depend on its own query and masks only (faiss searches each query on its own; the
  tests compare batches with single calls for every kind);
- each slate is the exact guarded top ``N`` of the head and the row's pool, scored
  exactly; it equals the exact Guard's slate whenever the pool holds every tail item
  of that slate. Only this is approximate: an index can leave out a tail item that
  would have ranked (recall against the exact guarded slates is measured by
  ``benchmarks/bench_ann.py``). The widening test of step 3 compares exact scores with
  the index's score of its last candidate: an exact float32 inner product for
  ``"ivf"``, the 4-bit codes' estimate for ``"ivfpq"`` (there the candidates are
  rescored exactly before the kernel prunes them, so the kernel's bound on the pool
  stays sound); it widens where a left-out item could win *were the search over the
  probed lists exact*, which no IVF or graph index is over the lists it did not probe.

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
import weakref
from typing import Any

import numpy as np

from ._validation import check_factors, check_int, fail
from .core._exact import compiled_step
from .core.kernel import FactorSpace, guarded_topk, pool_topk
from .exceptions import ValidationError, missing_extra

__all__ = ["ANNRetrieval"]

_WHERE = "ANNRetrieval"
_KINDS = ("ivf", "ivfpq", "hnsw")
# Smaller tails take flat lists (16 centroids per 4-bit code want >= 624 to train).
_PQ_MIN_TAIL = 1000
# Lists searched per viewer by default (see ``nprobe``).
_NPROBE = 8


def _default_head(n: int) -> int:
    """Default head size: ``2 * sqrt(n)``, the default number of IVF lists.

    Chosen on the benchmark's seed 1 (``bench_ann.py``): at 1M items a head of 2,000
    kept recall@10 at 0.997 (5,000, the former ``n // 200``: 0.999) for less head
    time; at 10M a head of 6,324 gave 0.985 instead of scoring 50,000 items per viewer.
    """
    return int(2.0 * np.sqrt(n))


def _norms(x: np.ndarray) -> np.ndarray:
    """float64 Euclidean norms of the rows, a slice at a time (no float64 copy of ``x``)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for lo in range(0, x.shape[0], 1 << 16):
        part = x[lo : lo + (1 << 16)].astype(np.float64)
        out[lo : lo + part.shape[0]] = np.sqrt(np.einsum("ij,ij->i", part, part))
    return out


def _to_sphere(x: np.ndarray, rows: np.ndarray, norms: np.ndarray, width: int) -> np.ndarray:
    """Items ``rows`` with one more coordinate, ``sqrt(M^2 - |x|^2)``: every row then has
    norm ``M`` (their largest norm); zero columns pad it to ``width``.

    Inner products with a query padded by 0 are unchanged, but the largest inner product
    becomes the nearest neighbour on a sphere, which k-means lists and graph links
    capture; on raw factors a high-norm item far from a viewer's cluster is missed by the
    lists near the viewer (the MIPS-to-NNS reduction of Bachrach et al., RecSys 2014).
    """
    d = x.shape[1]
    sq = norms[rows] ** 2
    out = np.zeros((rows.size, width), dtype=np.float32)
    for lo in range(0, rows.size, 1 << 16):
        out[lo : lo + (1 << 16), :d] = x[rows[lo : lo + (1 << 16)]]
    out[:, d] = np.sqrt(np.maximum(sq.max() - sq, 0.0)) if rows.size else 0.0
    return out


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - exercised without the extra
        raise missing_extra("faiss", "ann", "ANNRetrieval") from e
    return faiss


def _inner_products_by_id(raw: np.ndarray, items: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float32 ``raw[i] . items[ids[i, j]]`` (``-inf`` where ``ids`` is negative).

    faiss's ``fvec_inner_products_by_idx`` reads each item row in place (no gathered
    ``(m, k, d)`` copy; about 5x faster than numpy's gather and einsum at 1M items).
    ``items`` is the variant space's factor matrix: C-contiguous float32 already.
    """
    faiss = _faiss()
    m, k = ids.shape
    d = raw.shape[1]
    out = np.empty((m, k), dtype=np.float32)
    if not out.size:
        return out
    q = np.ascontiguousarray(raw, dtype=np.float32)
    y = np.ascontiguousarray(items, dtype=np.float32)
    lab = np.ascontiguousarray(ids, dtype=np.int64)
    if y.shape[1] != d or (lab >= y.shape[0]).any():
        raise fail("ids", f"{_WHERE}._search", f"item indices below {y.shape[0]}", lab.max())
    faiss.fvec_inner_products_by_idx(
        faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(y), faiss.swig_ptr(lab), d, m, k
    )
    return out


# The head's product is selected as one tile up to this many (padded) items: the default
# head (2 sqrt(n)) is 2,000 items at 1M and 6,324 at 10M; a larger, user-set head keeps
# the kernel's own tiling, whose memory per worker is bounded.
_HEAD_TILE_MAX = 8192


def _head_tile(head: FactorSpace) -> int | None:
    """The head call's ``tile_items``: one compiled tile for a small head, else the default."""
    n_pad = head.width * head.n_blocks
    return n_pad if compiled_step() is not None and n_pad <= _HEAD_TILE_MAX else None


def _merge(a_ids, a_scores, b_ids, b_scores, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top ``N`` of two disjoint slates, by score then item id (the kernel's order).

    In the compiled step where it was built (one pass per row); in numpy otherwise, with
    the same results (``tests/test_retrieval.py`` compares them).
    """
    compiled = compiled_step()
    if compiled is not None:
        width = min(N, a_ids.shape[1] + b_ids.shape[1])
        ids = np.empty((a_ids.shape[0], width), dtype=np.int64)
        scores = np.empty((a_ids.shape[0], width), dtype=np.float64)
        compiled.merge_slates(
            np.ascontiguousarray(a_ids, dtype=np.int64),
            np.ascontiguousarray(a_scores, dtype=np.float64),
            np.ascontiguousarray(b_ids, dtype=np.int64),
            np.ascontiguousarray(b_scores, dtype=np.float64),
            ids,
            scores,
        )
        return ids, scores
    return _merge_numpy(a_ids, a_scores, b_ids, b_scores, N)


def _merge_numpy(a_ids, a_scores, b_ids, b_scores, N: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_merge` in numpy."""
    ids = np.concatenate([a_ids, b_ids], axis=1)
    scores = np.concatenate([a_scores, b_scores], axis=1).astype(np.float64)
    real = ids >= 0
    scores = np.where(real, scores, -np.inf)
    key = np.where(real, ids, np.iinfo(np.int64).max)
    order = np.lexsort((key, -scores))[:, :N]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


class ANNRetrieval:
    """Candidate pools from a faiss index, under the Guard's contract.

    The items are split once, at :meth:`build`, by the norm of their factors: the
    ``head`` items of largest norm are scored exactly for every viewer (the guarded
    kernel on a small space), and only the rest, the *tail*, is indexed. Largest inner
    products concentrate on large norms (popular items), which an index partitioned
    by direction misses most often; scoring them exactly costs little and lets the
    index search few lists.

    Parameters
    ----------
    kind : {"ivf", "ivfpq", "hnsw"}, keyword-only
        ``"ivf"``: an inverted file of ``nlist`` k-means lists holding the tail's
        factors (fast to build, searched in ``nprobe`` lists, exact float32 inner
        products); ``"ivfpq"``: the same lists holding 4-bit product-quantised codes
        searched with SIMD fast scan (faiss ``IndexIVFPQFastScan``, two dimensions per
        code, about 8x smaller than the factors), the pool then rescored exactly;
        ``"hnsw"``: a graph of ``M`` links per item (slower to build, searched with
        ``ef_search`` candidates). All index the tail lifted onto a sphere (one extra
        coordinate, see :func:`_to_sphere`).
    pool : int, keyword-only
        Tail candidates retrieved per viewer at first (at least ``N``).
    max_pool : int, keyword-only
        Largest pool tried before a short viewer falls back to the exact path.
    widen : int, keyword-only
        Factor by which a short viewer's pool grows on each retry (at least 2).
    head : int, optional, keyword-only
        Items of largest norm scored exactly (default ``2 * sqrt(n_items)``, the
        default number of lists: 2,000 at 1M items, 6,324 at 10M; 0: none). The head
        is scored by the exact kernel for every viewer, so it grows with the lists
        rather than with the catalogue.
    nlist, nprobe : int, optional, keyword-only
        IVF lists (default ``min(n_tail // 39, 2 * sqrt(n_tail))``) and lists searched
        (default 8, at most ``nlist``: with the head scored exactly, recall stopped
        growing beyond 8 lists at 1M and 10M items; what is still missed is in the
        norms, not in unprobed lists).
    M, ef_construction, ef_search : int, keyword-only
        HNSW links per item, build and search beam widths (``ef_search`` is raised to
        the pool size when smaller).
    seed : int, keyword-only
        Seed of the k-means training sample.

    Attributes
    ----------
    index_ : faiss.Index or None
        The tail's index (after :meth:`build`; None when the head holds every item).
    head_ids_, tail_ids_ : ndarray of int64
        The items scored exactly and the indexed ones (sorted; index label ``j`` is
        item ``tail_ids_[j]``).
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
        kind: str = "ivfpq",
        pool: int = 100,
        max_pool: int = 3200,
        widen: int = 4,
        head: int | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        M: int = 32,
        ef_construction: int = 64,
        ef_search: int = 128,
        seed: int = 0,
    ):
        if kind not in _KINDS:
            raise fail("kind", _WHERE, "one of 'ivf', 'ivfpq', 'hnsw'", kind)
        self.kind = kind
        self.pool = check_int(pool, "pool", _WHERE)
        self.max_pool = check_int(max_pool, "max_pool", _WHERE, low=self.pool)
        self.widen = check_int(widen, "widen", _WHERE, low=2)
        self.head = None if head is None else check_int(head, "head", _WHERE, low=0)
        self.nlist = None if nlist is None else check_int(nlist, "nlist", _WHERE)
        self.nprobe = None if nprobe is None else check_int(nprobe, "nprobe", _WHERE)
        self.M = check_int(M, "M", _WHERE, low=2)
        self.ef_construction = check_int(ef_construction, "ef_construction", _WHERE)
        self.ef_search = check_int(ef_search, "ef_search", _WHERE)
        self.seed = check_int(seed, "seed", _WHERE, low=0)
        self.index_: Any = None
        self.n_items_: int | None = None
        self._lock = threading.Lock()
        self._heads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._bits: dict[int, tuple[Any, np.ndarray]] = {}

    # ------------------------------------------------------------------ index
    @property
    def built(self) -> bool:
        return self.n_items_ is not None

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
        norms = _norms(x)
        n_head = min(n, _default_head(n) if self.head is None else self.head)
        # Stable: equal norms keep the item order, so the split is deterministic.
        order = np.argsort(-norms, kind="stable")
        head = np.sort(order[:n_head]).astype(np.int64)
        tail = np.sort(order[n_head:]).astype(np.int64)
        index = None
        if tail.size:
            index = self._build_tail(faiss, x, tail, norms)
        seconds = time.perf_counter() - t0
        with self._lock:
            self.index_ = index
            self.head_ids_, self.tail_ids_ = head, tail
            self.n_items_, self.n_factors_ = n, d
            self.build_seconds_ = seconds
            self._heads = weakref.WeakKeyDictionary()
            self._bits = {}
        return self

    def _build_tail(self, faiss, x, tail, norms):
        n, d = tail.size, x.shape[1]
        pq = self.kind == "ivfpq" and n >= _PQ_MIN_TAIL
        # PQ codes of two dimensions each: the lifted factors padded to an even width.
        width = d + 1 + ((d + 1) % 2 if pq else 0)
        lifted = _to_sphere(x, tail, norms, width)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(width, self.M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.add(lifted)
            return index
        nlist = self.nlist or int(max(1, min(n // 39, 2 * np.sqrt(n))))
        nlist = max(1, min(nlist, n))
        quantizer = faiss.IndexFlatIP(width)
        if pq:
            index = faiss.IndexIVFPQFastScan(
                quantizer, width, nlist, width // 2, 4, faiss.METRIC_INNER_PRODUCT
            )
        else:
            index = faiss.IndexIVFFlat(quantizer, width, nlist, faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: faiss needs >= 39 points per list, more buys little.
        rng = np.random.default_rng(self.seed)
        m = min(n, 40 * nlist)
        sample = lifted if m == n else lifted[np.sort(rng.choice(n, m, replace=False))]
        index.cp.seed = self.seed
        index.train(sample)
        index.add(lifted)
        index.nprobe = min(nlist, self.nprobe or _NPROBE)
        return index

    def memory_bytes(self) -> int:
        """Size of the serialised index (its codes, lists or graph) and item split."""
        self._check_built("memory_bytes")
        ids = self.head_ids_.nbytes + self.tail_ids_.nbytes
        return ids + (0 if self.index_ is None else int(self._serialized().nbytes))

    def _serialized(self) -> np.ndarray:
        return _faiss().serialize_index(self.index_)

    def save(self, path) -> None:
        """Write the index and the item split to ``path`` (an ``.npz`` archive)."""
        self._check_built("save")
        index = np.zeros(0, np.uint8) if self.index_ is None else self._serialized()
        with open(path, "wb") as f:
            np.savez(
                f,
                version=np.array(1),
                kind=np.array(self.kind),
                shape=np.array([self.n_items_, self.n_factors_], dtype=np.int64),
                head=self.head_ids_,
                tail=self.tail_ids_,
                index=index,
            )

    def load(self, path) -> ANNRetrieval:
        """Read what :meth:`save` wrote; returns self. A bare faiss index written by
        ``faiss.write_index`` (over every item, lifted) loads too, with no head."""
        faiss = _faiss()
        with open(path, "rb") as f:
            zipped = f.read(2) == b"PK"
        if zipped:
            with np.load(path, allow_pickle=False) as z:
                kind = str(z["kind"])
                n, d = (int(v) for v in z["shape"])
                head, tail = z["head"].astype(np.int64), z["tail"].astype(np.int64)
                raw = z["index"]
            index = faiss.deserialize_index(raw) if raw.size else None
        else:
            index = faiss.read_index(str(path))
            kind = "ivf" if hasattr(index, "nprobe") else "hnsw"
            n, d = int(index.ntotal), int(index.d) - 1
            head, tail = np.zeros(0, np.int64), np.arange(n, dtype=np.int64)
        if kind not in _KINDS or head.size + tail.size != n:
            raise fail("path", f"{_WHERE}.load", "an index written by ANNRetrieval.save", path)
        with self._lock:
            self.kind = kind
            self.index_ = index
            self.head_ids_, self.tail_ids_ = head, tail
            self.n_items_, self.n_factors_ = n, d
            self._heads = weakref.WeakKeyDictionary()
            self._bits = {}
        return self

    def __getstate__(self) -> dict:
        # A Guard with a retrieval travels to batch workers: the index goes as bytes.
        state = self.__dict__.copy()
        del state["_lock"], state["_heads"], state["_bits"]
        if self.index_ is not None:
            state["index_"] = self._serialized()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._heads = weakref.WeakKeyDictionary()
        self._bits = {}
        if isinstance(self.index_, np.ndarray):
            self.index_ = _faiss().deserialize_index(self.index_)

    def _check_built(self, what: str) -> None:
        if not self.built:
            raise ValidationError(
                f"ANNRetrieval.{what} needs a built index. Got an unbuilt ANNRetrieval "
                "instead (call build(item_factors) first)."
            )

    def matches(self, n_items: int, n_factors: int) -> bool:
        """Whether the index was built on factors of this shape."""
        return self.built and (self.n_items_, self.n_factors_) == (n_items, n_factors)

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
    def _head_space(self, space: FactorSpace) -> FactorSpace | None:
        """The head items of ``space`` (same factors, same folded penalty), built once."""
        if not self.head_ids_.size:
            return None
        with self._lock:
            head = self._heads.get(space)
        if head is None:
            n = space.pos.shape[0]
            keep = np.zeros(n, dtype=bool)
            keep[self.head_ids_] = True
            keep &= space.pos >= 0
            pen = None
            if space.neg_penalty is not None:
                # -(-p) is p exactly: the same float64 exact scores as ``space``'s.
                pen = np.zeros(n, dtype=np.float32)
                pen[space.ids] = -space.neg_penalty
            head = FactorSpace.build(space.item_rows, hard_mask=~keep, penalty=pen)
            with self._lock:
                self._heads[space] = head
        return head

    def _tail_bits(self, hard_mask, call_mask) -> np.ndarray | None:
        """The selector's bitmap over the tail's labels: the items neither mask holds.

        Without a call mask it depends on the variant's hard mask only (an array the
        compiled policy keeps), and is kept for the next calls with that same array
        object: at 10M items, building it costs about 9 ms per call.
        """
        has_call = call_mask is not None and bool(np.size(call_mask))
        if hard_mask is None and not has_call:
            return None
        if not has_call:
            with self._lock:
                hit = self._bits.get(id(hard_mask))
            if hit is not None and hit[0]() is hard_mask:
                return hit[1]
        allowed: np.ndarray = (
            np.ones(int(self.n_items_ or 0), dtype=bool) if hard_mask is None else ~hard_mask
        )
        if has_call:
            allowed[call_mask] = False
        bits = np.packbits(allowed[self.tail_ids_], bitorder="little")
        if not has_call:
            with self._lock:
                self._bits = {k: v for k, v in self._bits.items() if v[0]() is not None}
                self._bits[id(hard_mask)] = (weakref.ref(hard_mask), bits)
        return bits

    def _params(self, allowed_bits, n_tail: int, k: int, scale: int = 1):
        faiss = _faiss()
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.index_.nlist, self.index_.nprobe * scale)
        keep = None
        if allowed_bits is not None:
            sel = faiss.IDSelectorBitmap(n_tail, faiss.swig_ptr(allowed_bits))
            params.sel = sel
            # the selector reads the bits during every search: the caller holds both
            keep = (sel, allowed_bits)
        return params, keep

    def _search(self, raw: np.ndarray, k: int, params, items: np.ndarray):
        """Tail pool of ``k`` per row: global ids, float32 raw inner products, the bound.

        The bound is the index's score of its ``k``-th candidate (``-inf`` when it
        returned fewer), which an item left out would not beat were the search exact.
        """
        k = min(k, self.tail_ids_.size)
        qa = np.zeros((raw.shape[0], self.index_.d), dtype=np.float32)
        qa[:, : raw.shape[1]] = raw
        dist, labels = self.index_.search(qa, k, params=params)
        found = labels >= 0
        ids = np.where(found, self.tail_ids_[np.where(found, labels, 0)], -1)
        bound = np.where(found[:, -1], dist[:, -1], -np.inf)
        if self.kind == "ivfpq":
            # Codes give approximate scores: the pool's float32 inner products, exactly
            # what pool_topk prunes with (any summation order).
            dist = _inner_products_by_id(raw, items, ids)
        return ids, np.where(found, dist, -np.inf).astype(np.float32), bound

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
        self.last_widened_ = self.last_fallbacks_ = 0
        if m == 0:
            return ids, scores
        kernel: dict[str, Any] = dict(
            call_mask=call_mask, block_rows=block_rows, num_threads=num_threads
        )
        head = self._head_space(space)
        h_ids = h_scores = None
        if head is not None:
            # The head, exactly: the guarded kernel on the head items alone, selected
            # by the compiled step as one tile where it was built (a few thousand items:
            # 2x faster at 1M items than the unfused numpy selection; same results).
            h_ids, h_scores = guarded_topk(
                head,
                queries,
                N,
                viewer_masks=list(viewer_masks),
                viewer_penalties=list(viewer_penalties),
                score_dtype=np.float64,
                tile_items=_head_tile(head),
                **kernel,
            )
        if self.index_ is None:
            # Every item is in the head: its slates are the exact ones.
            assert h_ids is not None and h_scores is not None
            return h_ids, h_scores.astype(score_dtype)
        bits = self._tail_bits(hard_mask, call_mask)
        raw = np.ascontiguousarray(queries[:, : self.n_factors_], dtype=np.float32)
        n_tail = int(self.tail_ids_.size)
        todo = np.arange(m)
        k0 = k = max(self.pool, N)
        widened = 0
        while todo.size:
            last = k >= min(self.max_pool, n_tail)
            widened += todo.size if k > k0 else 0
            # A wider pool searches proportionally more IVF lists (HNSW: ef >= pool).
            params, keep = self._params(bits, n_tail, k, k // k0)
            labels, dist, bound = self._search(raw[todo], k, params, space.item_rows)
            del keep
            got_ids, got_scores = pool_topk(
                space,
                queries[todo],
                labels,
                N,
                pool_scores=dist,
                call_mask=call_mask,
                viewer_masks=[v[todo] for v in viewer_masks],
                viewer_penalties=[v[todo] for v in viewer_penalties],
                score_dtype=np.float64,
                unique=True,  # an index never repeats an item in a result row
                num_threads=num_threads,
            )
            if h_ids is not None and h_scores is not None:
                got_ids, got_scores = _merge(h_ids[todo], h_scores[todo], got_ids, got_scores, N)
            full = got_ids[:, N - 1] >= 0
            if not last:
                # Widen also a full slate that the pool cannot vouch for: penalties only
                # lower scores, so a tail item outside the pool (raw score at most the
                # pool's last, were the search exact) could still beat the N-th score.
                full &= got_scores[:, N - 1] >= bound
            ids[todo[full]] = got_ids[full]
            scores[todo[full]] = got_scores[full]
            todo = todo[~full]
            if last:
                break
            k = min(k * self.widen, self.max_pool, n_tail)
        if todo.size:
            # Fewer than N eligible in the widest pool: the exact path decides, so a
            # slate is short only when the catalogue has fewer than N eligible items.
            e_ids, e_scores = guarded_topk(
                space,
                queries[todo],
                N,
                viewer_masks=[v[todo] for v in viewer_masks],
                viewer_penalties=[v[todo] for v in viewer_penalties],
                score_dtype=score_dtype,
                **kernel,
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
