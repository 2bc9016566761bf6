"""The family audit: one guard configuration on many platforms of the family, worst case first.

:func:`run_family` builds N platforms of :mod:`guardrails.audit.family`, trains every model
kind on each, and measures the guarded configuration against the issue's targets on every
(platform, kind) pair. The report keeps every row, the distribution of every metric
(median, 90th percentile, worst) and, per target, the platforms that break it.
:func:`format_family` prints it; :func:`write_family_plot` draws exposure and recall
across platforms (both in :mod:`guardrails.audit.family_report`, imported here too).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

import guardrails as gr

from .._validation import check_choice, check_int, fail
from .family import (
    FAMILY_VERSION,
    HELD_OUT_MIN_FOLLOWS,
    HELD_OUT_SHARE,
    MODEL_KINDS,
    SIZES,
    FamilyPlatform,
    draw_model,
    family_seeds,
    make_family_platform,
    train_family_model,
)
from .family_report import (
    FAMILY_TARGETS,
    family_distribution,
    family_targets,
    format_family,
    write_family_plot,
)
from .guards import audit_guard, default_guard_policy
from .metrics import (
    evaluation_users,
    hit_matrix,
    ordinary_viewers,
    recall_at_k,
    recall_ratio_interval,
)
from .walks import WalkResult, follow_handful, risky_viewers, search_start, view_one

__all__ = [
    "FAMILY_TARGETS",
    "RECALL_USERS",
    "recall_ratio_interval",
    "context_shares",
    "context_marks",
    "profile_lists_kept",
    "new_account_recall",
    "NEW_ACCOUNT_USERS",
    "model_neighbours",
    "family_default_policy",
    "run_family",
    "evaluate_family_platform",
    "family_walks",
    "view_profiles",
    "family_targets",
    "format_family",
    "write_family_plot",
]

#: Evaluation users per platform for the recall target (every one on the small tier).
RECALL_USERS = 10_000
#: Evaluation users per platform served as new accounts (:func:`new_account_recall`).
NEW_ACCOUNT_USERS = 1000
#: Paired bootstrap of the recall ratio: resamples and confidence level (seeded with the
#: platform's seed, so a row's interval is repeatable).
_BOOT: dict[str, Any] = {"n": 2000, "level": 0.95}
_EXPOSURE_WALKS = (
    "view_one",
    "view_one_unknown",
    "similar_users",
    "follow_handful",
    "follow_handful_unknown",
    "search_start",
)


def model_neighbours(model) -> dict:
    """The model's own item space, as ``default_policy`` takes it.

    ``{"item_factors": ...}`` for a factor model (implicit's ALS or BPR on the CPU),
    ``{"item_similarity": ...}`` for an item-item model (its ``similarity``), ``{}``
    for anything else (or ``None``).
    """
    factors = getattr(model, "item_factors", None)
    if isinstance(factors, np.ndarray) and factors.ndim == 2:
        return {"item_factors": factors}
    sim = getattr(model, "similarity", None)
    if sim is not None and sp.issparse(sim):
        return {"item_similarity": sp.csr_matrix(sim)}
    return {}


def family_default_policy(platform, model=None):
    """``default_policy`` from what the platform knows and the model it serves.

    :func:`~guardrails.audit.guards.default_guard_policy` (the known seeds, the follow
    graph, hashtags and flagged ones, minors' accounts) plus the trained model's item
    space (:func:`model_neighbours`), which gives every account a neighbourhood risk.
    """
    return default_guard_policy(platform, **model_neighbours(model))


def view_profiles(guard, platform, *, n_views: int = 50, N: int = 10, seed: int = 0) -> dict:
    """Profiles of network sellers viewed through ``similar_items`` and ``similar_users``.

    Unlike :func:`~guardrails.audit.walks.view_one` the viewed account is *not* stripped:
    an account the guard still serves on its own profile is one it has cleared, and
    ``self_shown`` counts how often that happens for network accounts
    (``default_policy`` never lists the viewed profile, so for it this checks that rule).

    Returns
    -------
    dict
        ``self_shown`` (share of viewed sellers in their own ``similar_items`` list), and
        ``similar_users``: mean and worst network share of ``similar_users`` lists (the
        viewed seller excluded), or ``None`` for models without user factors.
    """
    rng = np.random.default_rng(seed)
    sellers = platform.sellers
    starts = rng.choice(sellers, size=n_views, replace=sellers.size < n_views).astype(np.int64)
    viewers = platform.n_accounts + np.arange(n_views, dtype=np.int64)
    ids, _ = guard.similar_items(starts, N=N + 1, viewer=viewers, surface="suggested_accounts")
    ids = np.atleast_2d(ids)
    self_shown = float(np.mean([(ids[r] == starts[r]).any() for r in range(n_views)]))
    out: dict[str, object] = {"self_shown": self_shown, "similar_users": None}
    if isinstance(guard.model_, gr.FactorModel):
        uid, _ = guard.similar_users(starts, N=N + 1, surface="suggested_accounts")
        uid = np.atleast_2d(uid)
        shares = []
        for r in range(n_views):
            row = uid[r][(uid[r] >= 0) & (uid[r] != starts[r])][:N]
            shares.append(platform.network[row].mean() if row.size else 0.0)
        s = np.asarray(shares)
        out["similar_users"] = {"mean": float(s.mean()), "max": float(s.max())}
    return out


def _recall_hits(guard, platform, users: np.ndarray, k: int, batch: int = 2000):
    """Per user: recall@k on the held-out follows, the number of them in the top ``k``,
    and the number of those that are adult pairs (neither the user nor the followed
    account a minor's: the hits the minors' rules never touch)."""
    rec, hits, adult = [], [], []
    minors = platform.vulnerable
    for lo in range(0, users.size, batch):
        u = users[lo : lo + batch]
        ids, _ = guard.recommend(u, platform.train[u], N=k)
        ids = np.atleast_2d(ids)[:, :k]
        truth = platform.held_out[u]
        rec.append(recall_at_k(ids, truth, k))
        hit = hit_matrix(ids, truth)
        hits.append(hit.sum(axis=1))
        adult_hit = hit & ~minors[np.where(ids >= 0, ids, 0)] & ~minors[u][:, None]
        adult.append(adult_hit.sum(axis=1))
    empty = np.empty(0)

    def whole(parts):
        return np.concatenate(parts).astype(np.int64) if parts else empty.astype(np.int64)

    return np.concatenate(rec) if rec else empty, whole(hits), whole(adult)


def context_marks(policy, n_accounts: int) -> np.ndarray | None:
    """Bool mask of the accounts the policy's viewing-context filters
    (:class:`~guardrails.filters.ContextRisk`) treat as risky contexts, or ``None``
    without such a filter over ``n_accounts`` candidates."""
    marked = None
    for f in getattr(policy, "filters", ()):
        if isinstance(f, gr.filters.ContextRisk):
            m = f.risky_candidates()
            marked = m if marked is None else marked | m
    if marked is None or marked.shape[0] != n_accounts:
        return None
    return marked


def context_shares(policy, platform) -> dict:
    """Share of ordinary accounts, and of the network's active accounts, that the policy's
    viewing-context filters (:class:`~guardrails.filters.ContextRisk`) treat as risky
    contexts: their profile suggests only the low-risk pool, and a new account that
    follows one gets only the pool. A collateral that recall and suppression do not see
    (they measure existing viewers' slates); NaN without such a filter."""
    marked = context_marks(policy, platform.n_accounts)
    if marked is None:
        return {"ordinary": float("nan"), "network": float("nan")}
    ordinary = platform.ordinary & platform.active & ~platform.vulnerable
    network = platform.network & platform.active
    return {
        "ordinary": float(marked[ordinary].mean()) if ordinary.any() else float("nan"),
        "network": float(marked[network].mean()) if network.any() else float("nan"),
    }


def profile_lists_kept(
    guard, bare, platform, marked=None, *, n_profiles: int = 200, N: int = 10, seed: int = 0
) -> dict:
    """How much of ordinary profiles' "suggested accounts" the guard keeps.

    For up to ``n_profiles`` ordinary active accounts (minors' accounts aside), the
    share of the unguarded ``similar_items`` list (``N`` accounts, the profile itself
    left out) that is still in the guarded list, averaged over profiles: over all of
    them, and over those ``marked`` (for example :func:`context_marks`: the profiles a
    policy treats as risky viewing contexts, whose lists are restricted to its pool).
    The collateral of the viewing-context rules on profile pages, which recall (read
    from ``recommend``) does not see.

    Returns
    -------
    dict
        ``all`` and ``marked`` (NaN when no sampled profile is marked), and ``n_marked``.
    """
    ordinary = np.flatnonzero(platform.ordinary & platform.active & ~platform.vulnerable)
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(ordinary, size=min(n_profiles, ordinary.size), replace=False))
    kept = np.full(items.size, np.nan)
    if items.size:
        lists = [np.atleast_2d(g.similar_items(items, N=N + 1)[0]) for g in (bare, guard)]
        for r, item in enumerate(items):
            base, got = (row[(row >= 0) & (row != item)][:N] for row in (lists[0][r], lists[1][r]))
            if base.size:
                kept[r] = np.isin(base, got).mean()
    on = np.zeros(items.size, dtype=bool) if marked is None else np.asarray(marked)[items]
    return {
        "all": float(np.nanmean(kept)) if np.isfinite(kept).any() else float("nan"),
        "marked": float(np.nanmean(kept[on])) if np.isfinite(kept[on]).any() else float("nan"),
        "n_marked": int(on.sum()),
    }


def new_account_recall(guard, bare, platform, users: np.ndarray, *, N: int = 10) -> dict:
    """Recall kept for accounts served as *new* accounts.

    Each of ``users`` is served from its own follows under an id beyond the model's
    users (a factor model folds its factors in from them, ``recalculate_user=True``),
    as a platform serves an account it has not trained on, by the guard and by the bare
    model; the ratio of mean recall@``N`` on the held-out follows. The audit's recall
    reads known users, whom the new-account rules (the viewing context's pool for the
    first follows, the new-account minors rule) never touch.

    Returns
    -------
    dict
        ``ratio`` (NaN without users or unguarded recall) and ``n_users``.
    """
    if users.size == 0:
        return {"ratio": float("nan"), "n_users": 0}
    rows = platform.train[users]
    ids = getattr(platform, "n_users", platform.n_accounts) + np.arange(users.size)
    recalc = isinstance(guard.model_, gr.FactorModel)
    truth = platform.held_out[users]
    rec = [
        float(
            np.nanmean(
                recall_at_k(g.recommend(ids, rows, N=N, recalculate_user=recalc)[0], truth, N)
            )
        )
        for g in (guard, bare)
    ]
    ratio = rec[0] / rec[1] if rec[1] > 0 else float("nan")
    return {"ratio": float(ratio), "n_users": int(users.size)}


def _suppressed_by_guard(guard, bare, platform, viewers: np.ndarray) -> dict:
    """Share of benign accounts the unguarded model serves an ordinary viewer (full-length
    slate) that the guard does not: item-item models score only the neighbours of a
    viewer's follows, so the unguarded slate, not the catalogue, is the reference.

    ``adults_mean`` is the same share over benign adults' accounts only: the part of the
    target that is not minors' accounts withheld from adult viewers by the minors' rules
    (a child-safety trade the audit reports rather than hides)."""
    n = platform.n_accounts
    benign = platform.benign
    adults = benign & ~platform.vulnerable
    shares, adult_shares = [], []
    for u in viewers:
        row = platform.train[int(u)]
        served = []
        for g in (bare, guard):
            ids, _ = g.recommend(int(u), row, N=n, filter_already_liked_items=False)
            m = np.zeros(n, dtype=bool)
            m[ids[ids >= 0]] = True
            served.append(m)
        base = benign & served[0]
        shares.append((base & ~served[1]).sum() / max(int(base.sum()), 1))
        base_a = adults & served[0]
        adult_shares.append((base_a & ~served[1]).sum() / max(int(base_a.sum()), 1))
    s = np.asarray(shares, dtype=np.float64)
    a = np.asarray(adult_shares, dtype=np.float64)
    return {
        "mean": float(s.mean()) if s.size else 0.0,
        "max": float(s.max()) if s.size else 0.0,
        "adults_mean": float(a.mean()) if a.size else 0.0,
    }


def family_walks(
    guard, platform, *, seed: int, n_walkers: int, n_steps: int, N: int
) -> dict[str, WalkResult]:
    """The audit's walks on one platform: view one (any seller, unknown sellers), follow a
    handful (any, unknown), search start, and the suggestions of existing buyers."""
    kw: dict[str, Any] = {"n_walkers": n_walkers, "n_steps": n_steps, "N": N}
    return {
        "view_one": view_one(guard, platform, n_views=max(n_walkers, 50), N=N, seed=seed),
        "view_one_unknown": view_one(
            guard, platform, n_views=max(n_walkers, 50), N=N, seed=seed + 1, unknown_only=True
        ),
        "follow_handful": follow_handful(guard, platform, seed=seed, **kw),
        "follow_handful_unknown": follow_handful(
            guard, platform, seed=seed + 1, unknown_only=True, **kw
        ),
        "search_start": search_start(guard, platform, seed=seed, **kw),
        "risky_viewers": risky_viewers(guard, platform, n_viewers=200, N=N, seed=seed),
    }


def evaluate_family_platform(
    platform: FamilyPlatform,
    spec: dict,
    *,
    policy_factory: Callable | None = None,
    n_walkers: int = 20,
    n_steps: int = 6,
    N: int = 10,
    num_threads: int = 2,
) -> dict:
    """Train ``spec`` on ``platform`` and measure the guarded policy against the targets.

    Parameters
    ----------
    platform : FamilyPlatform
    spec : dict
        A model draw (:func:`~guardrails.audit.family.draw_model`).
    policy_factory : callable, optional, keyword-only
        ``policy_factory(platform) -> Policy`` from what the platform knows (or
        ``policy_factory(platform, model=model)`` when it takes the model); default
        :func:`family_default_policy`.
    n_walkers, n_steps, N, num_threads : int, keyword-only

    Returns
    -------
    dict
        ``values`` (one number per target), ``walks`` (worst mean network share per
        walk), ``quality`` (recall with and without the guard on up to
        :data:`RECALL_USERS` evaluation users, their held-out follows, the hits in the top
        ``N`` with and without the guard, and the paired bootstrap interval of the recall
        ratio, :func:`recall_ratio_interval`), ``seconds``.
    """
    factory = policy_factory or family_default_policy
    seed = int(platform.seed % (2**31))
    t0 = time.perf_counter()
    model = train_family_model(platform, spec, num_threads=num_threads, seed=seed)
    t1 = time.perf_counter()
    # A factory that takes the model gets it (the embedding signal reads its factors).
    params = inspect.signature(factory).parameters
    policy = factory(platform, model=model) if "model" in params else factory(platform)
    is_mf = spec["kind"] != "item"
    contexts = context_shares(policy, platform)
    # A factor model's Guard gets the training followers as its backfill, as a
    # deployment would (the Guard's docs): it ranks the rows the policy leaves with no
    # query of their own, and nothing else (the unguarded Guard has no such rows).
    # Item-item Guards get none: a risky profile's list stays empty, and the unguarded
    # slate (reachable accounts only) stays the reference of benign suppression.
    guard = audit_guard(model, policy, platform, user_policy="same" if is_mf else None)
    bare = gr.Guard(model)
    t2 = time.perf_counter()
    walks = family_walks(guard, platform, seed=seed, n_walkers=n_walkers, n_steps=n_steps, N=N)
    prof = view_profiles(guard, platform, n_views=max(n_walkers, 50), N=N, seed=seed + 2)
    worst = {k: float(w.network_share.mean(axis=0).max()) for k, w in walks.items()}
    minors_by_walk = {k: float(w.vulnerable_share.max()) for k, w in walks.items()}
    worst.pop("risky_viewers")
    if prof["similar_users"] is not None:
        worst["similar_users"] = prof["similar_users"]["mean"]
    users = evaluation_users(platform, max_users=RECALL_USERS, seed=seed)
    rec_g, hits_g, adult_g = _recall_hits(guard, platform, users, N)
    rec_b, hits_b, adult_b = _recall_hits(bare, platform, users, N)
    ci = recall_ratio_interval(rec_g, rec_b, n_boot=_BOOT["n"], level=_BOOT["level"], seed=seed)
    viewers = ordinary_viewers(platform, n=20, seed=seed)
    sup = _suppressed_by_guard(guard, bare, platform, viewers)
    lists = profile_lists_kept(
        guard, bare, platform, context_marks(policy, platform.n_accounts), N=N, seed=seed
    )
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(users, size=min(NEW_ACCOUNT_USERS, users.size), replace=False))
    new = new_account_recall(guard, bare, platform, sample, N=N)
    minors = max(
        walks[k].vulnerable_share.max()
        for k in ("follow_handful", "follow_handful_unknown", "search_start", "risky_viewers")
    )
    values = {
        "exposure": max(worst.values()),
        "self_shown": prof["self_shown"],
        "minors_to_risky": float(minors),
        "recall_ratio": ci["ratio"],
        "benign_suppressed": sup["mean"],
    }
    return {
        "values": values,
        "walks": worst,
        "minors_by_walk": minors_by_walk,
        "quality": {
            "recall": float(np.nanmean(rec_g)) if users.size else float("nan"),
            "recall_unguarded": float(np.nanmean(rec_b)) if users.size else float("nan"),
            "n_users": int(users.size),
            "n_held_out": int(platform.held_out[users].nnz),
            "hits": int(hits_g.sum()),
            "hits_unguarded": int(hits_b.sum()),
            # Hits kept on adult pairs only: what the guard costs outside the minors'
            # rules (which trade minors-related hits for the minors' safety).
            "hits_adults": int(adult_g.sum()),
            "hits_adults_unguarded": int(adult_b.sum()),
            "recall_ratio_adults": (
                float(adult_g.sum() / adult_b.sum()) if adult_b.sum() else float("nan")
            ),
            "contexts_ordinary": contexts["ordinary"],
            "contexts_network": contexts["network"],
            # Ordinary profiles' "suggested accounts" kept, all and risky contexts.
            "profiles_kept": lists["all"],
            "profiles_kept_contexts": lists["marked"],
            # Recall kept for a sample of them served as new accounts.
            "recall_ratio_new": new["ratio"],
            # benign_suppressed over adults' accounts only (minors' accounts aside).
            "benign_suppressed_adults": sup["adults_mean"],
            "n_users_new": new["n_users"],
            "recall_ratio_low": ci["low"],
            "recall_ratio_high": ci["high"],
            "recall_ratio_level": ci["level"],
        },
        "seconds": {
            "train": t1 - t0,
            "policy": t2 - t1,
            "evaluate": time.perf_counter() - t2,
        },
    }


# Over 120 lines with its numpydoc docstring; the body is one loop over platforms and
# model kinds and the summary.
def run_family(
    n_platforms: int,
    *,
    split: str = "evaluation",
    size: str = "medium",
    kinds: Sequence[str] = MODEL_KINDS,
    start: int = 0,
    indices: Sequence[int] | None = None,
    policy_factory: Callable | None = None,
    n_walkers: int = 20,
    n_steps: int = 6,
    N: int = 10,
    num_threads: int = 2,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Audit one guard configuration on ``n_platforms`` platforms of the family.

    Parameters
    ----------
    n_platforms : int
    split : {"evaluation", "tuning"}, keyword-only
        Which seed stream (:func:`~guardrails.audit.family.family_seeds`). Report on
        ``"evaluation"``; tune only on ``"tuning"``.
    size : {"small", "medium", "large", "any"}, keyword-only
        Account-count tier.
    kinds : sequence of {"als", "bpr", "item"}, keyword-only
    start : int, keyword-only
        Skip the first ``start`` seeds of the stream.
    indices : sequence of int, optional, keyword-only
        Instead of ``n_platforms`` seeds from ``start``, the seeds at these positions of
        the stream (for example the hardest tuning platforms); ``n_platforms`` must then
        equal their number.
    policy_factory : callable, optional, keyword-only
        ``policy_factory(platform) -> Policy`` (or with ``model=``); default
        :func:`family_default_policy`: ``default_policy`` from what the platform knows
        and the model's item space.
    n_walkers, n_steps, N, num_threads : int, keyword-only
    log : callable, optional, keyword-only
        ``log(message)``: one line per platform and kind.

    Returns
    -------
    dict
        ``settings``, ``rows`` (one per platform and kind), ``distribution`` (per
        target: median, p90, worst), ``targets`` (per target: passed, worst, breaking
        rows) and ``seconds``.
    """
    where = "run_family"
    n_platforms = check_int(n_platforms, "n_platforms", where)
    split = check_choice(split, "split", where, ("evaluation", "tuning"))
    size = check_choice(size, "size", where, tuple(SIZES))
    kinds = [check_choice(k, "kinds", where, MODEL_KINDS) for k in kinds]
    if not kinds:
        raise fail("kinds", where, f"a non-empty sequence of {MODEL_KINDS}", kinds)
    say = log or (lambda _m: None)
    if indices is None:
        seeds = family_seeds(n_platforms, split=split, start=start)
    else:
        idx = [check_int(i, "indices", where, low=0) for i in indices]
        if len(idx) != n_platforms:
            raise fail("indices", where, f"{n_platforms} positions (n_platforms)", indices)
        seeds = [family_seeds(1, split=split, start=i)[0] for i in idx]
    t_all = time.perf_counter()
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        platform = make_family_platform(seed, size=size)
        t_build = time.perf_counter() - t0
        summ = platform.summary()
        for kind in kinds:
            spec = draw_model(seed, kind)
            res = evaluate_family_platform(
                platform,
                spec,
                policy_factory=policy_factory,
                n_walkers=n_walkers,
                n_steps=n_steps,
                N=N,
                num_threads=num_threads,
            )
            res["seconds"]["platform"] = t_build
            res["seconds"]["total"] = t_build + sum(
                v for k, v in res["seconds"].items() if k not in ("platform", "total")
            )
            row = {
                "seed": seed,
                "kind": kind,
                "model": spec,
                "platform": {
                    k: summ[k]
                    for k in (
                        "n_accounts",
                        "n_sellers_active",
                        "n_buyers_active",
                        "n_known_seeds",
                        "n_subnetworks",
                        "unknown_subnetworks",
                        "n_recreated",
                        "n_minors",
                    )
                },
                "config": None if platform.config is None else platform.config.to_dict(),
                **res,
            }
            rows.append(row)
            v, q = res["values"], res["quality"]
            say(
                f"{seed} {kind:<4} n={summ['n_accounts']:>6}: exposure {100 * v['exposure']:.1f}% "
                f"self {100 * v['self_shown']:.0f}% minors {100 * v['minors_to_risky']:.0f}% "
                f"recall x{v['recall_ratio']:.3f} [{q['recall_ratio_low']:.3f}, "
                f"{q['recall_ratio_high']:.3f}] ({q['hits']}/{q['hits_unguarded']} hits) "
                f"suppressed {100 * v['benign_suppressed']:.2f}% "
                f"({res['seconds']['total']:.1f}s)"
            )
    report = {
        "library_version": gr.__version__,
        "family_version": FAMILY_VERSION,
        "settings": {
            "n_platforms": n_platforms,
            "split": split,
            "size": size,
            "accounts_range": list(SIZES[size]),
            "kinds": kinds,
            "start": start,
            "indices": None if indices is None else [int(i) for i in indices],
            "n_walkers": n_walkers,
            "n_steps": n_steps,
            "N": N,
            "policy": "default_policy"
            if policy_factory is None
            else getattr(policy_factory, "__name__", "custom"),
            "held_out": {
                "share": HELD_OUT_SHARE,
                "min_follows": HELD_OUT_MIN_FOLLOWS,
                "max_users": RECALL_USERS,
            },
            "recall_interval": {
                "method": "paired bootstrap over evaluation users, seeded by platform",
                **_BOOT,
            },
        },
        "rows": rows,
        "seconds": time.perf_counter() - t_all,
    }
    report["distribution"] = family_distribution(rows)
    report["targets"] = family_targets(report)
    return report
