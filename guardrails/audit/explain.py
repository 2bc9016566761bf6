"""Explain, on the synthetic platform, why the guard hides or demotes an account."""

from __future__ import annotations

import numpy as np

from .._validation import check_int
from .guards import (
    audit_guard,
    default_guard_policy,
    default_policy_available,
    primitive_policy,
    seed_risk,
    train_model,
)
from .platform import ROLE_NAMES, make_platform

__all__ = ["explain_account"]


def explain_account(
    account: int,
    *,
    viewer: int | None = None,
    n_accounts: int = 5000,
    seed: int = 0,
    scenario: str = "default",
) -> str:
    """A readable explanation of what the audit's guarded policy does to ``account``.

    Parameters
    ----------
    account : int
        Candidate account on the platform ``make_platform(seed=seed, n_accounts=n_accounts,
        scenario=scenario)``.
    viewer : int, optional, keyword-only
        The viewing account (its follows are passed as the call would pass them).
    n_accounts, seed, scenario : keyword-only
        The platform.

    Returns
    -------
    str
        The account's ground-truth role (which the guard never sees), whether it is a known
        seed, its propagated risk, and the guard's explanation.
    """
    platform = make_platform(seed=seed, n_accounts=n_accounts, scenario=scenario)
    n = platform.n_accounts
    account = check_int(account, "account", "explain_account", low=0, high=n - 1)
    if viewer is not None:
        viewer = check_int(viewer, "viewer", "explain_account", low=0, high=n - 1)
    model = train_model(platform, factors=16, iterations=5, seed=seed)
    risk = seed_risk(platform.train, platform.known_seeds)
    if default_policy_available():
        policy, label = default_guard_policy(platform), "default_policy"
    else:
        policy, label = primitive_policy(platform, risk), "primitive"
    guard = audit_guard(model, policy, platform)
    lines = [
        f"account {account}: role {ROLE_NAMES[platform.role[account]]} "
        "(ground truth, never shown to the guard), "
        f"community {platform.community[account]}, "
        f"{'active' if platform.active[account] else 'deactivated'}",
        f"known seed: {bool(np.isin(account, platform.known_seeds))}; "
        f"seed risk (personalised PageRank from the known seeds): {float(risk[account]):.4f}",
    ]
    if viewer is not None:
        lines.append(
            f"viewer {viewer}: role {ROLE_NAMES[platform.role[viewer]]}, "
            f"follows {platform.train[viewer].nnz} accounts"
        )
    explain = getattr(guard, "explain", None)
    if explain is None:
        lines.append("this version of the Guard has no explain(); showing the slate check only")
        rows = None if viewer is None else platform.train[viewer]
        ids, _ = guard.recommend(
            viewer if viewer is not None else n,
            rows if rows is not None else platform.train[0] * 0,
            N=n,
            filter_already_liked_items=False,
            recalculate_user=viewer is None,
        )
        lines.append(f"served at all: {bool(np.isin(account, ids))}")
    else:
        rows = None if viewer is None else platform.train[viewer]
        lines.append(f"policy {label} (version {guard.policy_version}):")
        lines.append(str(explain(viewer, account, user_items=rows, surface="suggested_accounts")))
    return "\n".join(lines)
