"""A randomised family of synthetic platforms, split into tuning and evaluation seeds.

One platform (:func:`guardrails.audit.make_platform`) tests a guard on the structure it was
tuned on. The family draws that structure from wide ranges instead, so a guard is judged
on platforms nobody looked at while choosing its defaults:

- size: 5,000 to 200,000 accounts (three tiers: ``"small"``, ``"medium"``, ``"large"``);
- popularity: the Pareto tail of account popularity, celebrity hubs and their pull;
- communities: how many (mean size 150-2,000 accounts) and how inward-looking (40-90 %
  of an ordinary account's follows stay in its community);
- the abusive network: its size (0.8-6 % of accounts), the seller:buyer ratio (1:2 to
  1:30), how many sellers a buyer follows (a handful to many) and how skewed seller
  popularity is; camouflage (5-60 ordinary follows per network account); the network
  split into 1-5 sub-networks, some of which have **no known seed** at all;
- what the platform knows: 5-50 % of the sellers of the known sub-networks; stale seeds
  (up to 90 % of them banned and re-created under new, unlabelled ids);
- the vulnerable cohort (minors' accounts): its size and how many buyers reach into it;
- noise: ordinary accounts following random accounts (the network included).

Held-out follows: every active benign account with at least five follows holds out a tenth
of them (at least one) for the benign recall target (:data:`HELD_OUT_SHARE`).

Every recommender kind of :data:`MODEL_KINDS` is trained on each platform (ALS, BPR, an
item-item model; 32-256 factors), see :func:`train_family_model`.

Seeds
-----
Platform seeds come in two disjoint streams derived from :data:`FAMILY_VERSION`:
:func:`family_seeds` with ``split="tuning"`` gives the platforms a developer may look at
while choosing defaults; ``split="evaluation"`` gives the platforms the defaults are
reported on, and nothing is ever tuned on them. Changing the family (its version string)
changes both streams, so every change is evaluated on fresh platforms.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_int, fail
from .platform import BUYER, CELEBRITY, MINOR, SELLER, Platform

__all__ = [
    "FAMILY_VERSION",
    "HELD_OUT_SHARE",
    "HELD_OUT_MIN_FOLLOWS",
    "SIZES",
    "MODEL_KINDS",
    "FamilyConfig",
    "FamilyPlatform",
    "family_seeds",
    "draw_config",
    "make_family_platform",
    "draw_model",
    "train_family_model",
]

#: Changing the generator or its ranges must change this string: the seed streams
#: (tuning and evaluation) are derived from it, so a changed family is judged on fresh
#: platforms.
FAMILY_VERSION = "family-2"

#: Held-out follows (the benign recall target is measured on them): every active benign
#: account with at least ``HELD_OUT_MIN_FOLLOWS`` follows holds out ``HELD_OUT_SHARE`` of
#: them, rounded, at least one. ``family-1`` held out one follow of a random 20 % of
#: those accounts (about ten to a hundred hits per platform: too few for a ratio).
HELD_OUT_SHARE = 0.1
HELD_OUT_MIN_FOLLOWS = 5

#: Account-count ranges (log-uniform) of each size tier.
SIZES = {
    "small": (5_000, 10_000),
    "medium": (10_000, 50_000),
    "large": (50_000, 200_000),
    "any": (5_000, 200_000),
}

#: Recommender kinds trained on every platform of the family.
MODEL_KINDS = ("als", "bpr", "item")

_SPLITS = ("tuning", "evaluation")


@dataclass(frozen=True)
class FamilyConfig:
    """One draw of the family's structure (every field JSON-ready).

    Attributes
    ----------
    seed : int
        Seed of the draw; the platform is built from it as well.
    n_accounts : int
    pop_tail : float
        Pareto shape of account popularity (smaller: heavier tail).
    n_communities : int
        Benign interest communities (Zipf-like sizes; the youth community is extra).
    community_density : float
        Share of an ordinary account's follows inside its own community.
    mean_follows : float
        Mean follows of an ordinary account (log-normal).
    celebrity_share, celebrity_pull : float
        Celebrities as a share of accounts; share of ordinary follows going to them.
    network_share : float
        Sellers and buyers as a share of accounts.
    buyers_per_seller : float
    buyer_seller_follows : float
        Mean sellers a buyer follows.
    seller_skew : float
        Exponent on seller popularity (larger: a few sellers hold most buyers).
    camouflage : float
        Mean ordinary follows of a network account, in [5, 60].
    n_subnetworks : int
    unknown_subnetworks : int
        Sub-networks none of whose sellers is known (always fewer than ``n_subnetworks``).
    known_fraction : float
        Share of the sellers of every known sub-network the platform has identified.
    stale_share : float
        Share of identified sellers banned since they were identified; their labels
        still name the old ids.
    recreate_fraction : float
        Share of banned sellers re-created under new, unlabelled ids.
    minor_share : float
        Minors' accounts as a share of accounts.
    buyer_minor_reach : float
        Share of buyers who follow minors' accounts.
    buyer_minor_follows : float
        Mean minors' accounts such a buyer follows.
    noise_share : float
        Share of an ordinary account's follows that go to a uniformly random account.
    seller_tag_rate : float
        Probability that a seller uses a flagged hashtag.
    """

    seed: int
    n_accounts: int
    pop_tail: float
    n_communities: int
    community_density: float
    mean_follows: float
    celebrity_share: float
    celebrity_pull: float
    network_share: float
    buyers_per_seller: float
    buyer_seller_follows: float
    seller_skew: float
    camouflage: float
    n_subnetworks: int
    unknown_subnetworks: int
    known_fraction: float
    stale_share: float
    recreate_fraction: float
    minor_share: float
    buyer_minor_reach: float
    buyer_minor_follows: float
    noise_share: float
    seller_tag_rate: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class FamilyPlatform(Platform):
    """A :class:`Platform` of the family, with its sub-networks and its draw.

    Attributes
    ----------
    subnetwork : ndarray of int32, shape (n_accounts,)
        Sub-network of each network account (``-1`` outside the network).
    known_subnetworks : ndarray of bool, shape (n_subnetworks,)
        Whether the platform knows any seller of each sub-network.
    config : FamilyConfig
    banned_follows : csr_matrix, shape (n_accounts, n_accounts), or None
        The follows of the banned (identified) accounts at their ban, in and out, which
        the follow graph no longer holds: what trust and safety keeps of a banned
        account (``None`` on a platform with no bans).
    """

    subnetwork: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    known_subnetworks: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    config: FamilyConfig | None = None
    banned_follows: sp.csr_matrix | None = None

    def summary(self) -> dict:
        out = super().summary()
        out["n_subnetworks"] = int(self.known_subnetworks.size)
        out["unknown_subnetworks"] = int((~self.known_subnetworks).sum())
        return out


# ---------------------------------------------------------------------------- seeds
def family_seeds(n: int, *, split: str = "evaluation", start: int = 0) -> list[int]:
    """Platform seeds of one split of the family (disjoint streams, fixed per version).

    Parameters
    ----------
    n : int
        Number of seeds.
    split : {"tuning", "evaluation"}, keyword-only
        Tuning seeds may be looked at while choosing defaults; evaluation seeds are only
        reported on.
    start : int, keyword-only
        Skip the first ``start`` seeds of the stream.

    Returns
    -------
    list of int
        Even numbers for tuning, odd for evaluation (so the streams never meet), all
        below 2**62.
    """
    where = "family_seeds"
    n = check_int(n, "n", where, low=0)
    split = check_choice(split, "split", where, _SPLITS)
    start = check_int(start, "start", where, low=0)
    digest = hashlib.sha256(f"{FAMILY_VERSION}:{split}".encode()).digest()
    base = int.from_bytes(digest[:7], "little")
    parity = 0 if split == "tuning" else 1
    # A stride that is odd keeps successive seeds distinct; doubling plus the parity keeps
    # the two streams disjoint.
    return [((base + 104_729 * (start + i)) % (1 << 60)) * 2 + parity for i in range(n)]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_config(seed: int, *, size: str = "any") -> FamilyConfig:
    """Draw the structure of one platform of the family.

    Parameters
    ----------
    seed : int
        Seed of the draw (from :func:`family_seeds`).
    size : {"small", "medium", "large", "any"}, keyword-only
        Account-count tier (:data:`SIZES`); every other range is the same in every tier.

    Returns
    -------
    FamilyConfig
    """
    where = "draw_config"
    seed = check_int(seed, "seed", where, low=0)
    size = check_choice(size, "size", where, tuple(SIZES))
    rng = np.random.default_rng([seed, 0x5EED])
    lo, hi = SIZES[size]
    n = int(round(_log_uniform(rng, lo, hi)))
    n_sub = int(rng.integers(1, 6))
    # Some sub-networks are unknown (no seller identified); at least one is known.
    n_unknown = int(rng.integers(0, n_sub)) if n_sub > 1 else 0
    stale = float(rng.uniform(0.3, 0.9)) if rng.random() < 0.4 else 0.0
    return FamilyConfig(
        seed=seed,
        n_accounts=n,
        pop_tail=float(rng.uniform(1.05, 2.5)),
        n_communities=max(3, int(round(n / _log_uniform(rng, 150, 2000)))),
        community_density=float(rng.uniform(0.4, 0.9)),
        mean_follows=float(rng.uniform(8.0, 40.0)),
        celebrity_share=float(rng.choice([0.0, rng.uniform(0.0003, 0.003)], p=[0.15, 0.85])),
        celebrity_pull=float(rng.uniform(0.05, 0.4)),
        network_share=float(rng.uniform(0.008, 0.06)),
        buyers_per_seller=_log_uniform(rng, 2.0, 30.0),
        buyer_seller_follows=_log_uniform(rng, 2.0, 25.0),
        seller_skew=float(rng.uniform(0.5, 2.0)),
        camouflage=float(rng.uniform(5.0, 60.0)),
        n_subnetworks=n_sub,
        unknown_subnetworks=n_unknown,
        known_fraction=float(rng.uniform(0.05, 0.5)),
        stale_share=stale,
        recreate_fraction=float(rng.uniform(0.5, 1.0)) if stale else 0.0,
        minor_share=float(rng.uniform(0.005, 0.03)),
        buyer_minor_reach=float(rng.uniform(0.1, 0.9)),
        buyer_minor_follows=float(rng.uniform(1.0, 8.0)),
        noise_share=float(rng.uniform(0.0, 0.15)),
        seller_tag_rate=float(rng.uniform(0.3, 1.0)),
    )


# ---------------------------------------------------------------------------- sampling
class _Pool:
    """Members of groups drawn with probability proportional to a weight, vectorized."""

    def __init__(self, ids: np.ndarray, weights: np.ndarray, groups=None, n_groups: int = 1):
        ids = np.asarray(ids, dtype=np.int64)
        groups = np.zeros(ids.size, np.int64) if groups is None else np.asarray(groups, np.int64)
        order = np.lexsort((ids, groups))
        self.ids = ids[order]
        g = groups[order]
        self.cum = np.cumsum(np.asarray(weights, np.float64)[order])
        self.first = np.searchsorted(g, np.arange(n_groups), side="left")
        self.last = np.searchsorted(g, np.arange(n_groups), side="right")
        before = np.concatenate([[0.0], self.cum])
        self.lo, self.hi = before[self.first], before[self.last]

    def sample(self, rng: np.random.Generator, groups) -> np.ndarray:
        """One member per entry of ``groups`` (``-1`` where the group is empty)."""
        groups = np.asarray(groups, dtype=np.int64)
        if groups.size == 0 or self.ids.size == 0:
            return np.full(groups.size, -1, dtype=np.int64)
        u = self.lo[groups] + rng.random(groups.size) * (self.hi[groups] - self.lo[groups])
        idx = np.searchsorted(self.cum, u, side="right")
        idx = np.clip(
            idx, self.first[groups], np.maximum(self.last[groups] - 1, self.first[groups])
        )
        out = self.ids[np.minimum(idx, self.ids.size - 1)]
        return np.where(self.last[groups] > self.first[groups], out, -1).astype(np.int64)


def _counts(rng: np.random.Generator, n: int, mean: float, *, low: int = 0, high: int = 3000):
    """Heavy-tailed (log-normal) counts with about the given mean."""
    if n == 0 or mean <= 0:
        return np.zeros(n, dtype=np.int64)
    sigma = 0.8
    mu = math.log(mean) - sigma**2 / 2
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), low, high).astype(np.int64)


def _edges(rng, sources, counts, pool: _Pool, groups=None):
    src = np.repeat(np.asarray(sources, np.int64), counts)
    g = np.zeros(src.size, np.int64) if groups is None else np.repeat(groups, counts)
    dst = pool.sample(rng, g)
    keep = dst >= 0
    return src[keep], dst[keep]


def _binary(rows, cols, n: int, m: int | None = None) -> sp.csr_matrix:
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    keep = rows != cols if m is None else np.ones(rows.size, bool)
    out = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
        shape=(n, n if m is None else m),
    )
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


# ---------------------------------------------------------------------------- platform
# One draw built top to bottom in the order the platform's structure depends on
# (sub-networks, follows, known sellers, stale seeds, held-out follows), each step in its
# own commented section; the draws share one random stream, so the order is the seed's.
def make_family_platform(config: FamilyConfig | int, *, size: str = "any") -> FamilyPlatform:
    """Build the platform of one draw of the family.

    Parameters
    ----------
    config : FamilyConfig or int
        A draw, or a seed to draw one with :func:`draw_config`.
    size : str, keyword-only
        Size tier when ``config`` is a seed.

    Returns
    -------
    FamilyPlatform
        ``scenario`` is ``"stale"`` when some identified sellers were banned, else
        ``"default"``; ``params`` holds the draw.
    """
    where = "make_family_platform"
    if not isinstance(config, FamilyConfig):
        config = draw_config(check_int(config, "config", where, low=0), size=size)
    c = config
    rng = np.random.default_rng([c.seed, 0xFA111])
    n = c.n_accounts
    n_net = max(2 * c.n_subnetworks * 4, int(round(c.network_share * n)))
    n_sell = max(3 * c.n_subnetworks, int(round(n_net / (1.0 + c.buyers_per_seller))))
    n_buy = max(n_sell, n_net - n_sell)
    n_minor = max(10, int(round(c.minor_share * n)))
    n_adult_youth = n_minor // 2
    n_celeb = int(round(c.celebrity_share * n))
    n_comm = c.n_communities
    n_sub = c.n_subnetworks

    # Sub-networks: sizes from a Dirichlet draw, at least 3 sellers and 3 buyers each.
    share = rng.dirichlet(np.full(n_sub, 2.0))

    def split(total: int) -> np.ndarray:
        k = np.maximum(3, np.floor(share * total).astype(np.int64))
        k[0] += max(0, total - int(k.sum()))
        return k

    sell_k, buy_k = split(n_sell), split(n_buy)
    n_sell, n_buy = int(sell_k.sum()), int(buy_k.sum())
    known_sub = np.ones(n_sub, dtype=bool)
    if c.unknown_subnetworks:
        known_sub[rng.choice(n_sub, size=c.unknown_subnetworks, replace=False)] = False
    # Identified sellers per sub-network, and how many of them were banned and re-created.
    n_ident_k = np.where(known_sub, np.maximum(1, np.rint(c.known_fraction * sell_k)), 0)
    n_ident_k = np.minimum(n_ident_k, sell_k).astype(np.int64)
    n_gone_total = int(np.rint(c.stale_share * n_ident_k).sum())
    n_recreate = int(round(c.recreate_fraction * n_gone_total))
    n_base = n - n_recreate
    if n_sell + n_buy + n_minor + n_adult_youth + n_celeb + 5 * n_comm > n_base:
        raise fail(
            "config",
            where,
            "a draw whose network, minors and communities fit in its accounts",
            c,
            describe=False,
        )

    role = np.zeros(n, dtype=np.int8)
    perm = rng.permutation(n_base)
    sellers, buyers, minors, celebs, rest = np.split(
        perm, np.cumsum([n_sell, n_buy, n_minor, n_celeb])
    )
    role[sellers] = SELLER
    role[buyers] = BUYER
    role[minors] = MINOR
    role[celebs] = CELEBRITY
    subnetwork = np.full(n, -1, dtype=np.int32)
    seller_sub = np.repeat(np.arange(n_sub), sell_k)
    buyer_sub = np.repeat(np.arange(n_sub), buy_k)
    subnetwork[sellers] = seller_sub
    subnetwork[buyers] = buyer_sub

    # Communities: Zipf-like sizes, the youth-sports community extra.
    youth = n_comm
    comm_p = 1.0 / np.arange(1, n_comm + 1) ** rng.uniform(0.5, 1.2)
    comm_p = rng.permutation(comm_p / comm_p.sum())
    community = np.full(n, -1, dtype=np.int32)
    community[rest] = rng.choice(n_comm, size=rest.size, p=comm_p)
    adults_youth = rng.choice(rest, size=n_adult_youth, replace=False)
    community[adults_youth] = youth
    community[minors] = youth
    community[celebs] = rng.choice(n_comm, size=celebs.size, p=comm_p)
    network = np.concatenate([sellers, buyers])
    community[network] = rng.choice(n_comm, size=network.size, p=comm_p)
    # Every community keeps a few ordinary members (camouflage and follows need them).
    for k in range(n_comm):
        if not np.any(community[rest] == k):
            community[rest[rng.integers(0, rest.size)]] = k

    pop = rng.pareto(c.pop_tail, n) + 1.0
    pop[celebs] *= 50.0
    pop = np.minimum(pop, np.quantile(pop, 0.9995))
    benign_adults = np.concatenate([rest[community[rest] != youth], celebs])
    in_comm = _Pool(benign_adults, pop[benign_adults], community[benign_adults], n_comm + 1)
    anyone_benign = _Pool(benign_adults, pop[benign_adults])
    everyone = _Pool(np.arange(n_base), np.ones(n_base))
    celeb_pool = _Pool(celebs, pop[celebs])
    youth_all = np.concatenate([minors, adults_youth])
    youth_pool = _Pool(youth_all, pop[youth_all])
    minor_pool = _Pool(minors, pop[minors])
    seller_pool = _Pool(sellers, pop[sellers] ** c.seller_skew, seller_sub, n_sub)
    buyer_pool = _Pool(buyers, pop[buyers], buyer_sub, n_sub)

    src, dst = [], []

    def add(edges):
        src.append(edges[0])
        dst.append(edges[1])

    # ------------------------------------------------------------ benign follows
    ordinary = np.concatenate([rest[community[rest] != youth], celebs])
    deg = _counts(rng, ordinary.size, c.mean_follows, low=1)
    k_noise = rng.binomial(deg, c.noise_share)
    k_in = rng.binomial(deg - k_noise, c.community_density)
    k_celeb = (
        rng.binomial(
            deg - k_noise - k_in, min(1.0, c.celebrity_pull / (1 - c.community_density + 1e-9))
        )
        if n_celeb
        else np.zeros_like(deg)
    )
    add(_edges(rng, ordinary, k_in, in_comm, community[ordinary]))
    add(_edges(rng, ordinary, deg - k_noise - k_in - k_celeb, anyone_benign))
    add(_edges(rng, ordinary, k_noise, everyone))
    if n_celeb:
        add(_edges(rng, ordinary, k_celeb, celeb_pool))
    fam = ordinary[rng.random(ordinary.size) < 0.03]
    add(_edges(rng, fam, rng.integers(1, 4, fam.size), youth_pool))
    deg = _counts(rng, youth_all.size, c.mean_follows * 0.8, low=1)
    k_in = rng.binomial(deg, 0.75)
    add(_edges(rng, youth_all, k_in, youth_pool))
    add(_edges(rng, youth_all, deg - k_in, celeb_pool if n_celeb else anyone_benign))

    # ------------------------------------------------------------ the network
    add(
        _edges(
            rng, buyers, _counts(rng, n_buy, c.buyer_seller_follows, low=1), seller_pool, buyer_sub
        )
    )
    add(_edges(rng, buyers, _counts(rng, n_buy, 3.0), buyer_pool, buyer_sub))
    add(_edges(rng, sellers, _counts(rng, n_sell, 5.0, low=1), seller_pool, seller_sub))
    add(_edges(rng, sellers, _counts(rng, n_sell, 8.0, low=1), buyer_pool, seller_sub))
    reach = buyers[rng.random(n_buy) < c.buyer_minor_reach]
    add(_edges(rng, reach, _counts(rng, reach.size, c.buyer_minor_follows, low=1), minor_pool))
    deg = _counts(rng, network.size, c.camouflage, low=1, high=400)
    k_celeb = rng.binomial(deg, 0.25) if n_celeb else np.zeros_like(deg)
    add(_edges(rng, network, deg - k_celeb, in_comm, community[network]))
    if n_celeb:
        add(_edges(rng, network, k_celeb, celeb_pool))
    follows = _binary(np.concatenate(src), np.concatenate(dst), n)

    # ------------------------------------------------------------ who is known
    indeg = np.asarray(follows.sum(axis=0)).ravel()
    picked: list[np.ndarray] = []
    for k in range(n_sub):
        if n_ident_k[k]:
            cand = sellers[seller_sub == k]
            w = indeg[cand] + 1.0
            picked.append(
                rng.choice(cand, size=int(n_ident_k[k]), replace=False, p=w / w.sum())
            )
    identified = np.sort(np.concatenate(picked)).astype(np.int64)

    # ------------------------------------------------------------ hashtags
    tags_per_comm, n_flagged = 5, int(rng.integers(2, 7))
    n_comm_tags = (n_comm + 1) * tags_per_comm
    n_tags = n_comm_tags + 20 + n_flagged
    flagged = np.arange(n_comm_tags + 20, n_tags, dtype=np.int64)
    k_tags = rng.integers(1, 5, n)
    k_tags[n_base:] = 0
    t_src = np.repeat(np.arange(n), k_tags)
    own = community[t_src] * tags_per_comm + rng.integers(0, tags_per_comm, t_src.size)
    t_dst = np.where(
        rng.random(t_src.size) < 0.7, own, n_comm_tags + rng.integers(0, 20, t_src.size)
    )
    taggers = np.concatenate(
        [
            sellers[rng.random(n_sell) < c.seller_tag_rate],
            buyers[rng.random(n_buy) < c.seller_tag_rate / 3],
            rest[rng.random(rest.size) < 0.002],
        ]
    )
    hashtags = _binary(
        np.concatenate([t_src, taggers]),
        np.concatenate([t_dst, flagged[rng.integers(0, n_flagged, taggers.size)]]),
        n,
        n_tags,
    )
    tag_names = tuple(
        [f"c{k}_{j}" for k in range(n_comm) for j in range(tags_per_comm)]
        + [f"youthsports_{j}" for j in range(tags_per_comm)]
        + [f"daily_{j}" for j in range(20)]
        + [f"flagged_{j}" for j in range(n_flagged)]
    )

    # ------------------------------------------------------------ stale seeds
    active = np.ones(n, dtype=bool)
    recreated = np.zeros(n, dtype=bool)
    banned_follows = None
    if n_gone_total:
        gone = np.sort(rng.choice(identified, size=n_gone_total, replace=False))
        reborn = np.sort(rng.choice(gone, size=n_recreate, replace=False))
        new_ids = np.arange(n_base, n, dtype=np.int64)
        old_to_new = np.full(n, -1, dtype=np.int64)
        old_to_new[reborn] = new_ids
        fol = follows.tocoo()
        r, cc = fol.row.astype(np.int64), fol.col.astype(np.int64)
        at_ban = np.isin(r, gone) | np.isin(cc, gone)
        banned_follows = _binary(r[at_ban], cc[at_ban], n)
        out_e = old_to_new[r] >= 0
        in_e = (old_to_new[cc] >= 0) & (rng.random(cc.size) < 0.8)
        dead = np.zeros(n, dtype=bool)
        dead[gone] = True
        r2 = np.concatenate([r, old_to_new[r[out_e]], r[in_e]])
        c2 = np.concatenate([cc, cc[out_e], old_to_new[cc[in_e]]])
        ok = ~dead[r2] & ~dead[c2]
        follows = _binary(r2[ok], c2[ok], n)
        role[new_ids] = SELLER
        community[new_ids] = community[reborn]
        subnetwork[new_ids] = subnetwork[reborn]
        recreated[new_ids] = True
        active[gone] = False
        ht = hashtags.tocoo()
        copy = old_to_new[ht.row] >= 0
        hashtags = _binary(
            np.concatenate([ht.row, old_to_new[ht.row[copy]]]),
            np.concatenate([ht.col, ht.col[copy]]),
            n,
            n_tags,
        )
        follows = _refind_sellers(follows, role, subnetwork, active, recreated, c.seed)

    # ------------------------------------------------------------ held-out follows
    # Every active benign account with at least HELD_OUT_MIN_FOLLOWS follows holds out
    # HELD_OUT_SHARE of them (rounded, at least one), drawn uniformly without replacement:
    # the usual per-user split, enough hits to measure a recall ratio to a few percent, and
    # the training graph keeps about 90 % of every such account's follows (the network's
    # follows are never held out, so what the policy sees of it is the whole network).
    benign_users = np.flatnonzero(~((role == SELLER) | (role == BUYER)) & active)
    counts = np.diff(follows.indptr)[benign_users]
    chosen = benign_users[counts >= HELD_OUT_MIN_FOLLOWS]
    deg = np.diff(follows.indptr)[chosen]
    k_out = np.maximum(1, np.rint(HELD_OUT_SHARE * deg)).astype(np.int64)
    # A random key per follow; the k_out smallest keys of each row are held out.
    starts = follows.indptr[chosen]
    row_of = np.repeat(np.arange(chosen.size), deg)
    pos = np.arange(int(deg.sum())) - np.repeat(np.cumsum(deg) - deg, deg)
    key = rng.random(row_of.size)
    order = np.lexsort((key, row_of))
    rank = np.empty_like(order)
    rank[order] = pos
    pick = rank < k_out[row_of]
    offs = (np.repeat(starts, deg) + pos)[pick]
    held_out = _binary(np.repeat(chosen, deg)[pick], follows.indices[offs], n)
    train = follows.copy()
    train.data[offs] = 0.0
    train.eliminate_zeros()
    return FamilyPlatform(
        follows=follows,
        train=train,
        held_out=held_out,
        role=role,
        community=community,
        vulnerable_community=int(youth),
        active=active,
        recreated=recreated,
        known_seeds=identified,
        hashtags=hashtags,
        tag_names=tag_names,
        flagged_tags=flagged,
        scenario="stale" if n_gone_total else "default",
        seed=int(c.seed),
        params=c.to_dict(),
        subnetwork=subnetwork,
        known_subnetworks=known_sub,
        config=c,
        banned_follows=banned_follows,
    )


def _refind_sellers(follows, role, subnetwork, active, recreated, seed: int):
    """Buyers whose every seller of their sub-network was banned find one again.

    Popular sellers are the likeliest to be identified and banned, so on a platform with a
    steep seller tail a ban can leave most buyers without any seller (seen: every buyer of a
    sub-network). A buyer left so follows one active seller of its own sub-network, a
    re-created account where its sub-network has one (the buyers of a banned account are
    the ones who look for its new id). Its own random stream, so platforms with no such
    buyer are unchanged.
    """
    rng = np.random.default_rng([int(seed), 0x5E11E])
    buyers = np.flatnonzero((role == BUYER) & active)
    f = follows[buyers].tocoo()
    own = (role[f.col] == SELLER) & active[f.col]
    own &= subnetwork[f.col] == subnetwork[buyers[f.row]]
    lost = buyers[np.bincount(f.row[own], minlength=buyers.size) == 0]
    if lost.size == 0:
        return follows
    sellers = (role == SELLER) & active
    cols = np.full(lost.size, -1, dtype=np.int64)
    for k in np.unique(subnetwork[lost]):
        pick = subnetwork[lost] == k
        pool = np.flatnonzero(sellers & recreated & (subnetwork == k))
        if pool.size == 0:
            pool = np.flatnonzero(sellers & (subnetwork == k))
        if pool.size:
            cols[pick] = rng.choice(pool, size=int(pick.sum()))
    ok = cols >= 0
    extra = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=follows.dtype), (lost[ok], cols[ok])),
        shape=follows.shape,
    )
    out = (follows + extra).tocsr()
    out.data[:] = 1.0
    return out


# ---------------------------------------------------------------------------- models
def draw_model(seed: int, kind: str) -> dict:
    """The recommender drawn for one platform and kind (JSON-ready).

    ``"als"`` and ``"bpr"`` draw 32-256 factors (log-uniform, a multiple of 8);
    ``"item"`` draws Cosine or BM25 nearest neighbours (K of 20-100).
    """
    kind = check_choice(kind, "kind", "draw_model", MODEL_KINDS)
    rng = np.random.default_rng([int(seed), MODEL_KINDS.index(kind), 0x30DE1])
    if kind == "item":
        return {
            "kind": kind,
            "model": str(rng.choice(["cosine", "bm25"])),
            "K": int(rng.integers(20, 101)),
        }
    factors = int(round(_log_uniform(rng, 32, 256) / 8) * 8)
    return {"kind": kind, "model": kind, "factors": factors}


def train_family_model(platform: Platform, spec: dict, *, num_threads: int = 2, seed: int = 0):
    """Fit the recommender ``spec`` (:func:`draw_model`) on ``platform.train``.

    Returns
    -------
    an implicit model (ALS, BPR, CosineRecommender or BM25Recommender)
    """
    from threadpoolctl import threadpool_limits

    kind = check_choice(spec.get("kind"), "spec", "train_family_model", MODEL_KINDS)
    # What the factor models share besides their drawn size: the threads and the seed.
    shared = {"num_threads": num_threads, "random_state": seed}
    with threadpool_limits(1, "blas"):
        if kind == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(
                factors=spec["factors"], iterations=15, regularization=0.05, alpha=2.0, **shared
            )
        elif kind == "bpr":
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(
                factors=spec["factors"],
                iterations=60,
                learning_rate=0.05,
                regularization=0.01,
                **shared,
            )
        else:
            from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

            cls = BM25Recommender if spec["model"] == "bm25" else CosineRecommender
            model = cls(K=spec["K"], num_threads=num_threads)
        model.fit(platform.train, show_progress=False)
    return model
