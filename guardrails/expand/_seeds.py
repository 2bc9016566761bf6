"""Inputs at the public boundary: seed sets (indices, categories and weights) to one
matrix, and weighted graphs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .._validation import check_csr, check_ids, check_vector, fail

__all__ = ["seed_matrix", "weighted_csr"]


def weighted_csr(matrix, name: str, where: str, shape=(None, None)) -> sp.csr_matrix:
    """``matrix`` checked as a CSR matrix (of ``shape``) with non-negative edge weights."""
    A = check_csr(matrix, name, where, shape=shape)
    if A.nnz and A.data.min() < 0:
        raise fail(
            name,
            where,
            "a matrix with non-negative edge weights",
            "negative weights",
            describe=False,
        )
    return A


def _one(ids, weights, n: int, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    idx, _ = check_ids(ids, name, where, n)
    if idx.size == 0:
        # An empty seed list is almost always a lost signal (an empty export, a failed
        # query): say so rather than return a risk of zero everywhere.
        raise fail(name, where, "a non-empty array of seed ids (one per flagged node)", ids)
    if weights is None:
        w = np.ones(idx.size, dtype=np.float32)
    else:
        w = check_vector(weights, "weights", where, length=idx.size, low=0.0, high=1.0)
    return idx, w


def seed_matrix(seeds, weights, n: int, where: str) -> tuple[np.ndarray, bool, list | None]:
    """Turn the accepted seed forms into a dense weight matrix.

    Accepted forms of ``seeds``:

    - a 1-d array of node indices (one category); ``weights`` a matching 1-d array;
    - a sequence of such arrays (one category each); ``weights`` a matching sequence;
    - a mapping ``{category: indices}``; ``weights`` a mapping with the same keys;
    - a 2-d array or sparse matrix of shape (n, c) holding the weights directly.

    Weights are in [0, 1] (for example severity times confidence); a node listed twice
    in one category keeps its largest weight.

    Returns
    -------
    W : ndarray of float32, shape (n, c)
    squeeze : bool
        True when the input had one category as a 1-d array (results are 1-d).
    names : list or None
        Category names, for mapping input.
    """
    if sp.issparse(seeds) or (isinstance(seeds, np.ndarray) and seeds.ndim == 2):
        if weights is not None:
            raise fail("weights", where, "None when 'seeds' is a weight matrix", weights)
        dense = seeds.toarray() if sp.issparse(seeds) else np.asarray(seeds)
        what = f"a weight matrix of shape ({n}, n_categories) with finite values in [0, 1]"
        if (
            dense.ndim != 2
            or dense.shape[0] != n
            or dense.shape[1] < 1
            or dense.dtype.kind not in "biuf"
        ):
            raise fail("seeds", where, what, seeds)
        W = np.ascontiguousarray(dense, dtype=np.float32)
        if not np.isfinite(W).all() or (W.size and (W.min() < 0 or W.max() > 1)):
            raise fail("seeds", where, what, "values outside [0, 1] or not finite", describe=False)
        return W, False, None
    names = None
    if isinstance(seeds, Mapping):
        names = list(seeds)
        if weights is not None and (not isinstance(weights, Mapping) or set(weights) != set(names)):
            raise fail("weights", where, "None or a mapping with the same keys as 'seeds'", weights)
        groups = [seeds[k] for k in names]
        wgroups = [None if weights is None else weights[k] for k in names]
        squeeze = False
    elif _is_group_list(seeds):
        groups = list(seeds)
        if weights is not None and (not _is_group_list(weights) or len(weights) != len(groups)):
            raise fail(
                "weights", where, f"None or a sequence of {len(groups)} weight arrays", weights
            )
        wgroups = [None] * len(groups) if weights is None else list(weights)
        squeeze = False
    else:
        groups, wgroups, squeeze = [seeds], [weights], True
    if not groups:
        raise fail("seeds", where, "at least one seed category", seeds)
    W = np.zeros((n, len(groups)), dtype=np.float32)
    for c, (ids, w) in enumerate(zip(groups, wgroups, strict=True)):
        idx, wv = _one(ids, w, n, "seeds", where)
        np.maximum.at(W[:, c], idx, wv)
    return W, squeeze, names


def _is_group_list(value) -> bool:
    if isinstance(value, np.ndarray) or not isinstance(value, Sequence) or isinstance(value, str):
        return False
    return len(value) > 0 and all(
        isinstance(v, np.ndarray | Sequence) and not isinstance(v, str) for v in value
    )
