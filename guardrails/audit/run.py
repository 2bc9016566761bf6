"""The audit: platforms, model, guard configurations, walks, metrics, sweep and targets.

:func:`run_audit` returns one JSON-ready dict with every number; :mod:`guardrails.audit.report`
prints it as a table and draws the plots.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import numpy as np

import guardrails as gr

from .._validation import check_choice, check_int, fail
from .guards import (
    default_guard_policy,
    default_policy_available,
    policy_file_guard_policy,
    primitive_policy,
    seed_risk,
    train_model,
)
from .metrics import evaluation_users, ordinary_viewers, ranking_quality, reach, suppressed_share
from .platform import MINOR, Platform, make_platform
from .sweep import DEFAULT_THRESHOLDS, DEFAULT_WEIGHTS, pareto_front, run_sweep
from .walks import follow_handful, risky_viewers, search_start, view_one

__all__ = [
    "run_audit",
    "evaluate_config",
    "check_targets",
    "TARGETS",
    "SCENARIOS",
    "DEFAULT_ACCOUNTS",
]

#: Scenarios of :func:`make_platform` the audit runs.
SCENARIOS = ("default", "stale")
#: Accounts of the default audit platform (about two minutes on two cores, sweep included).
DEFAULT_ACCOUNTS = 30_000

#: The issue's targets: (key, description, threshold).
TARGETS = {
    "flood_reproduced": "unguarded follow-a-handful: mean network share reaches 0.5 within 3 steps",
    "guarded_exposure": "guarded: mean network share <= 1% at every step of every walk",
    "risky_viewers_no_minors": (
        "guarded: risky viewers (test accounts in the walks, buyers) get no minors' accounts"
    ),
    "recall_ratio": "guarded: benign recall@10 >= 0.98 of unguarded",
    "benign_suppressed": "guarded: benign accounts suppressed for ordinary viewers <= 1%",
}
_WALKS_EXPOSURE = ("view_one", "follow_handful", "follow_handful_unknown", "search_start")
_WALKS_RISKY = ("follow_handful", "follow_handful_unknown", "search_start", "risky_viewers")


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, leave=False, unit="step", disable=None
    )  # off when not a terminal


def evaluate_config(
    guard,
    platform: Platform,
    *,
    users: np.ndarray,
    viewers: np.ndarray,
    youth_viewers: np.ndarray,
    n_walkers: int = 20,
    n_steps: int = 6,
    N: int = 10,
    seed: int = 0,
    bar=None,
) -> dict:
    """Every walk and metric of one guard on one platform, JSON-ready."""
    walks = {
        "view_one": view_one(guard, platform, n_views=max(n_walkers, 50), N=N, seed=seed),
        "follow_handful": follow_handful(
            guard, platform, n_walkers=n_walkers, n_steps=n_steps, N=N, seed=seed, progress=bar
        ),
        "follow_handful_unknown": follow_handful(
            guard,
            platform,
            n_walkers=n_walkers,
            n_steps=n_steps,
            N=N,
            seed=seed + 1,
            unknown_only=True,
            progress=bar,
        ),
        "search_start": search_start(
            guard, platform, n_walkers=n_walkers, n_steps=n_steps, N=N, seed=seed, progress=bar
        ),
        "risky_viewers": risky_viewers(guard, platform, n_viewers=200, N=N, seed=seed),
    }
    out = {"walks": {k: w.summary() for k, w in walks.items()}}
    out["quality"] = ranking_quality(guard, platform, users, k=N)
    out["suppressed"] = suppressed_share(guard, platform, viewers)
    out["minor_reach"] = reach(guard, platform, youth_viewers, platform.vulnerable, k=N)
    return out


def _guards(
    model, platform: Platform, risk: np.ndarray, policy_path, primitive_knobs: dict
) -> dict:
    policies = {"unguarded": None, "primitive": primitive_policy(platform, risk, **primitive_knobs)}
    if default_policy_available():
        policies["default_policy"] = default_guard_policy(platform)
    if policy_path is not None:
        policies["policy_file"] = policy_file_guard_policy(policy_path, platform, risk)
    return {k: gr.Guard(model, p) for k, p in policies.items()}


def run_audit(
    *,
    n_accounts: int = DEFAULT_ACCOUNTS,
    seeds: Sequence[int] = (0,),
    scenarios: Sequence[str] = SCENARIOS,
    policy_path=None,
    sweep: bool = True,
    n_walkers: int = 20,
    n_steps: int = 6,
    N: int = 10,
    num_threads: int = 2,
    progress: bool = True,
    log=None,
    platform_kwargs: dict | None = None,
    model_kwargs: dict | None = None,
    primitive_knobs: dict | None = None,
) -> dict:
    """Run the audit and return every number as a JSON-ready dict.

    Parameters
    ----------
    n_accounts : int, keyword-only
        Accounts per synthetic platform.
    seeds : sequence of int, keyword-only
        One platform (per scenario) per seed.
    scenarios : sequence of {"default", "stale"}, keyword-only
    policy_path : str or PathLike, optional, keyword-only
        A TOML policy (:func:`guardrails.load_policy`) audited as ``"policy_file"``; it
        becomes the guarded configuration the targets are checked on.
    sweep : bool, keyword-only
        Run the trade-off sweep on the first seed's default platform.
    n_walkers, n_steps, N : int, keyword-only
        Test accounts per walk, suggestion rounds, slate length.
    num_threads : int, keyword-only
        ALS training threads.
    progress : bool, keyword-only
        Progress bars (tqdm) on long steps.
    log : callable, optional, keyword-only
        ``log(message)`` for one line per stage.
    platform_kwargs, model_kwargs, primitive_knobs : dict, optional, keyword-only
        Passed to :func:`make_platform`, :func:`train_model` and :func:`primitive_policy`.

    Returns
    -------
    dict
        ``settings``, ``runs`` (one per seed and scenario), ``sweep``, ``guarded_config``
        and ``targets``.
    """
    where = "run_audit"
    n_accounts = check_int(n_accounts, "n_accounts", where, low=500)
    seeds = [check_int(s, "seeds", where, low=0) for s in seeds]
    if not seeds:
        raise fail("seeds", where, "a non-empty sequence of ints in [0, inf)", seeds)
    scenarios = [check_choice(s, "scenarios", where, SCENARIOS) for s in scenarios]
    if not scenarios:
        raise fail("scenarios", where, f"a non-empty sequence of {SCENARIOS}", scenarios)
    n_walkers = check_int(n_walkers, "n_walkers", where)
    n_steps = check_int(n_steps, "n_steps", where)
    N = check_int(N, "N", where)
    say = log or (lambda _msg: None)
    primitive_knobs = {"threshold": 0.02, "weight": 4.0, **(primitive_knobs or {})}
    t_start = time.perf_counter()
    runs, sweep_out = [], None
    for seed in seeds:
        for scenario in scenarios:
            t0 = time.perf_counter()
            platform = make_platform(
                seed=seed, n_accounts=n_accounts, scenario=scenario, **(platform_kwargs or {})
            )
            t1 = time.perf_counter()
            model = train_model(
                platform, num_threads=num_threads, seed=seed, **(model_kwargs or {})
            )
            t2 = time.perf_counter()
            risk = seed_risk(platform.train, platform.known_seeds)
            guards = _guards(model, platform, risk, policy_path, primitive_knobs)
            t3 = time.perf_counter()
            say(
                f"seed {seed}, {scenario}: {platform.n_accounts} accounts, {platform.follows.nnz} follows; "
                f"platform {t1 - t0:.1f}s, ALS {t2 - t1:.1f}s, policies {t3 - t2:.1f}s"
            )
            users = evaluation_users(platform, seed=seed)
            viewers = ordinary_viewers(platform, n=20, seed=seed)
            follows_minor = (
                np.asarray(platform.train[:, platform.role == MINOR].sum(axis=1)).ravel() > 0
            )
            youth = np.flatnonzero(platform.ordinary & follows_minor)
            if youth.size > 500:
                youth = np.sort(np.random.default_rng(seed).choice(youth, 500, replace=False))
            configs = {}
            per_config = 3 * n_steps
            with _bar(per_config * len(guards), f"walks seed={seed} {scenario}", progress) as bar:
                for name, guard in guards.items():
                    configs[name] = evaluate_config(
                        guard,
                        platform,
                        users=users,
                        viewers=viewers,
                        youth_viewers=youth,
                        n_walkers=n_walkers,
                        n_steps=n_steps,
                        N=N,
                        seed=seed,
                        bar=bar,
                    )
            base = configs["unguarded"]
            for c in configs.values():
                q, b = c["quality"], base["quality"]
                q["recall_ratio"] = q["recall"] / b["recall"] if b["recall"] else float("nan")
                q["ndcg_ratio"] = q["ndcg"] / b["ndcg"] if b["ndcg"] else float("nan")
                r, rb = c["minor_reach"], base["minor_reach"]
                r["lost"] = 1.0 - r["slots"] / rb["slots"] if rb["slots"] else 0.0
            runs.append(
                {
                    "seed": seed,
                    "scenario": scenario,
                    "platform": platform.summary(),
                    "seconds": {
                        "platform": t1 - t0,
                        "train": t2 - t1,
                        "policies": t3 - t2,
                        "evaluate": time.perf_counter() - t3,
                    },
                    "configs": configs,
                }
            )
            if sweep and sweep_out is None and scenario == "default":
                ts = time.perf_counter()
                n_points = (
                    1
                    + len(DEFAULT_THRESHOLDS) * len(DEFAULT_WEIGHTS)
                    + (2 if default_policy_available() else 0)
                )
                with _bar(n_points, "sweep", progress) as bar:
                    points = run_sweep(
                        model,
                        platform,
                        risk,
                        users,
                        seed=seed,
                        progress=None if bar is None else (lambda: bar.update(1)),
                    )
                sweep_out = {
                    "seed": seed,
                    "scenario": scenario,
                    "points": [p.to_dict() for p in points],
                    "pareto": [p.to_dict() for p in pareto_front(points)],
                    "seconds": time.perf_counter() - ts,
                }
                say(f"sweep: {len(points)} configurations in {sweep_out['seconds']:.1f}s")
    guarded = _guarded_name(runs[0]["configs"])
    report = {
        "library_version": gr.__version__,
        "settings": {
            "n_accounts": n_accounts,
            "seeds": seeds,
            "scenarios": scenarios,
            "n_walkers": n_walkers,
            "n_steps": n_steps,
            "N": N,
            "num_threads": num_threads,
            "policy_path": None if policy_path is None else str(policy_path),
            "primitive_knobs": primitive_knobs,
            "default_policy_available": default_policy_available(),
        },
        "guarded_config": guarded,
        "runs": runs,
        "sweep": sweep_out,
        "seconds": time.perf_counter() - t_start,
    }
    report["targets"] = check_targets(report)
    return report


def _guarded_name(configs: dict) -> str:
    for name in ("policy_file", "default_policy", "primitive"):
        if name in configs:
            return name
    return "unguarded"  # pragma: no cover - primitive is always present


def check_targets(report: dict, guarded: str | None = None) -> list[dict]:
    """The issue's targets on every run of ``report``; one entry per target and run."""
    guarded = guarded or report["guarded_config"]
    out = []
    for run in report["runs"]:
        tag = f"seed={run['seed']} {run['scenario']}"
        un, g = run["configs"]["unguarded"], run["configs"][guarded]
        s2h = un["walks"]["follow_handful"]["mean_share_curve_steps_to_half"]
        out.append(
            _target(
                "flood_reproduced",
                tag,
                "unguarded",
                s2h,
                s2h is not None and s2h <= 3,
                "<= 3 steps",
            )
        )
        worst = max(max(g["walks"][w]["network_share_mean"]) for w in _WALKS_EXPOSURE)
        out.append(_target("guarded_exposure", tag, guarded, worst, worst <= 0.01, "<= 0.01"))
        vul = max(g["walks"][w]["worst_vulnerable_share"] for w in _WALKS_RISKY)
        out.append(
            _target("risky_viewers_no_minors", tag, guarded, vul, vul == 0.0, "== 0 (worst slate)")
        )
        ratio = g["quality"]["recall_ratio"]
        out.append(_target("recall_ratio", tag, guarded, ratio, ratio >= 0.98, ">= 0.98"))
        sup = g["suppressed"]["mean"]
        out.append(_target("benign_suppressed", tag, guarded, sup, sup <= 0.01, "<= 0.01"))
    return out


def _target(key: str, where: str, config: str, value, passed: bool, bound: str) -> dict:
    return {
        "target": key,
        "description": TARGETS[key],
        "run": where,
        "config": config,
        "value": value,
        "bound": bound,
        "passed": bool(passed),
    }
