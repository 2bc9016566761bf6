"""Test-account walks: what a new account is shown as it looks at and follows the network.

Three walks reproduce the study's test accounts:

- :func:`view_one`: "suggested accounts" on the profile of one network account
  (``Guard.similar_items``);
- :func:`follow_handful`: a new account follows one network account, then repeatedly
  follows the top suggestions of ``Guard.recommend`` with its factors recomputed from its
  follows at every step (``recalculate_user=True``);
- :func:`search_start`: as :func:`follow_handful`, but the first follows are accounts found
  through a flagged hashtag.

Each walk records, per step, the share of suggestions in the abusive network and the share
in the vulnerable community, and the first step at which the network share reaches one half.
Walks use only the public :class:`guardrails.Guard` API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._validation import check_int
from .platform import Platform

__all__ = [
    "WalkResult",
    "view_one",
    "follow_handful",
    "search_start",
    "risky_viewers",
    "steps_to_half",
]


@dataclass(frozen=True, eq=False)
class WalkResult:
    """Per-walker, per-step shares of one walk.

    Attributes
    ----------
    name : str
        ``"view_one"``, ``"follow_handful"``, ``"search_start"`` or ``"risky_viewers"``.
    network_share : ndarray of float64, shape (n_walkers, n_steps)
        Share of each slate in the active abusive network (padding excluded).
    vulnerable_share : ndarray of float64, shape (n_walkers, n_steps)
        Share of each slate among the minors' accounts of the vulnerable community.
    slate_size : ndarray of int64, shape (n_walkers, n_steps)
        Items actually returned (an empty slate counts as share 0).
    starts : ndarray of int64, shape (n_walkers,)
        The network account each walker started from (or ``-1``).
    """

    name: str
    network_share: np.ndarray
    vulnerable_share: np.ndarray
    slate_size: np.ndarray
    starts: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.network_share.shape[1])

    def steps_to_half(self) -> np.ndarray:
        """First 1-based step at which each walker's network share is >= 0.5; -1 if never."""
        return steps_to_half(self.network_share)

    def summary(self) -> dict:
        """Means and worst cases per step, JSON-ready."""
        s2h = self.steps_to_half()
        reached = s2h[s2h > 0]
        return {
            "name": self.name,
            "n_walkers": int(self.network_share.shape[0]),
            "n_steps": self.n_steps,
            "network_share_mean": self.network_share.mean(axis=0).round(4).tolist(),
            "network_share_max": self.network_share.max(axis=0).round(4).tolist(),
            "vulnerable_share_mean": self.vulnerable_share.mean(axis=0).round(4).tolist(),
            "vulnerable_share_max": self.vulnerable_share.max(axis=0).round(4).tolist(),
            "worst_network_share": float(self.network_share.max()),
            "worst_vulnerable_share": float(self.vulnerable_share.max()),
            "mean_slate_size": float(self.slate_size.mean()),
            "share_walkers_reaching_half": float((s2h > 0).mean()),
            "median_steps_to_half": None if reached.size == 0 else float(np.median(reached)),
            "mean_share_curve_steps_to_half": _first_half(self.network_share.mean(axis=0)),
        }


def steps_to_half(shares: np.ndarray) -> np.ndarray:
    """First 1-based step at which each row reaches 0.5; -1 where it never does.

    Parameters
    ----------
    shares : ndarray of float, shape (n_walkers, n_steps)

    Returns
    -------
    ndarray of int64, shape (n_walkers,)
    """
    shares = np.atleast_2d(np.asarray(shares, dtype=np.float64))
    hit = shares >= 0.5
    first = np.argmax(hit, axis=1) + 1
    return np.where(hit.any(axis=1), first, -1).astype(np.int64)


def _first_half(curve: np.ndarray) -> int | None:
    idx = np.flatnonzero(np.asarray(curve) >= 0.5)
    return None if idx.size == 0 else int(idx[0]) + 1


def _shares(ids: np.ndarray, platform: Platform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network share, vulnerable share and slate size of each row of ``ids`` (``-1`` = padding)."""
    ids = np.atleast_2d(ids)
    real = ids >= 0
    safe = np.where(real, ids, 0)
    size = real.sum(axis=1)
    denom = np.maximum(size, 1)
    net = (platform.network[safe] & real).sum(axis=1) / denom
    vul = (platform.vulnerable[safe] & real).sum(axis=1) / denom
    return net.astype(np.float64), vul.astype(np.float64), size.astype(np.int64)


def _rows(follow_lists: list[np.ndarray], n: int) -> sp.csr_matrix:
    indptr = np.r_[0, np.cumsum([f.size for f in follow_lists])]
    indices = np.concatenate(follow_lists) if follow_lists else np.empty(0, np.int64)
    m = sp.csr_matrix(
        (np.ones(indices.size, np.float32), indices, indptr), shape=(len(follow_lists), n)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _walk(
    guard,
    platform: Platform,
    first_follows: list[np.ndarray],
    *,
    name: str,
    starts: np.ndarray,
    n_steps: int,
    follows_per_step: int,
    N: int,
    progress=None,
) -> WalkResult:
    """Walk the test accounts of ``first_follows`` for ``n_steps`` suggestion rounds.

    ``name`` is the public walk's name: the step counts are checked here, for both walks,
    in its name.
    """
    n_steps = check_int(n_steps, "n_steps", name)
    follows_per_step = check_int(follows_per_step, "follows_per_step", name)
    N = check_int(N, "N", name)
    n = platform.n_accounts
    m = len(first_follows)
    # Test accounts are new: ids beyond every trained user, factors folded in per step.
    userids = getattr(platform, "n_users", n) + np.arange(m, dtype=np.int64)
    follows = [np.unique(f.astype(np.int64)) for f in first_follows]
    net = np.zeros((m, n_steps))
    vul = np.zeros((m, n_steps))
    size = np.zeros((m, n_steps), dtype=np.int64)
    for step in range(n_steps):
        rows = _rows(follows, n)
        ids, _ = guard.recommend(
            userids, rows, N=N, recalculate_user=True, surface="suggested_accounts"
        )
        net[:, step], vul[:, step], size[:, step] = _shares(ids, platform)
        for w in range(m):
            top = ids[w][ids[w] >= 0][:follows_per_step]
            follows[w] = np.union1d(follows[w], top)
        if progress is not None:
            progress.update(1)
    return WalkResult(name, net, vul, size, starts)


def _pick_starts(
    platform: Platform, n_walkers: int, rng: np.random.Generator, *, unknown_only: bool
) -> np.ndarray:
    sellers = platform.sellers
    if unknown_only:
        unknown = np.setdiff1d(sellers, platform.known_seeds)
        if unknown.size:
            sellers = unknown
    return rng.choice(sellers, size=n_walkers, replace=sellers.size < n_walkers).astype(np.int64)


def view_one(
    guard,
    platform: Platform,
    *,
    n_views: int = 50,
    N: int = 10,
    seed: int = 0,
    unknown_only: bool = False,
) -> WalkResult:
    """Suggested accounts on the profiles of network sellers, seen by a new test account.

    Parameters
    ----------
    guard : guardrails.Guard
    platform : Platform
    n_views : int, keyword-only
        Seller profiles viewed (one step each).
    N : int, keyword-only
        Suggestions per profile.
    seed : int, keyword-only
    unknown_only : bool, keyword-only
        View only sellers the platform has not identified.

    Returns
    -------
    WalkResult
        One step per viewed profile.
    """
    n_views = check_int(n_views, "n_views", "view_one")
    N = check_int(N, "N", "view_one")
    rng = np.random.default_rng(seed)
    starts = _pick_starts(platform, n_views, rng, unknown_only=unknown_only)
    viewers = getattr(platform, "n_users", platform.n_accounts) + np.arange(n_views, dtype=np.int64)
    ids, _ = guard.similar_items(starts, N=N + 1, viewer=viewers, surface="suggested_accounts")
    ids = np.atleast_2d(ids)
    # implicit includes the viewed account itself first; it is not a suggestion.
    out = np.full((n_views, N), -1, dtype=np.int64)
    for r in range(n_views):
        row = ids[r][(ids[r] >= 0) & (ids[r] != starts[r])][:N]
        out[r, : row.size] = row
    net, vul, size = _shares(out, platform)
    return WalkResult("view_one", net[:, None], vul[:, None], size[:, None], starts)


def follow_handful(
    guard,
    platform: Platform,
    *,
    n_walkers: int = 20,
    n_steps: int = 6,
    follows_per_step: int = 3,
    N: int = 10,
    seed: int = 0,
    unknown_only: bool = False,
    progress=None,
) -> WalkResult:
    """A new account follows one seller, then follows the top suggestions, step by step.

    Parameters
    ----------
    guard : guardrails.Guard
    platform : Platform
    n_walkers : int, keyword-only
        Test accounts, each starting from a random active seller.
    n_steps : int, keyword-only
        Suggestion rounds; step 1 is the slate right after the first follow.
    follows_per_step : int, keyword-only
        Top suggestions followed after each round ("a handful").
    N : int, keyword-only
        Suggestions per round.
    seed : int, keyword-only
    unknown_only : bool, keyword-only
        Start only from sellers the platform has not identified.
    progress : tqdm-like, optional, keyword-only
        Updated once per step.

    Returns
    -------
    WalkResult
    """
    n_walkers = check_int(n_walkers, "n_walkers", "follow_handful")
    rng = np.random.default_rng(seed)
    starts = _pick_starts(platform, n_walkers, rng, unknown_only=unknown_only)
    return _walk(
        guard,
        platform,
        [np.array([s]) for s in starts],
        name="follow_handful",
        starts=starts,
        n_steps=n_steps,
        follows_per_step=follows_per_step,
        N=N,
        progress=progress,
    )


def search_start(
    guard,
    platform: Platform,
    *,
    n_walkers: int = 20,
    n_steps: int = 6,
    first_follows: int = 3,
    follows_per_step: int = 3,
    N: int = 10,
    seed: int = 0,
    progress=None,
) -> WalkResult:
    """A new account searches a flagged hashtag, follows a few results, then follows suggestions.

    Parameters
    ----------
    guard : guardrails.Guard
    platform : Platform
    n_walkers : int, keyword-only
    n_steps : int, keyword-only
    first_follows : int, keyword-only
        Accounts followed from the search results (drawn from its top ten).
    follows_per_step, N, seed, progress : keyword-only
        As in :func:`follow_handful`.

    Returns
    -------
    WalkResult
    """
    n_walkers = check_int(n_walkers, "n_walkers", "search_start")
    first_follows = check_int(first_follows, "first_follows", "search_start")
    rng = np.random.default_rng(seed)
    tags = rng.choice(platform.flagged_tags, size=n_walkers)
    firsts, starts = [], np.full(n_walkers, -1, dtype=np.int64)
    results = {int(t): platform.search(int(t), top=10) for t in np.unique(tags)}
    for w, t in enumerate(tags):
        res = results[int(t)]
        pick = (
            rng.choice(res, size=min(first_follows, res.size), replace=False) if res.size else res
        )
        firsts.append(np.asarray(pick, dtype=np.int64))
        in_net = pick[platform.network[pick]] if pick.size else pick
        starts[w] = int(in_net[0]) if in_net.size else -1
    return _walk(
        guard,
        platform,
        firsts,
        name="search_start",
        starts=starts,
        n_steps=n_steps,
        follows_per_step=follows_per_step,
        N=N,
        progress=progress,
    )


def risky_viewers(
    guard, platform: Platform, *, n_viewers: int = 200, N: int = 10, seed: int = 0
) -> WalkResult:
    """Suggestions for existing buyers (risky viewers with trained factors), one step.

    Parameters
    ----------
    guard : guardrails.Guard
    platform : Platform
    n_viewers : int, keyword-only
        Buyers sampled.
    N, seed : keyword-only

    Returns
    -------
    WalkResult
    """
    rng = np.random.default_rng(seed)
    buyers = platform.buyers
    users = np.sort(
        rng.choice(
            buyers,
            size=min(check_int(n_viewers, "n_viewers", "risky_viewers"), buyers.size),
            replace=False,
        )
    )
    ids, _ = guard.recommend(users, platform.train[users], N=N, surface="suggested_accounts")
    net, vul, size = _shares(ids, platform)
    return WalkResult("risky_viewers", net[:, None], vul[:, None], size[:, None], users)
