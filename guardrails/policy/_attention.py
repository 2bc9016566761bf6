"""Attention to unrelated minors: a seed-free sign of a network around minors' accounts.

An adult who follows several minors' accounts with none of whom he shares a contact (the
tie of :class:`~guardrails.filters.RequireTie`: a non-hub account the minor follows) is
*untied attention*. One such adult means little (a relative, a noise follow); an account
whose audience is made of them far more often than the platform's own rate, and which
minors themselves do not follow, is what a network that targets children looks like from
the outside, with or without a labelled seed. :func:`attention_marks` finds those
accounts from the follow graph and the platform's minors' list alone.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import canonical_csr
from ..filters.primitive import stored_cells
from ..filters.ties import follower_counts, shared_contacts, tie_bridges

__all__ = ["attention_marks", "audience_marks", "untied_minor_follows"]


def untied_minor_follows(
    graph: sp.csr_matrix,
    minors: np.ndarray,
    *,
    hub_quantile: float,
    min_shared: int = 1,
    through_minors: bool | str = True,
) -> np.ndarray:
    """For every account, how many minors' accounts it follows without a tie to them.

    Parameters
    ----------
    graph : csr_matrix, shape (n, n)
        The follow graph: non-zero ``(a, b)`` when ``a`` follows ``b``.
    minors : ndarray of bool, shape (n,)
    hub_quantile : float, keyword-only
        Followees with more followers than this quantile of the follower counts (hubs)
        are no tie.
    min_shared : int, keyword-only
        Shared non-hub followees that make a tie.
    through_minors : bool or "anchored", keyword-only
        Whether a minor's account followed by both ties them (the tie rule's
        ``through_targets``).

    Returns
    -------
    ndarray of int64, shape (n,)
        Untied follows of minors' accounts (0 for minors themselves).
    """
    return _untied(*_unit_graph(graph), minors, hub_quantile, min_shared, through_minors)


def _unit_graph(graph: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """The follow graph as the tie rule reads it (canonical, every stored cell 1, float32
    CSR), and each account's number of followers."""
    g = stored_cells(canonical_csr(sp.csr_matrix(graph)))
    return g, follower_counts(g).astype(np.int64)


def _untied(
    g, followers, minors, hub_quantile: float, min_shared: int, through_minors: bool | str
) -> np.ndarray:
    """:func:`untied_minor_follows` on :func:`_unit_graph`'s graph and follower counts."""
    m_idx = np.flatnonzero(minors)
    if not m_idx.size:
        return np.zeros(g.shape[0], dtype=np.int64)
    hub = float(np.quantile(followers, hub_quantile)) if followers.size else 0.0
    # follows[a, j]: a follows minor j; shared[a, j]: non-hub followees a and j share
    # (the tie rule's count, through="followees").
    follows = sp.csr_matrix(g[:, m_idx])
    bridges = tie_bridges(
        g,
        m_idx,
        through="followees",
        max_followers=hub,
        followers=followers,
        through_targets=through_minors,
    )
    shared = shared_contacts(g, bridges, min_shared)
    tied = follows.multiply(shared >= min_shared)
    out = np.asarray(follows.sum(axis=1)).ravel() - np.asarray(tied.sum(axis=1)).ravel()
    out = np.rint(out).astype(np.int64)
    out[minors] = 0
    return out


def attention_marks(
    graph: sp.csr_matrix,
    minors: np.ndarray,
    *,
    exempt: np.ndarray | None = None,
    hub_quantile: float,
    min_untied: int,
    lift: float,
    minor_share: float,
    through_minors: bool | str = True,
) -> np.ndarray:
    """Accounts whose followers are adults with untied attention to minors, far beyond
    chance.

    An adult (not a minor, not ``exempt``) with at least ``min_untied`` untied follows of
    minors' accounts (:func:`untied_minor_follows`) is an *attentive* account. An account
    is marked when, among its followers, attentive accounts are

    - at least ``lift`` times as frequent as on the whole platform, and
    - at least two, and more than a binomial draw at the platform's rate gives with
      probability ``1 / n`` (so fewer than one account in the catalogue reaches it by
      chance), and
    - minors make up at most ``minor_share`` of its followers (an account minors follow
      is part of their community: a coach, a parent).

    Minors' accounts are never marked. ``through_minors``: as in
    :func:`untied_minor_follows`.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    n = graph.shape[0]
    g, n_followers = _unit_graph(graph)
    attentive = _untied(g, n_followers, minors, hub_quantile, 1, through_minors) >= min_untied
    attentive &= ~minors
    if exempt is not None:
        attentive &= ~exempt
    out = _audience_pass(_hits(g, attentive), n_followers, _rate(attentive), lift, 1.0 / max(n, 1))
    young = _hits(g, minors)
    out &= young <= minor_share * np.maximum(n_followers, 1)
    out &= ~minors
    return out


def audience_marks(
    graph: sp.csr_matrix,
    marked: np.ndarray,
    *,
    lift: float,
    p_tail: float,
    exempt: np.ndarray | None = None,
    repeat: bool = False,
) -> np.ndarray:
    """Accounts whose followers are ``marked`` accounts far beyond chance.

    An account is marked when, among its followers, ``marked`` accounts are at least
    ``lift`` times as frequent as on the whole platform, at least two, and more than a
    binomial draw at the platform's rate gives with probability ``p_tail``. The audience
    of a network's sellers is its buyers: where some of them are already risky contexts,
    a seller that no seed, term or neighbourhood reaches still has an audience that
    gives it away.

    Parameters
    ----------
    graph : sparse matrix, shape (n, n)
        The follow graph: a non-zero ``(a, b)`` when ``a`` follows ``b`` (a stored zero
        is no follow; repeated cells are one).
    marked : ndarray of bool, shape (n,)
    lift, p_tail : float, keyword-only
    exempt : ndarray of bool, shape (n,), optional, keyword-only
        Accounts never marked here, nor counted as marked (they still count among an
        account's followers and in the platform's accounts).
    repeat : bool, keyword-only
        Repeat the test with the accounts it marked counted as ``marked``, the rate taken
        afresh each round, until a round marks no new account. A mark is never taken
        back, even where the risen rate would no longer give it; each round tests every
        account at ``p_tail``, so marks by chance add up over the rounds.

    Returns
    -------
    ndarray of bool, shape (n,)
        The accounts the test marked (at any round), outside ``marked`` or not.
    """
    a = sp.csr_matrix(graph, copy=True)
    a.sum_duplicates()
    a.eliminate_zeros()
    g, n_followers = _unit_graph(a)
    n = g.shape[0]
    keep = np.ones(n, dtype=bool) if exempt is None else ~np.asarray(exempt, dtype=bool)
    current = np.asarray(marked, dtype=bool) & keep
    hits = _hits(g, current)
    out = _audience_pass(hits, n_followers, _rate(current), lift, p_tail) & keep
    while repeat:
        new = out & ~current
        if not new.any():
            break
        current = current | new
        # Only the accounts the new marks follow gain hits; every other account keeps its
        # count against a rate that only rose, so it cannot pass now if it did not before.
        gained = np.rint(np.asarray(g[np.flatnonzero(new)].sum(axis=0)).ravel()).astype(np.int64)
        hits += gained
        tested = np.flatnonzero((gained > 0) & keep & ~out)
        passed = _audience_pass(hits[tested], n_followers[tested], _rate(current), lift, p_tail)
        out[tested[passed]] = True
    return out


def _hits(g, marked: np.ndarray) -> np.ndarray:
    """How many of each account's followers are ``marked`` (int64)."""
    return np.rint(g.T @ marked.astype(np.float32)).astype(np.int64)


def _rate(marked: np.ndarray) -> float:
    return float(marked.mean()) if marked.size else 0.0


def _audience_pass(hits, n_followers, rate: float, lift: float, p_tail: float) -> np.ndarray:
    """The audience test on counts: at least two hits, at least ``lift`` times the rate's
    share of the followers, and a binomial tail at the rate under ``p_tail``."""
    from scipy.stats import binom

    if rate <= 0.0:
        return np.zeros(hits.shape[0], dtype=bool)
    share = hits / np.maximum(n_followers, 1)
    out = (hits >= 2) & (share >= lift * rate)
    idx = np.flatnonzero(out)
    # P(Binomial(followers, rate) >= hits) < p_tail, only where the cheap tests pass
    out[idx] = binom.sf(hits[idx] - 1, n_followers[idx], rate) < p_tail
    return out
