"""Model adapters: what the Guard needs from a recommender, whatever trained it.

Two kinds of model reach the kernel:

- factor models (implicit's ALS, BPR and LMF on CPU or GPU, and :class:`FactorModel`
  for factors from any other trainer): scores are dot products of user and item
  factors, cosines for ``similar_items`` and ``similar_users``;
- item-item models (implicit's Cosine, TFIDF and BM25 recommenders): scores are the
  viewer's interactions times the item-item similarity matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._validation import check_csr, check_factors, check_float, fail
from .exceptions import UnsupportedModelError

__all__ = ["FactorModel", "ItemItemModel", "adapt_model"]

_MAX_SCORE = 1e30


class FactorModel:
    """Factors from any trainer, for the Guard.

    Parameters
    ----------
    user_factors : array-like of float, shape (n_users, n_factors)
    item_factors : array-like of float, shape (n_items, n_factors)
    regularization : float, keyword-only
        Ridge term used to fold in new users (``recalculate_user=True``): a new user's
        factors solve ``min_u ||r - V_I u||^2 + regularization * ||u||^2`` over the items
        ``I`` they interacted with, weighted by the interaction values.
    recalculate : callable, optional, keyword-only
        ``recalculate(userids, user_items) -> factors`` replacing the ridge fold-in, for
        trainers with their own.
    """

    kind = "factors"

    def __init__(
        self, user_factors, item_factors, *, regularization: float = 0.01, recalculate=None
    ):
        self.item_factors = check_factors(item_factors, "item_factors", "FactorModel")
        self.user_factors = check_factors(
            user_factors, "user_factors", "FactorModel", n_cols=self.item_factors.shape[1]
        )
        self.regularization = check_float(regularization, "regularization", "FactorModel", low=0.0)
        self._recalculate = recalculate
        self._typical: np.ndarray | None = None
        self.source: Any = None
        self._check_range()

    def _check_range(self) -> None:
        # Scores are accumulated in float32: bound them so that no product overflows.
        un = float(np.sqrt((self.user_factors.astype(np.float64) ** 2).sum(1)).max(initial=0.0))
        vn = float(np.sqrt((self.item_factors.astype(np.float64) ** 2).sum(1)).max(initial=0.0))
        if un * vn > _MAX_SCORE:
            raise fail(
                "user_factors",
                "FactorModel",
                f"factors whose largest score (norm product) stays below {_MAX_SCORE:g}",
                f"a norm product of {un * vn:.3g}",
                describe=False,
            )

    @property
    def n_users(self) -> int:
        return int(self.user_factors.shape[0])

    def typical_user(self) -> np.ndarray:
        """The mean of the user factors, shape (n_factors,), float32.

        Its scores rank items by the model's average predicted preference over its users,
        the model's own notion of broadly liked items. The Guard queries with it for a
        viewer whose every interaction a policy left out of the query, where the empty
        query would score every item 0 and rank them by id.
        """
        if self._typical is None:
            u = self.user_factors
            mean = u.astype(np.float64).mean(axis=0) if u.shape[0] else np.zeros(u.shape[1])
            self._typical = mean.astype(np.float32)
        return self._typical

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    @property
    def n_factors(self) -> int:
        return int(self.item_factors.shape[1])

    def recalculate_user(self, userids: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """Factors for users from the interactions passed in the call.

        Parameters
        ----------
        userids : ndarray of int64, shape (m,)
        user_items : csr_matrix, shape (m, n_items)

        Returns
        -------
        ndarray of float32, shape (m, n_factors)
        """
        if self._recalculate is not None:
            out = self._recalculate(userids, user_items)
            return check_factors(out, "recalculate", "FactorModel", n_cols=self.n_factors)
        V = self.item_factors.astype(np.float64)
        k = V.shape[1]
        out = np.zeros((user_items.shape[0], k), dtype=np.float32)
        reg = self.regularization * np.eye(k)
        for r in range(user_items.shape[0]):
            lo, hi = user_items.indptr[r], user_items.indptr[r + 1]
            if lo == hi:
                continue
            Vi = V[user_items.indices[lo:hi]]
            w = user_items.data[lo:hi].astype(np.float64)
            A = Vi.T @ Vi + reg
            b = Vi.T @ w
            out[r] = (
                np.linalg.lstsq(A, b, rcond=None)[0]
                if self.regularization == 0
                else np.linalg.solve(A, b)
            )
        return out


class ItemItemModel:
    """An item-item similarity matrix, for the Guard.

    Parameters
    ----------
    similarity : sparse matrix, shape (n_items, n_items)
        Row ``i`` holds the neighbours of item ``i``; a viewer's scores are their
        interaction row times this matrix.
    """

    kind = "similarity"

    def __init__(self, similarity):
        n = similarity.shape[0] if sp.issparse(similarity) else None
        self.similarity = check_csr(similarity, "similarity", "ItemItemModel", shape=(n, n)).astype(
            np.float64
        )
        self.source: Any = None

    @property
    def n_items(self) -> int:
        return int(self.similarity.shape[0])

    @property
    def n_users(self) -> int:
        return 0


def _implicit_gpu_to_cpu(model: Any) -> Any:
    """GPU models of implicit are converted with ``to_cpu()``; the kernel runs on CPU."""
    module = type(model).__module__
    if module.startswith("implicit.gpu") and hasattr(model, "to_cpu"):
        return model.to_cpu()
    return model


def adapt_model(model: Any) -> FactorModel | ItemItemModel:
    """Wrap an implicit model (or pass through an adapter) for the Guard.

    Raises
    ------
    UnsupportedModelError
        For objects that are neither implicit models nor adapters, and for models that
        have not been fitted.
    """
    if isinstance(model, FactorModel | ItemItemModel):
        return model
    try:
        import implicit.nearest_neighbours as nn
        from implicit.cpu.matrix_factorization_base import MatrixFactorizationBase
    except ImportError as exc:  # pragma: no cover - implicit is a core dependency
        raise UnsupportedModelError("implicit is not importable") from exc
    model = _implicit_gpu_to_cpu(model)
    if isinstance(model, nn.ItemItemRecommender):
        if model.similarity is None:
            raise UnsupportedModelError(
                f"The {type(model).__name__} has no similarity matrix: fit it before guarding it."
            )
        adapter: FactorModel | ItemItemModel = ItemItemModel(model.similarity)
        adapter.source = model
        return adapter
    if isinstance(model, MatrixFactorizationBase):
        if model.item_factors is None or model.user_factors is None:
            raise UnsupportedModelError(
                f"The {type(model).__name__} has no factors: fit it before guarding it."
            )
        recalc = None
        if type(model).recalculate_user is not MatrixFactorizationBase.recalculate_user:

            def recalc(userids, user_items, _model=model):
                return np.asarray(
                    _model.recalculate_user(userids, user_items), dtype=np.float32
                ).reshape(user_items.shape[0], -1)

        # Copies: implicit trains in place (a second ``fit`` updates these very arrays),
        # and a Guard must serve one consistent model until ``swap_model``.
        adapter = FactorModel(
            np.array(model.user_factors, dtype=np.float32, order="C", copy=True),
            np.array(model.item_factors, dtype=np.float32, order="C", copy=True),
            recalculate=recalc,
        )
        adapter._native_recalculate = recalc is not None  # type: ignore[attr-defined]
        adapter.source = model
        return adapter
    raise UnsupportedModelError(
        f"Guard cannot adapt a {type(model).__module__}.{type(model).__name__}: pass an implicit "
        "model (ALS, BPR, LMF, Cosine, TFIDF, BM25), a guardrails.FactorModel or a "
        "guardrails.ItemItemModel."
    )
