"""The recommender and the guard configurations the audit compares.

- :func:`train_model`: implicit's ALS on the platform's follow graph (users are followers,
  items are followed accounts; one id space).
- :func:`seed_risk`: a small personalised PageRank from the known seeds only, for the
  primitive-filter configuration and the sweep.
- :func:`primitive_policy`: ``BlockItems`` on the known seeds, ``SuppressRisk`` and
  ``DemoteRisk`` on :func:`seed_risk`.
- :func:`default_guard_policy`: :func:`guardrails.default_policy` built from what the
  platform itself knows (no ground truth): the known seeds, its follow graph, the hashtags
  accounts use and the flagged ones, and its age signals (minors' accounts), when the
  library provides it.

Only the public API is used: ``guardrails.Guard``, ``guardrails.filters``,
``guardrails.default_policy`` and ``guardrails.load_policy``.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

import guardrails as gr

from .._validation import check_float, check_int, fail
from ..exceptions import ConvergenceWarning, MissingDependencyError
from ..expand import propagate
from .platform import Platform

__all__ = [
    "train_model",
    "seed_risk",
    "primitive_policy",
    "default_policy_available",
    "default_guard_policy",
    "audit_guard",
    "with_ban_history",
    "policy_file_guard_policy",
]


def train_model(
    platform: Platform,
    *,
    factors: int = 64,
    iterations: int = 15,
    regularization: float = 0.05,
    alpha: float = 2.0,
    num_threads: int = 2,
    seed: int = 0,
):
    """Fit implicit's ALS on ``platform.train`` with bounded threads.

    Parameters
    ----------
    platform : Platform
    factors, iterations, regularization, alpha : keyword-only
        ALS hyperparameters.
    num_threads : int, keyword-only
        ALS threads (BLAS is pinned to one thread, as implicit recommends).
    seed : int, keyword-only

    Returns
    -------
    implicit.cpu.als.AlternatingLeastSquares
        Fitted; ``n_users == n_items == platform.n_accounts``.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    kw = als_params("train_model", factors, iterations, regularization, alpha, num_threads)
    # implicit checks the BLAS thread pool when the model is built: build it inside the limit.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(random_state=seed, **kw)
        model.fit(platform.train, show_progress=False)
    return model


def als_params(where: str, factors, iterations, regularization, alpha, num_threads) -> dict:
    """ALS hyperparameters checked for ``where``, as :func:`train_model` passes them to
    implicit."""
    return {
        "factors": check_int(factors, "factors", where),
        "iterations": check_int(iterations, "iterations", where),
        "regularization": check_float(regularization, "regularization", where, low=0.0),
        "alpha": check_float(alpha, "alpha", where, low=0.0, low_open=True),
        "num_threads": check_int(num_threads, "num_threads", where, low=0),
    }


def seed_risk(
    graph: sp.spmatrix, seeds: np.ndarray, *, damping: float = 0.5, n_iter: int = 30
) -> np.ndarray:
    """Risk in [0, 1] of every account from flagged seeds (walk-from-node personalised PageRank).

    ``risk[i]`` is the discounted probability that a random walk from ``i`` over the
    undirected follow graph reaches a seed: 1 on seeds, ``damping`` times the mean risk of
    the neighbours elsewhere. High-degree accounts (celebrities) dilute their risk over
    many neighbours, so camouflage follows do not make them risky.

    Parameters
    ----------
    graph : sparse matrix, shape (n, n)
    seeds : ndarray of int64
    damping : float, keyword-only
        In (0, 1): the weight of each further hop.
    n_iter : int, keyword-only
        Most iterations of the solver (:func:`guardrails.expand.propagate`, which this
        calls on the graph with walks stopping at the seeds).

    Returns
    -------
    ndarray of float32, shape (n,)
    """
    where = "seed_risk"
    damping = check_float(damping, "damping", where, low=0.0, high=1.0, low_open=True)
    if damping >= 1.0:
        raise fail("damping", where, "a float in (0.0, 1.0)", damping)
    n_iter = check_int(n_iter, "n_iter", where)
    n = graph.shape[0]
    a = sp.csr_matrix(graph, dtype=np.float32)
    a = ((a + a.T) > 0).astype(np.float32)
    is_seed = np.zeros(n, dtype=bool)
    is_seed[np.asarray(seeds, dtype=np.int64)] = True
    # Walks stop at the seeds (their rows are removed): guardrails.expand.propagate then
    # solves exactly ``r = 1`` on seeds and ``r = damping * mean(r of the neighbours)``
    # elsewhere, the same fixed point the n_iter sweeps of this function always
    # approximated (to 1e-7 on the audit platforms).
    walk = (sp.diags((~is_seed).astype(np.float32)) @ a).tocsr()
    walk.eliminate_zeros()
    if not is_seed.any():
        return np.zeros(n, dtype=np.float32)
    with warnings.catch_warnings():
        # n_iter caps the solver as it capped the sweeps; stopping early is expected.
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = propagate(
            walk,
            np.flatnonzero(is_seed),
            direction="out",
            damping=damping,
            # The audit's thresholds are read on personalised PageRank's scale; auto
            # (the public default) may rank by another scorer.
            method="ppr",
            tol=1e-6,
            max_iter=max(n_iter, 1),
        )
    return np.clip(r, 0.0, 1.0).astype(np.float32)


def primitive_policy(
    platform: Platform, risk: np.ndarray, *, threshold: float = 0.02, weight: float = 4.0
):
    """Block the known seeds, suppress ``risk >= threshold``, demote the rest by ``weight * risk``.

    Returns
    -------
    guardrails.Policy
    """
    f = gr.filters
    filters = [f.BlockItems(platform.known_seeds, reason="known_seed")]
    filters.append(f.SuppressRisk(risk, threshold=threshold))
    if weight > 0:
        filters.append(f.DemoteRisk(risk, weight=weight))
    return gr.Policy(filters, name=f"primitive(t={threshold:g},w={weight:g})")


def _library_function(name: str, *, required: bool = True):
    """``guardrails.<name>`` where this version of the library provides it; otherwise a
    MissingDependencyError (``required``) or None."""
    fn = getattr(gr, name, None)
    if fn is None and required:
        raise MissingDependencyError(
            f"guardrails.{name} is not available in this version of recsys-guardrails."
        )
    return fn


def default_policy_available() -> bool:
    """Whether this version of the library provides ``default_policy``."""
    return _library_function("default_policy", required=False) is not None


def default_guard_policy(platform: Platform, **knobs):
    """:func:`guardrails.default_policy` from what the platform knows (no ground truth).

    Signals: the known seeds, the training follow graph (also the interactions), the
    account x hashtag matrix with the flagged hashtags, and the minors' accounts (the
    platform's age signals; users and accounts share one id space, so the same mask gives
    the minor viewers). Roles, the network and re-created accounts are never passed, nor
    a family platform's ``banned_follows`` (the banned seeds' follows at the ban: pass
    ``seed_history=platform.banned_follows`` in ``knobs``, or ``graph=``
    :func:`with_ban_history`, to measure them).

    Parameters
    ----------
    platform : Platform
    **knobs
        Passed to ``default_policy`` (for example ``strictness="balanced"``).

    Returns
    -------
    guardrails.Policy

    Raises
    ------
    MissingDependencyError
        When this version of the library has no ``default_policy``.
    """
    fn = _library_function("default_policy")
    own = getattr(platform, "policy_signals", None)  # own data (audit.data.DataPlatform)
    if own is not None:
        return fn(**{**own(), **knobs})
    signals = {
        "seeds": platform.known_seeds,
        "graph": platform.train,
        "interactions": platform.train,
        # What a platform has besides labels: the hashtags its accounts use and the ones
        # trust and safety flagged, and its own age signals (minors' accounts; users and
        # accounts share one id space, so they are also the minor viewers).
        "account_terms": platform.hashtags,
        "seed_terms": platform.flagged_tags,
        "minors": platform.vulnerable,
        "minor_viewers": platform.vulnerable,
    }
    signals.update(knobs)
    return fn(**signals)


def audit_guard(model, policy, platform: Platform, **kwargs) -> gr.Guard:
    """A Guard as the audits build it: for a factor model (one with ``item_factors``)
    the platform's training followers are its ``backfill``, which ranks the rows a
    policy leaves with no query of their own (and nothing else); an item-item model gets
    none, so its slates stay implicit's reachable items. ``kwargs`` go to the Guard."""
    fill = None
    if getattr(model, "item_factors", None) is not None:
        fill = np.asarray(platform.train.sum(axis=0)).ravel().astype(np.float64)
    return gr.Guard(model, policy, backfill=fill, **kwargs)


def with_ban_history(platform: Platform) -> sp.csr_matrix:
    """The platform's training follow graph plus the banned seeds' follows at the ban
    (``banned_follows`` of a family platform, what trust and safety keeps of a banned
    account), binary; the training graph alone where the platform keeps none. Pass it as
    ``graph=`` to :func:`default_guard_policy` (the model's interactions stay as they
    are)."""
    banned = getattr(platform, "banned_follows", None)
    if banned is None:
        return platform.train
    graph = sp.csr_matrix(platform.train + banned)
    graph.data[:] = 1.0
    return graph


def policy_file_guard_policy(path, platform: Platform, risk: np.ndarray):
    """A policy read from a TOML file with :func:`guardrails.load_policy`.

    Arrays the file may reference by name: ``known_seeds`` (int64), ``risk``
    (:func:`seed_risk`, float32), ``minors`` (bool; the minors' accounts), ``graph``
    (the training follow graph, CSR) and ``flagged_tags`` (int64).
    """
    fn = _library_function("load_policy")
    own = getattr(platform, "policy_data", None)  # own data (audit.data.DataPlatform)
    if own is not None:
        return fn(path, data=own(risk))
    data = {
        "known_seeds": platform.known_seeds,
        "risk": risk,
        "minors": platform.vulnerable,
        "graph": platform.train,
        "flagged_tags": platform.flagged_tags,
    }
    return fn(path, data=data)
