"""A synthetic social platform for the audit: benign communities, an abusive network, minors.

The generator reproduces the structure that the 2023 test-account study describes: a follow
graph of benign interest communities with heavy-tailed popularity and a few celebrities; an
abusive network of sellers and buyers who follow each other densely and camouflage with
ordinary follows; and a benign but vulnerable niche community (minors' accounts of a
youth-sports community) that buyers follow into. Every account uses a few hashtags; the
network uses a handful of flagged hashtags that some benign accounts also use.

Everything is vectorized (no Python loop over accounts), so platforms of a million accounts
build in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_float, check_int, fail

__all__ = [
    "Platform",
    "make_platform",
    "BENIGN",
    "CELEBRITY",
    "MINOR",
    "SELLER",
    "BUYER",
    "ROLE_NAMES",
]

#: Role codes of :attr:`Platform.role`.
BENIGN, CELEBRITY, MINOR, SELLER, BUYER = 0, 1, 2, 3, 4
ROLE_NAMES = ("benign", "celebrity", "minor", "seller", "buyer")


@dataclass(frozen=True, eq=False)
class Platform:
    """A synthetic platform: who follows whom, who is who, and what the platform knows.

    Attributes
    ----------
    follows : csr_matrix of float32, shape (n_accounts, n_accounts)
        ``follows[u, v] = 1`` when account ``u`` follows account ``v`` (all follows).
    train : csr_matrix of float32, shape (n_accounts, n_accounts)
        ``follows`` without the held-out follows: what the recommender is trained on.
    held_out : csr_matrix of float32, shape (n_accounts, n_accounts)
        One follow per evaluation user (benign users only), hidden from ``train``.
    role : ndarray of int8, shape (n_accounts,)
        One of :data:`BENIGN`, :data:`CELEBRITY`, :data:`MINOR`, :data:`SELLER`,
        :data:`BUYER`.
    community : ndarray of int32, shape (n_accounts,)
        Interest community; network accounts carry their camouflage community.
    vulnerable_community : int
        The community id of the youth-sports community (minors, parents and coaches).
    active : ndarray of bool, shape (n_accounts,)
        ``False`` for deactivated accounts (stale scenario); they have no follows.
    recreated : ndarray of bool, shape (n_accounts,)
        Accounts that re-create a deactivated seller under a new id (stale scenario).
    known_seeds : ndarray of int64
        Sellers the platform has identified: the only labels a guard may use.
    hashtags : csr_matrix of float32, shape (n_accounts, n_tags)
        Hashtags each account uses.
    tag_names : tuple of str
        Name of every hashtag.
    flagged_tags : ndarray of int64
        Hashtags known to be used by the network.
    scenario : {"default", "stale"}
    seed : int
    params : dict
        The generator's parameters.
    """

    follows: sp.csr_matrix
    train: sp.csr_matrix
    held_out: sp.csr_matrix
    role: np.ndarray
    community: np.ndarray
    vulnerable_community: int
    active: np.ndarray
    recreated: np.ndarray
    known_seeds: np.ndarray
    hashtags: sp.csr_matrix
    tag_names: tuple[str, ...]
    flagged_tags: np.ndarray
    scenario: str
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def n_accounts(self) -> int:
        return int(self.role.shape[0])

    @property
    def network(self) -> np.ndarray:
        """Active network accounts (sellers and buyers), bool, shape (n_accounts,)."""
        return ((self.role == SELLER) | (self.role == BUYER)) & self.active

    @property
    def sellers(self) -> np.ndarray:
        """Indices of active sellers, int64."""
        return np.flatnonzero((self.role == SELLER) & self.active)

    @property
    def buyers(self) -> np.ndarray:
        """Indices of active buyers, int64."""
        return np.flatnonzero((self.role == BUYER) & self.active)

    @property
    def vulnerable(self) -> np.ndarray:
        """Minors' accounts of the vulnerable community, bool, shape (n_accounts,)."""
        return self.role == MINOR

    @property
    def benign(self) -> np.ndarray:
        """Active accounts outside the network (minors included), bool, shape (n_accounts,)."""
        return ~((self.role == SELLER) | (self.role == BUYER)) & self.active

    @property
    def ordinary(self) -> np.ndarray:
        """Benign adult accounts (viewers who are neither in the network nor minors)."""
        return self.benign & (self.role != MINOR)

    def search(self, tag: int, *, top: int = 10) -> np.ndarray:
        """Accounts using hashtag ``tag``, most followed first (what a hashtag search shows).

        Returns
        -------
        ndarray of int64, shape (<= top,)
        """
        tag = check_int(tag, "tag", "Platform.search", low=0, high=self.hashtags.shape[1] - 1)
        users = self.hashtags.tocsc()[:, tag].nonzero()[0]
        users = users[self.active[users]]
        followers = np.asarray(self.follows.sum(axis=0)).ravel()[users]
        order = np.lexsort((users, -followers))
        return users[order[:top]].astype(np.int64)

    def summary(self) -> dict:
        """Counts of the platform, JSON-ready."""
        indeg = np.asarray(self.follows.sum(axis=0)).ravel()
        sellers = self.sellers
        seller_followers = self.follows[:, sellers].tocsr()
        n_unique = int(np.count_nonzero(np.asarray(seller_followers.sum(axis=1)).ravel()))
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "n_accounts": self.n_accounts,
            "n_follows": int(self.follows.nnz),
            "n_communities": int(self.community.max()) + 1,
            "n_celebrities": int((self.role == CELEBRITY).sum()),
            "n_minors": int((self.role == MINOR).sum()),
            "n_sellers_active": int(sellers.size),
            "n_buyers_active": int(self.buyers.size),
            "n_known_seeds": int(self.known_seeds.size),
            "n_known_seeds_active": int(self.active[self.known_seeds].sum()),
            "n_recreated": int(self.recreated.sum()),
            "n_deactivated": int((~self.active).sum()),
            "seller_unique_followers": n_unique,
            "max_in_degree": int(indeg.max()),
            "median_in_degree": float(np.median(indeg)),
            "n_held_out": int(self.held_out.nnz),
            "n_tags": len(self.tag_names),
            "flagged_tags": [self.tag_names[t] for t in self.flagged_tags],
        }


class _GroupSampler:
    """Draw members of a group with probability proportional to their weight, vectorized."""

    def __init__(self, ids: np.ndarray, groups: np.ndarray, weights: np.ndarray, n_groups: int):
        order = np.lexsort((ids, groups))
        self.ids = ids[order]
        g = groups[order]
        w = weights[order].astype(np.float64)
        self.cum = np.cumsum(w)
        self.first = np.searchsorted(g, np.arange(n_groups), side="left")
        self.last = np.searchsorted(g, np.arange(n_groups), side="right")  # exclusive
        before = np.concatenate([[0.0], self.cum])
        self.lo = before[self.first]
        self.hi = before[self.last]

    def sample(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """One member per entry of ``groups``; ``-1`` where the group is empty."""
        groups = np.asarray(groups, dtype=np.int64)
        if groups.size == 0:
            return np.empty(0, dtype=np.int64)
        lo, hi = self.lo[groups], self.hi[groups]
        u = lo + rng.random(groups.size) * (hi - lo)
        idx = np.searchsorted(self.cum, u, side="right")
        idx = np.clip(
            idx, self.first[groups], np.maximum(self.last[groups] - 1, self.first[groups])
        )
        out = (
            self.ids[np.minimum(idx, self.ids.size - 1)]
            if self.ids.size
            else np.full(groups.size, -1)
        )
        out = np.where(self.last[groups] > self.first[groups], out, -1)
        return out.astype(np.int64)


def _degrees(
    rng: np.random.Generator,
    n: int,
    mean: float,
    *,
    sigma: float = 0.8,
    low: int = 1,
    high: int = 2000,
) -> np.ndarray:
    """Heavy-tailed (log-normal) counts with the given mean."""
    if n == 0 or mean <= 0:
        return np.zeros(n, dtype=np.int64)
    mu = np.log(mean) - sigma**2 / 2
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), low, high).astype(np.int64)


def _edges(
    rng, sources: np.ndarray, counts: np.ndarray, sampler: _GroupSampler, groups: np.ndarray
):
    """Edges from each source to ``counts`` members of its group (``groups`` per source)."""
    src = np.repeat(sources, counts)
    dst = sampler.sample(rng, np.repeat(groups, counts))
    keep = dst >= 0
    return src[keep], dst[keep]


def make_platform(
    *,
    seed: int = 0,
    n_accounts: int = 30_000,
    n_communities: int | None = None,
    mean_follows: float = 25.0,
    seller_share: float = 0.004,
    buyers_per_seller: float = 12.0,
    buyer_seller_follows: float = 12.0,
    buyer_minor_follows: float = 4.0,
    camouflage_follows: float = 15.0,
    minor_share: float = 0.015,
    celebrity_share: float = 0.001,
    known_fraction: float = 0.5,
    n_flagged_tags: int = 4,
    holdout_share: float = 0.2,
    scenario: str = "default",
    still_active: float = 0.077,
    recreate_fraction: float = 0.9,
    refollow_share: float = 0.8,
) -> Platform:
    """Build a synthetic platform with an abusive network and a vulnerable community.

    Parameters
    ----------
    seed : int, keyword-only
        Seed of the generator; the same seed gives the same platform.
    n_accounts : int, keyword-only
        Number of accounts, in [500, 10_000_000].
    n_communities : int, optional, keyword-only
        Benign interest communities (heavy-tailed sizes); about one per 600 accounts when
        omitted.
    mean_follows : float, keyword-only
        Mean number of follows of a benign account (log-normal, heavy-tailed).
    seller_share : float, keyword-only
        Sellers as a share of accounts (at least 12 sellers).
    buyers_per_seller : float, keyword-only
        Buyers per seller (the study: 112 sellers, about 22,000 unique followers).
    buyer_seller_follows, buyer_minor_follows, camouflage_follows : float, keyword-only
        Mean follows of a buyer into sellers, of a buyer into minors' accounts, and of a
        network account into ordinary accounts (camouflage).
    minor_share : float, keyword-only
        Minors' accounts of the youth-sports community, as a share of accounts; the
        community also holds half as many adults (parents, coaches).
    celebrity_share : float, keyword-only
        Celebrities (followed across communities), as a share of accounts.
    known_fraction : float, keyword-only
        Share of sellers the platform has identified (the study identified 405 of a
        network of about 500-1000). The most followed sellers are found first.
    n_flagged_tags : int, keyword-only
        Hashtags the network uses (a few benign accounts use them too).
    holdout_share : float, keyword-only
        Share of benign users (with at least 5 follows) with one follow held out for the
        quality metrics.
    scenario : {"default", "stale"}, keyword-only
        ``"stale"``: the identified sellers were identified a month ago; since then all
        but ``still_active`` of them were deactivated (their follows are gone), and
        ``recreate_fraction`` of the deactivated ones came back as new, unlabelled
        accounts that ``refollow_share`` of their old followers follow again. The labels still name
        only the old accounts.
    still_active : float, keyword-only
        Stale scenario: share of identified sellers still active (the study: 7.7%).
    recreate_fraction : float, keyword-only
        Stale scenario: share of deactivated sellers re-created as new accounts. The
        study saw a network of roughly constant size (500-1000 sellers at a time) while
        92% of the identified sellers disappeared within a month, so most come back.
    refollow_share : float, keyword-only
        Stale scenario: share of an old seller's followers who follow its new account.

    Returns
    -------
    Platform
    """
    # The first statement: locals() holds exactly the arguments, passed on by name.
    seed, params = _checked_params(**locals())
    p = {"n": params["n_accounts"], "n_comm": params["n_communities"], **params}
    # One generator for every phase, in a fixed order: the same seed, the same platform.
    rng = np.random.default_rng(seed)
    a = _accounts(rng, p)
    follows = _follow_graph(rng, p, a)
    identified = _identified(rng, follows, a.sellers_, a.n_identified)
    active = np.ones(p["n"], dtype=bool)
    recreated = np.zeros(p["n"], dtype=bool)
    hashtags, tag_names, flagged = _hashtags(rng, p, a)
    if p["scenario"] == "stale" and identified.size:
        follows, hashtags = _stale_seeds(
            rng, p, a, identified, follows, hashtags, active, recreated
        )
    held_out, train = _hold_out(rng, follows, a.role, active, p["holdout_share"])
    return Platform(
        follows=follows,
        train=train,
        held_out=held_out,
        role=a.role,
        community=a.community,
        vulnerable_community=int(a.youth),
        active=active,
        recreated=recreated,
        known_seeds=np.asarray(identified, dtype=np.int64),
        hashtags=hashtags,
        tag_names=tag_names,
        flagged_tags=flagged,
        scenario=p["scenario"],
        seed=seed,
        params=params,
    )


def _fields(ns, *names):
    """Several fields of a namespace or dict at once, in order."""
    if isinstance(ns, dict):
        return tuple(ns[k] for k in names)
    return tuple(getattr(ns, k) for k in names)


def _checked_params(
    *,
    seed,
    n_accounts,
    n_communities,
    mean_follows,
    seller_share,
    buyers_per_seller,
    buyer_seller_follows,
    buyer_minor_follows,
    camouflage_follows,
    minor_share,
    celebrity_share,
    known_fraction,
    n_flagged_tags,
    holdout_share,
    scenario,
    still_active,
    recreate_fraction,
    refollow_share,
) -> tuple[int, dict]:
    """The seed and the validated parameters of :func:`make_platform`."""
    where = "make_platform"
    seed = check_int(seed, "seed", where, low=0)
    n = check_int(n_accounts, "n_accounts", where, low=500, high=10_000_000)
    if n_communities is None:
        n_comm = max(4, n // 600)
    else:
        n_comm = check_int(n_communities, "n_communities", where, low=1, high=max(1, n // 20))
    mean_follows = check_float(mean_follows, "mean_follows", where, low=2.0, high=1000.0)
    seller_share = check_float(
        seller_share, "seller_share", where, low=0.0, high=0.05, low_open=True
    )
    buyers_per_seller = check_float(
        buyers_per_seller, "buyers_per_seller", where, low=1.0, high=200.0
    )
    buyer_seller_follows = check_float(
        buyer_seller_follows, "buyer_seller_follows", where, low=1.0, high=500.0
    )
    buyer_minor_follows = check_float(
        buyer_minor_follows, "buyer_minor_follows", where, low=0.0, high=100.0
    )
    camouflage_follows = check_float(
        camouflage_follows, "camouflage_follows", where, low=0.0, high=500.0
    )
    minor_share = check_float(minor_share, "minor_share", where, low=0.0, high=0.2)
    celebrity_share = check_float(celebrity_share, "celebrity_share", where, low=0.0, high=0.05)
    known_fraction = check_float(known_fraction, "known_fraction", where, low=0.0, high=1.0)
    n_flagged_tags = check_int(n_flagged_tags, "n_flagged_tags", where, low=1, high=100)
    holdout_share = check_float(holdout_share, "holdout_share", where, low=0.0, high=1.0)
    scenario = check_choice(scenario, "scenario", where, ("default", "stale"))
    still_active = check_float(still_active, "still_active", where, low=0.0, high=1.0)
    recreate_fraction = check_float(
        recreate_fraction, "recreate_fraction", where, low=0.0, high=1.0
    )
    refollow_share = check_float(refollow_share, "refollow_share", where, low=0.0, high=1.0)
    params = {
        "n_accounts": n,
        "n_communities": n_comm,
        "mean_follows": mean_follows,
        "seller_share": seller_share,
        "buyers_per_seller": buyers_per_seller,
        "buyer_seller_follows": buyer_seller_follows,
        "buyer_minor_follows": buyer_minor_follows,
        "camouflage_follows": camouflage_follows,
        "minor_share": minor_share,
        "celebrity_share": celebrity_share,
        "known_fraction": known_fraction,
        "n_flagged_tags": n_flagged_tags,
        "holdout_share": holdout_share,
        "scenario": scenario,
        "still_active": still_active,
        "recreate_fraction": recreate_fraction,
        "refollow_share": refollow_share,
    }
    return seed, params


def _accounts(rng: np.random.Generator, p: dict) -> SimpleNamespace:
    """Roles, communities, popularity and the samplers follows are drawn from."""
    where = "make_platform"
    n, n_comm, scenario = _fields(p, "n", "n_comm", "scenario")
    seller_share, buyers_per_seller, minor_share, celebrity_share = _fields(
        p, "seller_share", "buyers_per_seller", "minor_share", "celebrity_share"
    )
    known_fraction, still_active, recreate_fraction = _fields(
        p, "known_fraction", "still_active", "recreate_fraction"
    )
    # ---------------------------------------------------------------- accounts and roles
    n_sell = max(12, int(round(seller_share * n)))
    n_buy = max(n_sell, int(round(buyers_per_seller * n_sell)))
    n_minor = max(10, int(round(minor_share * n))) if minor_share > 0 else 0
    n_adult_youth = n_minor // 2
    n_celeb = max(5, int(round(celebrity_share * n))) if celebrity_share > 0 else 0
    n_recreate = 0
    n_identified = int(round(known_fraction * n_sell))
    if scenario == "stale":
        n_gone = n_identified - int(round(still_active * n_identified))
        n_recreate = int(round(recreate_fraction * n_gone))
    n_special = n_sell + n_buy + n_minor + n_celeb + n_recreate
    if n_special + n_adult_youth + n_comm * 5 > n:
        raise fail(
            "n_accounts",
            where,
            "large enough for the network, minors and communities it holds "
            f"(at least {n_special + n_adult_youth + n_comm * 5})",
            n,
        )
    n_base = n - n_recreate
    role = np.zeros(n, dtype=np.int8)
    perm = rng.permutation(n_base)
    cuts = np.cumsum([n_sell, n_buy, n_minor, n_celeb])
    sellers_, buyers_, minors_, celebs_, rest = np.split(perm, cuts)
    role[sellers_] = SELLER
    role[buyers_] = BUYER
    role[minors_] = MINOR
    role[celebs_] = CELEBRITY
    sellers_.sort(), buyers_.sort(), minors_.sort(), celebs_.sort(), rest.sort()

    # Community sizes are heavy-tailed (Zipf-like); the youth-sports community is extra.
    youth = n_comm
    comm_p = 1.0 / np.arange(1, n_comm + 1) ** 0.8
    comm_p = rng.permutation(comm_p / comm_p.sum())
    community = np.full(n, -1, dtype=np.int32)
    adults_youth = rng.choice(rest, size=n_adult_youth, replace=False)
    community[rest] = rng.choice(n_comm, size=rest.size, p=comm_p)
    community[adults_youth] = youth
    community[minors_] = youth
    community[celebs_] = rng.choice(n_comm, size=celebs_.size, p=comm_p)
    network_ = np.concatenate([sellers_, buyers_])
    community[network_] = rng.choice(n_comm, size=network_.size, p=comm_p)  # camouflage community

    # Heavy-tailed popularity; celebrities are far more popular than anybody else.
    pop = rng.pareto(1.3, n) + 1.0
    pop[celebs_] *= 50.0
    pop = np.minimum(pop, np.quantile(pop, 0.9999) if n > 10_000 else pop.max())

    benign_adults = np.concatenate([rest, celebs_])
    in_comm = _GroupSampler(benign_adults, community[benign_adults], pop[benign_adults], n_comm + 1)
    everyone = _GroupSampler(
        benign_adults, np.zeros(benign_adults.size, np.int64), pop[benign_adults], 1
    )
    celeb_s = _GroupSampler(celebs_, np.zeros(celebs_.size, np.int64), pop[celebs_], 1)
    youth_all = np.concatenate([minors_, adults_youth])
    youth_s = _GroupSampler(youth_all, np.zeros(youth_all.size, np.int64), pop[youth_all], 1)
    minor_s = _GroupSampler(minors_, np.zeros(minors_.size, np.int64), pop[minors_], 1)
    seller_pop = pop[sellers_] ** 1.5  # a few sellers are far more visible than the rest
    seller_s = _GroupSampler(sellers_, np.zeros(sellers_.size, np.int64), seller_pop, 1)
    buyer_s = _GroupSampler(buyers_, np.zeros(buyers_.size, np.int64), pop[buyers_], 1)
    return SimpleNamespace(
        n_sell=n_sell,
        n_buy=n_buy,
        n_minor=n_minor,
        n_adult_youth=n_adult_youth,
        n_celeb=n_celeb,
        n_recreate=n_recreate,
        n_identified=n_identified,
        n_base=n_base,
        role=role,
        sellers_=sellers_,
        buyers_=buyers_,
        minors_=minors_,
        celebs_=celebs_,
        rest=rest,
        youth=youth,
        comm_p=comm_p,
        community=community,
        adults_youth=adults_youth,
        network_=network_,
        pop=pop,
        in_comm=in_comm,
        everyone=everyone,
        celeb_s=celeb_s,
        youth_all=youth_all,
        youth_s=youth_s,
        minor_s=minor_s,
        seller_s=seller_s,
        buyer_s=buyer_s,
    )


def _follow_graph(rng: np.random.Generator, p: dict, a: SimpleNamespace) -> sp.csr_matrix:
    """Benign follows and the network's follows, deduplicated, as a 0/1 CSR matrix."""
    n, mean_follows, buyer_seller_follows, buyer_minor_follows, camouflage_follows = _fields(
        p, "n", "mean_follows", "buyer_seller_follows", "buyer_minor_follows", "camouflage_follows"
    )
    (
        n_celeb,
        rest,
        community,
        youth,
        in_comm,
        everyone,
        celeb_s,
        youth_all,
        youth_s,
        minor_s,
        seller_s,
        buyer_s,
        celebs_,
        buyers_,
        sellers_,
        minors_,
        network_,
    ) = _fields(
        a,
        "n_celeb",
        "rest",
        "community",
        "youth",
        "in_comm",
        "everyone",
        "celeb_s",
        "youth_all",
        "youth_s",
        "minor_s",
        "seller_s",
        "buyer_s",
        "celebs_",
        "buyers_",
        "sellers_",
        "minors_",
        "network_",
    )

    src, dst = [], []

    def add(sources, k, pools, groups=None):
        # ``groups=None``: one group (pool) for all of ``sources``.
        s, d = _edges(
            rng, sources, k, pools, np.zeros(sources.size, np.int64) if groups is None else groups
        )
        src.append(s)
        dst.append(d)

    # ---------------------------------------------------------------- benign follows
    ordinary = rest[community[rest] != youth]
    deg = _degrees(rng, ordinary.size, mean_follows)
    k_in = rng.binomial(deg, 0.65)
    k_celeb = rng.binomial(deg - k_in, 0.3) if n_celeb else np.zeros_like(deg)
    k_glob = deg - k_in - k_celeb
    add(ordinary, k_in, in_comm, community[ordinary])
    if n_celeb:
        add(ordinary, k_celeb, celeb_s)
    add(ordinary, k_glob, everyone)
    if youth_all.size:
        # Some ordinary adults (relatives, fans of the local team) follow a few youth accounts.
        fam = ordinary[rng.random(ordinary.size) < 0.03]
        add(fam, rng.integers(1, 4, fam.size), youth_s)
        # The youth-sports community follows itself, plus celebrities and a few others.
        deg = _degrees(rng, youth_all.size, mean_follows * 0.8)
        k_in = rng.binomial(deg, 0.75)
        k_celeb = rng.binomial(deg - k_in, 0.6) if n_celeb else np.zeros_like(deg)
        add(youth_all, k_in, youth_s)
        if n_celeb:
            add(youth_all, k_celeb, celeb_s)
        add(youth_all, deg - k_in - k_celeb, everyone)
    if n_celeb:
        deg = _degrees(rng, celebs_.size, mean_follows * 0.5)
        add(celebs_, deg, celeb_s)
        add(celebs_, deg, in_comm, community[celebs_])

    # ---------------------------------------------------------------- the network
    # Buyers follow many sellers, some other buyers and minors; everybody in the network
    # camouflages with ordinary follows of their cover community and celebrities.
    add(buyers_, _degrees(rng, buyers_.size, buyer_seller_follows, low=2), seller_s)
    add(buyers_, _degrees(rng, buyers_.size, 3.0, low=0), buyer_s)
    if minors_.size and buyer_minor_follows > 0:
        add(buyers_, _degrees(rng, buyers_.size, buyer_minor_follows, low=0), minor_s)
    add(sellers_, _degrees(rng, sellers_.size, 6.0, low=1), seller_s)
    add(sellers_, _degrees(rng, sellers_.size, 10.0, low=1), buyer_s)
    if camouflage_follows > 0:
        deg = _degrees(rng, network_.size, camouflage_follows, low=0)
        k_celeb = rng.binomial(deg, 0.3) if n_celeb else np.zeros_like(deg)
        add(network_, deg - k_celeb, in_comm, community[network_])
        if n_celeb:
            add(network_, k_celeb, celeb_s)

    rows = np.concatenate(src)
    cols = np.concatenate(dst)
    keep = rows != cols
    follows = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(n, n)
    )
    follows.sum_duplicates()
    follows.data[:] = 1.0

    return follows


def _identified(rng: np.random.Generator, follows, sellers_, n_identified: int) -> np.ndarray:
    """The sellers the platform has identified: the most followed are found first."""
    # ---------------------------------------------------------------- who is known
    # Researchers (and moderators) find the most followed sellers first.
    indeg = np.asarray(follows.sum(axis=0)).ravel()
    if n_identified:
        w = indeg[sellers_] + 1.0
        identified = np.sort(rng.choice(sellers_, size=n_identified, replace=False, p=w / w.sum()))
    else:
        identified = np.empty(0, dtype=np.int64)

    return identified


def _hashtags(rng: np.random.Generator, p: dict, a: SimpleNamespace):
    """Account x hashtag matrix, the tag names and the flagged tags the network uses."""
    n, n_comm, n_flagged_tags = _fields(p, "n", "n_comm", "n_flagged_tags")
    n_base, community, role, sellers_, buyers_, rest = _fields(
        a, "n_base", "community", "role", "sellers_", "buyers_", "rest"
    )
    # ---------------------------------------------------------------- hashtags
    tags_per_comm = 5
    n_comm_tags = (n_comm + 1) * tags_per_comm
    n_tags = n_comm_tags + 20 + n_flagged_tags
    flagged = np.arange(n_comm_tags + 20, n_tags, dtype=np.int64)
    k_tags = rng.integers(1, 5, n)
    k_tags[n_base:] = 0  # re-created accounts copy their predecessor's tags below
    t_src = np.repeat(np.arange(n), k_tags)
    own = community[t_src] * tags_per_comm + rng.integers(0, tags_per_comm, t_src.size)
    generic = n_comm_tags + rng.integers(0, 20, t_src.size)
    t_dst = np.where(rng.random(t_src.size) < 0.7, own, generic)
    net_mask = (role == SELLER) | (role == BUYER)
    # Sellers advertise with 1-3 flagged tags, a third of the buyers use one, and a few
    # benign accounts use them innocently (the words have ordinary meanings too).
    s_users = np.repeat(sellers_, rng.integers(1, 4, sellers_.size))
    b_users = buyers_[rng.random(buyers_.size) < 0.33]
    noise = rest[rng.random(rest.size) < 0.002]
    f_src = np.concatenate([s_users, b_users, noise])
    f_dst = flagged[rng.integers(0, n_flagged_tags, f_src.size)]
    hashtags = sp.csr_matrix(
        (
            np.ones(t_src.size + f_src.size, np.float32),
            (np.concatenate([t_src, f_src]), np.concatenate([t_dst, f_dst])),
        ),
        shape=(n, n_tags),
    )
    hashtags.sum_duplicates()
    hashtags.data[:] = 1.0
    tag_names = tuple(
        [f"c{c}_{j}" for c in range(n_comm) for j in range(tags_per_comm)]
        + [f"youthsports_{j}" for j in range(tags_per_comm)]
        + [f"daily_{j}" for j in range(20)]
        + [f"flagged_{j}" for j in range(n_flagged_tags)]
    )
    del net_mask

    return hashtags, tag_names, flagged


def _stale_seeds(
    rng, p: dict, a: SimpleNamespace, identified, follows, hashtags, active, recreated
):
    """The stale scenario: most identified sellers gone, most of them back as new accounts.

    Updates ``a.role``, ``a.community``, ``active`` and ``recreated`` in place and returns
    the new follows and hashtags.
    """
    n, still_active, refollow_share = _fields(p, "n", "still_active", "refollow_share")
    n_recreate, n_base, role, community = _fields(a, "n_recreate", "n_base", "role", "community")
    # ---------------------------------------------------------------- stale seeds
    n_keep = int(round(still_active * identified.size))
    still = rng.choice(identified, size=n_keep, replace=False)
    gone = np.setdiff1d(identified, still)
    reborn = (
        np.sort(rng.choice(gone, size=n_recreate, replace=False))
        if n_recreate
        else np.empty(0, np.int64)
    )
    new_ids = np.arange(n_base, n_base + reborn.size, dtype=np.int64)
    fol = follows.tocoo()
    r, c = fol.row.astype(np.int64), fol.col.astype(np.int64)
    # The new accounts follow what the old ones followed; most old followers find
    # them again.
    old_to_new = np.full(n, -1, dtype=np.int64)
    old_to_new[reborn] = new_ids
    out_e = old_to_new[r] >= 0
    in_e = (old_to_new[c] >= 0) & (rng.random(c.size) < refollow_share)
    add_r = np.concatenate([old_to_new[r[out_e]], r[in_e]])
    add_c = np.concatenate([c[out_e], old_to_new[c[in_e]]])
    dead = np.zeros(n, dtype=bool)
    dead[gone] = True
    live = ~(dead[r] | dead[c])
    r = np.concatenate([r[live], add_r])
    c = np.concatenate([c[live], add_c])
    ok = (r != c) & ~dead[r] & ~dead[c]
    follows = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (r[ok], c[ok])), shape=(n, n))
    follows.sum_duplicates()
    follows.data[:] = 1.0
    role[new_ids] = SELLER
    community[new_ids] = community[reborn]
    recreated[new_ids] = True
    active[gone] = False
    ht = hashtags.tocoo()
    copy = old_to_new[ht.row] >= 0
    hashtags = sp.csr_matrix(
        (
            np.ones(ht.nnz + int(copy.sum()), np.float32),
            (
                np.concatenate([ht.row, old_to_new[ht.row[copy]]]),
                np.concatenate([ht.col, ht.col[copy]]),
            ),
        ),
        shape=hashtags.shape,
    )

    return follows, hashtags


def _hold_out(rng: np.random.Generator, follows, role, active, holdout_share: float):
    """One follow held out per chosen benign user (the quality metrics' test set)."""
    n = follows.shape[0]
    # ---------------------------------------------------------------- held-out follows
    benign_users = np.flatnonzero(~((role == SELLER) | (role == BUYER)) & active)
    counts = np.diff(follows.indptr)[benign_users]
    eligible = benign_users[counts >= 5]
    chosen = eligible[rng.random(eligible.size) < holdout_share]
    offs = follows.indptr[chosen] + (
        rng.random(chosen.size) * np.diff(follows.indptr)[chosen]
    ).astype(np.int64)
    h_cols = follows.indices[offs]
    held_out = sp.csr_matrix((np.ones(chosen.size, np.float32), (chosen, h_cols)), shape=(n, n))
    train = follows.copy()
    train.data[offs] = 0.0
    train.eliminate_zeros()
    return held_out, train
