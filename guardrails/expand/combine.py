"""Combining risk from several path kinds into one risk per account.

Every source is first *calibrated* by its weight ``lambda_k >= 0`` (how much one unit of
that source's risk is worth, for example 1.0 for the follow graph and 0.5 for embedding
proximity, which is noisier), then the calibrated risks ``min(1, lambda_k r_k)`` are
combined:

- ``'max'`` (default): the largest calibrated risk. One strong path is enough, and the
  result keeps the scale of the sources (a seed of weight ``w`` in a weight-1 source
  still has risk at least ``w``), so one threshold works for all of them.
- ``'noisy_or'``: ``1 - prod_k (1 - min(1, lambda_k r_k))``: independent weak signals add
  up; never below ``'max'``.
- ``'weighted_sum'``: ``sum_k lambda_k r_k / sum_k lambda_k``: an average; an account
  flagged by one source only is diluted, so use it with a lower threshold.

The output is a float32 array in [0, 1], ready for
:class:`guardrails.filters.SuppressRisk` and :class:`guardrails.filters.DemoteRisk`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._validation import check_choice, check_float, fail

__all__ = ["combine_risk", "calibrated"]

METHODS = ("max", "noisy_or", "weighted_sum")


def _as_risk(value, name: str, where: str, source: str = "") -> np.ndarray:
    arr = np.asarray(value)
    what = f"{source}an array of finite floats in [0, 1] of shape (n,) or (n, c)"
    if arr.ndim not in (1, 2) or arr.dtype.kind not in "biuf":
        raise fail(name, where, what, value)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or (arr.size and (arr.min() < 0 or arr.max() > 1)):
        raise fail(name, where, what, "values outside [0, 1] or not finite", describe=False)
    return arr


def calibrated(
    sources: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
    *,
    where: str = "combine_risk",
) -> dict[str, np.ndarray]:
    """Each source times its weight, clipped to [0, 1] (float32), after validation."""
    if not isinstance(sources, Mapping) or not sources:
        raise fail("sources", where, "a non-empty mapping from source name to risk array", sources)
    weights = {} if weights is None else dict(weights)
    unknown = set(weights) - set(sources)
    if unknown:
        raise fail(
            "weights",
            where,
            f"a mapping over the sources {sorted(sources)}",
            f"unknown sources {sorted(unknown)}",
            describe=False,
        )
    out: dict[str, np.ndarray] = {}
    shape = None
    for name, value in sources.items():
        arr = _as_risk(value, "sources", where, f"for source {name!r}, ")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise fail(
                "sources",
                where,
                f"for source {name!r}, an array of shape {shape} like the first source",
                arr,
            )
        lam = check_float(weights.get(name, 1.0), "weights", where, low=0.0)
        out[name] = np.minimum(arr * np.float32(lam), np.float32(1.0))
    return out


def combine_risk(
    sources: Mapping[str, np.ndarray],
    *,
    weights: Mapping[str, float] | None = None,
    method: str = "max",
) -> np.ndarray:
    """One risk per account from several sources (graph, co-engagement, embedding, terms).

    Parameters
    ----------
    sources : mapping of str to ndarray of float in [0, 1], each of shape (n,) or (n, c)
        Risk per source; all of one shape.
    weights : mapping of str to float >= 0, optional
        Calibration weight per source (default 1).
    method : {'max', 'noisy_or', 'weighted_sum'}
        See the module docstring.

    Returns
    -------
    risk : ndarray of float32, same shape as the sources, in [0, 1]
    """
    where = "combine_risk"
    method = check_choice(method, "method", where, METHODS)
    cal = calibrated(sources, weights, where=where)
    stack = np.stack(list(cal.values()))
    if method == "max":
        out = stack.max(axis=0)
    elif method == "noisy_or":
        out = 1.0 - np.prod(1.0 - stack.astype(np.float64), axis=0)
    else:
        lams = np.array(
            [check_float((weights or {}).get(k, 1.0), "weights", where, low=0.0) for k in cal]
        )
        total = lams.sum()
        if total <= 0:
            raise fail("weights", where, "weights with a positive sum for 'weighted_sum'", weights)
        raw = np.stack([_as_risk(sources[k], "sources", where) for k in cal]).astype(np.float64)
        out = np.tensordot(lams, raw, axes=1) / total
    return np.clip(out, 0.0, 1.0).astype(np.float32)
