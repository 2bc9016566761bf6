"""Flagged terms (hashtags, link domains) as evidence about accounts, for ``default_policy``.

An account that uses a flagged term itself, or sits among accounts that do far more often
than the platform's own rate of use makes likely, is a risky *viewing context*: its profile
and a new follow of it get the low-risk pool. It is never dropped or demoted for its terms
alone (terms have innocent uses too). :func:`term_neighbourhood` is the "far more often
than chance" test, which the attention-to-minors marks reuse.
"""

from __future__ import annotations

from math import comb

import numpy as np

from .._validation import check_csr, fail

__all__ = [
    "DEFAULT_TERM_NEIGHBOURS",
    "binom_tail",
    "checked_terms",
    "flagged_term_context",
    "term_neighbourhood",
]

#: An account with at least this many of its DEFAULT_NEIGHBOURS nearest accounts using a
#: flagged term is a risky context (more when the platform's own rate of flagged-term use
#: makes that count likely by chance, see _TERM_NEIGHBOUR_P): the model places the
#: untagged members of a network beside its tagged ones, with or without a known seed.
DEFAULT_TERM_NEIGHBOURS = 2
#: Chance, at the platform's own rate of flagged-term use, that an account's
#: neighbourhood reaches the term-neighbour count: the count is raised until it is below.
_TERM_NEIGHBOUR_P = 0.01


def flagged_term_context(
    account_terms, seed_terms, minor_mask, nbrs, n: int, where: str
) -> np.ndarray | None:
    """Accounts that are risky contexts for their terms (bool, shape (n,)), or ``None``
    without terms: those that use a flagged term themselves, and with the model's nearest
    accounts ``nbrs`` those whose neighbourhood does so beyond chance
    (:func:`term_neighbourhood`). Minors' accounts are never marked, nor counted."""
    uses_flagged = _flagged_term_users(account_terms, seed_terms, n, where)
    if uses_flagged is None:
        return None
    if minor_mask is not None:
        uses_flagged &= ~minor_mask
    context = uses_flagged.copy()
    if nbrs is not None:
        context |= term_neighbourhood(uses_flagged, nbrs)
    if minor_mask is not None:
        context &= ~minor_mask
    return context


def _flagged_term_users(account_terms, seed_terms, n: int, where: str) -> np.ndarray | None:
    """Accounts that use a flagged term themselves (bool, shape (n,)), or ``None`` without
    terms."""
    if account_terms is None or seed_terms is None:
        return None
    at, st = checked_terms(account_terms, seed_terms, n, where)
    if not st.size:
        return None
    return np.asarray(at[:, st].sum(axis=1)).ravel() > 0


def checked_terms(account_terms, seed_terms, n: int, where: str):
    """``(|account_terms|, seed_terms as int64)``: the account-term matrix (one row per
    candidate) and the flagged terms' column indices, checked."""
    at = check_csr(account_terms, "account_terms", where)
    if at.shape[0] != n:
        raise fail("account_terms", where, f"a matrix with {n} rows (one per candidate)", at)
    st = np.asarray(seed_terms)
    if st.ndim != 1 or not (st.size == 0 or np.issubdtype(st.dtype, np.integer)):
        raise fail("seed_terms", where, "a 1-d array of term indices", seed_terms)
    if st.size and (st.min() < 0 or st.max() >= at.shape[1]):
        raise fail("seed_terms", where, f"indices in [0, {at.shape[1]})", seed_terms)
    return abs(at), st.astype(np.int64)


def term_neighbourhood(uses_flagged: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Accounts with at least k of their nearest accounts using a flagged term, k the
    smallest count (at least :data:`DEFAULT_TERM_NEIGHBOURS`) that a neighbourhood drawn
    at the platform's own rate of flagged-term use reaches with probability under
    :data:`_TERM_NEIGHBOUR_P` (binomial tail)."""
    valid = nbrs >= 0
    k_nb = max(int(valid.sum(axis=1).max(initial=0)), 1)
    hits = (uses_flagged[np.maximum(nbrs, 0)] & valid).sum(axis=1)
    rate = float(uses_flagged.mean()) if uses_flagged.size else 0.0
    k = DEFAULT_TERM_NEIGHBOURS
    while k <= k_nb and binom_tail(k_nb, rate, k) >= _TERM_NEIGHBOUR_P:
        k += 1
    return hits >= k


def binom_tail(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k)."""
    return float(sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1)))
