"""The audit: platforms, model, guard configurations, walks, metrics, sweep and targets.

:func:`run_audit` returns one JSON-ready dict with every number; :mod:`guardrails.audit.report`
prints it as a table and draws the plots.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import guardrails as gr

from .._validation import check_choice, check_float, check_int, fail
from .guards import (
    als_params,
    audit_guard,
    default_guard_policy,
    default_policy_available,
    policy_file_guard_policy,
    primitive_policy,
    seed_risk,
    train_model,
)
from .metrics import (
    evaluation_users,
    ordinary_viewers,
    ranking_quality,
    reach,
    recall_ratio_interval,
    suppressed_share,
)
from .platform import MINOR, Platform, make_platform
from .sweep import DEFAULT_THRESHOLDS, DEFAULT_WEIGHTS, pareto_front, run_sweep
from .walks import follow_handful, risky_viewers, search_start, view_one

__all__ = [
    "run_audit",
    "audit_platform",
    "failed_targets",
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
    per_user: bool = False,
) -> dict:
    """Every walk and metric of one guard on one platform, JSON-ready (with
    ``per_user``, ``quality`` also holds the array ``recall_per_user``)."""
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
        "risky_viewers": risky_viewers(guard, platform, n_viewers=200, N=N, seed=seed),
    }
    if getattr(platform, "has_search", True):  # own data without flagged terms: no search
        walks["search_start"] = search_start(
            guard, platform, n_walkers=n_walkers, n_steps=n_steps, N=N, seed=seed, progress=bar
        )
    out = {"walks": {k: w.summary() for k, w in walks.items()}}
    out["quality"] = ranking_quality(guard, platform, users, k=N, per_user=per_user)
    out["suppressed"] = suppressed_share(guard, platform, viewers)
    out["minor_reach"] = reach(guard, platform, youth_viewers, platform.vulnerable, k=N)
    return out


def _policies(platform, risk: np.ndarray, policy_path, primitive_knobs: dict) -> dict:
    """The policy of every audited configuration, by name (``None``: unguarded)."""
    policies = {"unguarded": None, "primitive": primitive_policy(platform, risk, **primitive_knobs)}
    if default_policy_available():
        policies["default_policy"] = default_guard_policy(platform)
    if policy_path is not None:
        policies["policy_file"] = policy_file_guard_policy(policy_path, platform, risk)
    return policies


def _walk_args(where: str, n_walkers, n_steps, N, log, primitive_knobs) -> tuple:
    """The walk sizes checked, the ``log`` callable and the primitive policy's knobs."""
    return (
        check_int(n_walkers, "n_walkers", where),
        check_int(n_steps, "n_steps", where),
        check_int(N, "N", where),
        log or (lambda _msg: None),
        {"threshold": 0.02, "weight": 4.0, **(primitive_knobs or {})},
    )


def _evaluate_configs(
    guards,
    platform,
    *,
    walks_per_step: int,
    label: str,
    progress: bool,
    n_steps: int,
    pairs: dict | None = None,
    **kw,
) -> dict:
    """Every guard's walks and metrics, with quality and minor reach as ratios to unguarded.

    ``kw`` goes to :func:`evaluate_config` as it is; ``walks_per_step`` sizes the progress
    bar (the search walk runs only where the platform has flagged terms). ``pairs``
    (optional) collects each configuration's per-user recalls with and without the guard,
    for :func:`_pooled_recall`; they stay out of the returned, JSON-ready dict.
    """
    configs = {}
    with _bar(walks_per_step * n_steps * len(guards), label, progress) as bar:
        for name, guard in guards.items():
            configs[name] = evaluate_config(
                guard, platform, n_steps=n_steps, bar=bar, per_user=True, **kw
            )
    base = configs["unguarded"]
    for c in configs.values():
        q, b = c["quality"], base["quality"]
        q["recall_ratio"] = q["recall"] / b["recall"] if b["recall"] else float("nan")
        # How far the sample lets the ratio be read: a paired bootstrap over the same
        # users (a few hundred users and a few dozen held-out hits on a small platform).
        ci = recall_ratio_interval(
            q["recall_per_user"], b["recall_per_user"], seed=int(kw.get("seed", 0))
        )
        q["recall_ratio_low"], q["recall_ratio_high"] = ci["low"], ci["high"]
        q["recall_ratio_level"] = ci["level"]
        q["ndcg_ratio"] = q["ndcg"] / b["ndcg"] if b["ndcg"] else float("nan")
        r, rb = c["minor_reach"], base["minor_reach"]
        r["lost"] = 1.0 - r["slots"] / rb["slots"] if rb["slots"] else 0.0
    base_users = base["quality"]["recall_per_user"]
    for name, c in configs.items():  # per-user arrays stay out of the JSON report
        mine = c["quality"].pop("recall_per_user")
        if pairs is not None:
            pairs.setdefault(name, []).append((mine, base_users))
    return configs


def _pooled_recall(pairs: dict) -> dict:
    """Recall kept per configuration over the users of every run pooled (one paired
    bootstrap), JSON-ready: the reading a miss repeated on every seed cannot escape."""
    out = {}
    for name, runs in pairs.items():
        g = np.concatenate([a for a, _ in runs])
        b = np.concatenate([u for _, u in runs])
        ci = recall_ratio_interval(g, b)
        out[name] = {
            "ratio": ci["ratio"],
            "low": ci["low"],
            "high": ci["high"],
            "level": ci["level"],
            "n_users": ci["n_users"],
            "n_runs": len(runs),
        }
    return out


def _sweep(model, platform, risk: np.ndarray, users: np.ndarray, *, seed: int, progress, say):
    """The trade-off sweep on one platform, JSON-ready."""
    t0 = time.perf_counter()
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
    out = {
        "seed": seed,
        "scenario": platform.scenario,
        "points": [p.to_dict() for p in points],
        "pareto": [p.to_dict() for p in pareto_front(points)],
        "seconds": time.perf_counter() - t0,
    }
    say(f"sweep: {len(points)} configurations in {out['seconds']:.1f}s")
    return out


def _report(settings: dict, runs: list, sweep, t_start: float, **extra) -> dict:
    """The report of ``runs``: settings (the policy's own appended), the guarded
    configuration, ``extra`` sections, the sweep and the total time."""
    return {
        "library_version": gr.__version__,
        "settings": {**settings, "default_policy_available": default_policy_available()},
        **extra,
        "guarded_config": _guarded_name(runs[0]["configs"]),
        "runs": runs,
        "sweep": sweep,
        "seconds": time.perf_counter() - t_start,
    }


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
    n_walkers, n_steps, N, say, primitive_knobs = _walk_args(
        where, n_walkers, n_steps, N, log, primitive_knobs
    )
    t_start = time.perf_counter()
    runs, sweep_out = [], None
    pairs: dict = {}
    for seed in seeds:
        for scenario in scenarios:
            run, fitted = _synthetic_run(
                seed,
                scenario,
                pairs=pairs,
                n_accounts=n_accounts,
                policy_path=policy_path,
                walk={"n_walkers": n_walkers, "n_steps": n_steps, "N": N},
                num_threads=num_threads,
                progress=progress,
                say=say,
                platform_kwargs=platform_kwargs or {},
                model_kwargs=model_kwargs or {},
                primitive_knobs=primitive_knobs,
            )
            runs.append(run)
            if sweep and sweep_out is None and scenario == "default":
                sweep_out = _sweep(*fitted, seed=seed, progress=progress, say=say)
    settings = {
        "n_accounts": n_accounts,
        "seeds": seeds,
        "scenarios": scenarios,
        "n_walkers": n_walkers,
        "n_steps": n_steps,
        "N": N,
        "num_threads": num_threads,
        "policy_path": None if policy_path is None else str(policy_path),
        "primitive_knobs": primitive_knobs,
    }
    report = _report(settings, runs, sweep_out, t_start, recall_pooled=_pooled_recall(pairs))
    report["targets"] = check_targets(report)
    return report


def _synthetic_run(
    seed: int,
    scenario: str,
    *,
    n_accounts: int,
    policy_path,
    walk: dict,
    num_threads: int,
    progress: bool,
    say,
    platform_kwargs: dict,
    model_kwargs: dict,
    primitive_knobs: dict,
    pairs: dict | None = None,
) -> tuple[dict, tuple]:
    """One run of :func:`run_audit`: platform, model, guards, walks and metrics.

    Returns the run and what the sweep reads: ``(model, platform, risk, users)``.
    """
    t0 = time.perf_counter()
    platform = make_platform(seed=seed, n_accounts=n_accounts, scenario=scenario, **platform_kwargs)
    t1 = time.perf_counter()
    model = train_model(platform, num_threads=num_threads, seed=seed, **model_kwargs)
    t2 = time.perf_counter()
    risk = seed_risk(platform.train, platform.known_seeds)
    policies = _policies(platform, risk, policy_path, primitive_knobs)
    guards = {k: audit_guard(model, p, platform) for k, p in policies.items()}
    t3 = time.perf_counter()
    say(
        f"seed {seed}, {scenario}: {platform.n_accounts} accounts, {platform.follows.nnz} follows; "
        f"platform {t1 - t0:.1f}s, ALS {t2 - t1:.1f}s, policies {t3 - t2:.1f}s"
    )
    users = evaluation_users(platform, seed=seed)
    follows_minor = np.asarray(platform.train[:, platform.role == MINOR].sum(axis=1)).ravel() > 0
    youth = np.flatnonzero(platform.ordinary & follows_minor)
    if youth.size > 500:
        youth = np.sort(np.random.default_rng(seed).choice(youth, 500, replace=False))
    configs = _evaluate_configs(
        guards,
        platform,
        users=users,
        viewers=ordinary_viewers(platform, n=20, seed=seed),
        youth_viewers=youth,
        seed=seed,
        walks_per_step=3,
        label=f"walks seed={seed} {scenario}",
        progress=progress,
        pairs=pairs,
        **walk,
    )
    run = {
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
    return run, (model, platform, risk, users)


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
        worst = max(
            max(g["walks"][w]["network_share_mean"]) for w in _WALKS_EXPOSURE if w in g["walks"]
        )
        out.append(_target("guarded_exposure", tag, guarded, worst, worst <= 0.01, "<= 0.01"))
        vul = max(g["walks"][w]["worst_vulnerable_share"] for w in _WALKS_RISKY if w in g["walks"])
        out.append(
            _target("risky_viewers_no_minors", tag, guarded, vul, vul == 0.0, "== 0 (worst slate)")
        )
        pooled = report.get("recall_pooled", {}).get(guarded)
        out.append(_recall_target(tag, guarded, g["quality"], pooled))
        sup = g["suppressed"]["mean"]
        out.append(_target("benign_suppressed", tag, guarded, sup, sup <= 0.01, "<= 0.01"))
    return out


def _recall_target(where: str, config: str, quality: dict, pooled: dict | None = None) -> dict:
    """Recall kept >= 0.98, read with its bootstrap interval: a point below 0.98 whose
    interval still reaches 0.98 is no shown miss (too few held-out hits to tell, as on a
    ``--quick`` platform): reported as ``UNSURE``, never gating, unless the interval of
    every run's users pooled (``pooled``, :func:`_pooled_recall`) lies below 0.98 too: a
    miss repeated on every run is one. A miss the run's own interval confirms fails."""
    ratio = quality["recall_ratio"]
    high = quality.get("recall_ratio_high", ratio)
    bound = ">= 0.98"
    if "recall_ratio_low" in quality:
        level = round(100 * quality.get("recall_ratio_level", 0.95))
        bound += f"; {level}% CI [{quality['recall_ratio_low']:.3f}, {high:.3f}]"
    t = _target("recall_ratio", where, config, ratio, ratio >= 0.98, bound)
    if t["passed"] or high < 0.98:
        return t
    if pooled is not None and pooled["high"] < 0.98:
        t["bound"] += (
            f"; pooled over {pooled['n_runs']} runs x{pooled['ratio']:.3f} "
            f"[{pooled['low']:.3f}, {pooled['high']:.3f}]"
        )
        return t
    t["gating"] = False
    t["verdict"] = "UNSURE"
    return t


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


def failed_targets(report: dict) -> list[dict]:
    """The targets of ``report`` that failed and gate the audit (``gating`` not false)."""
    return [t for t in report["targets"] if not t["passed"] and t.get("gating", True)]


# Over 120 lines only by its signature and numpydoc docstring (16 keyword arguments, each
# documented); the body is about 65 lines.
def audit_platform(
    data,
    *,
    policy_path=None,
    sweep: bool = True,
    n_walkers: int = 20,
    n_steps: int = 6,
    N: int = 10,
    factors: int = 64,
    iterations: int = 15,
    regularization: float = 0.05,
    alpha: float = 2.0,
    num_threads: int = 2,
    seed: int = 0,
    risky_share: float = 0.2,
    progress: bool = True,
    log=None,
    primitive_knobs: dict | None = None,
) -> dict:
    """Run the audit on your own platform: the same walks, metrics, sweep and targets.

    Everything is validated, and every policy built, before a model is trained.

    Parameters
    ----------
    data : str, PathLike or OwnData
        A folder in the own-data format (:mod:`guardrails.audit.data`, read with
        :func:`~guardrails.audit.data.load_data`) or data already validated with
        :meth:`~guardrails.audit.data.OwnData.from_arrays`.
    policy_path : str or PathLike, optional, keyword-only
        A TOML policy audited as ``"policy_file"`` (the guarded configuration); it may
        reference ``seeds``, ``known_seeds``, ``seed_mask``, ``risk``, ``interactions``
        and, when given, ``graph``, ``minors``, ``minor_viewers``, ``terms``,
        ``flagged_terms`` and ``seeds_<category>``. Otherwise the guarded configuration is
        :func:`guardrails.default_policy` built from what was given.
    sweep : bool, keyword-only
        Run the exposure/quality sweep.
    n_walkers, n_steps, N : int, keyword-only
        Test accounts per walk, suggestion rounds, slate length.
    factors, iterations, regularization, alpha : keyword-only
        ALS hyperparameters when no factors or model were given (``regularization`` is
        also the fold-in ridge term of given factors).
    num_threads : int, keyword-only
        ALS training threads.
    seed : int, keyword-only
        Seeds the held-out split, the walks and ALS.
    risky_share : float, keyword-only
        Users with at least this share of their interactions on seeds or known abusive
        accounts are the risky viewers.
    progress : bool, keyword-only
    log : callable, optional, keyword-only
    primitive_knobs : dict, optional, keyword-only

    Returns
    -------
    dict
        As :func:`run_audit`, with one run (scenario ``"own-data"``) and ``data`` (the
        folder and its counts). Whether the unguarded recommender floods is reported
        but does not gate (``gating`` false); the minors' target is left out when no
        minors were given.

    Raises
    ------
    ValidationError
        Bad files or arguments, before any training.
    PolicyFileError
        A bad policy file, before any training.
    """
    where = "audit_platform"
    n_walkers, n_steps, N, say, primitive_knobs = _walk_args(
        where, n_walkers, n_steps, N, log, primitive_knobs
    )
    seed = check_int(seed, "seed", where, low=0)
    model_kw = als_params(where, factors, iterations, regularization, alpha, num_threads)
    risky_share = check_float(risky_share, "risky_share", where, low=0.0, high=1.0, low_open=True)
    t0 = time.perf_counter()
    data, platform, risk, policies = _own_platform(
        data, seed, risky_share, policy_path, primitive_knobs
    )
    t1 = time.perf_counter()
    model = _own_model(data, platform, seed, model_kw)
    t2 = time.perf_counter()
    guards = {k: audit_guard(model, p, platform) for k, p in policies.items()}
    say(
        f"{data.source}: {data.n_users} users, {data.n_items} accounts, "
        f"{data.interactions.nnz} interactions; load and policies {t1 - t0:.1f}s, "
        f"model {t2 - t1:.1f}s"
    )
    users = platform.evaluation_users(seed=seed)
    pairs: dict = {}
    configs = _evaluate_configs(
        guards,
        platform,
        users=users,
        viewers=platform.ordinary_viewers(n=20, seed=seed),
        youth_viewers=platform.youth_viewers(seed=seed),
        n_walkers=n_walkers,
        n_steps=n_steps,
        N=N,
        seed=seed,
        walks_per_step=3 if platform.has_search else 2,
        label="walks (own data)",
        progress=progress,
        pairs=pairs,
    )
    t3 = time.perf_counter()
    sweep_out = (
        _sweep(model, platform, risk, users, seed=seed, progress=progress, say=say)
        if sweep
        else None
    )
    run = {
        "seed": seed,
        "scenario": platform.scenario,
        "platform": platform.summary(),
        "seconds": {"load": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2},
        "configs": configs,
    }
    settings = {
        "data": data.source,
        "n_accounts": data.n_items,
        "n_users": data.n_users,
        "seeds": [seed],
        "scenarios": [platform.scenario],
        "n_walkers": n_walkers,
        "n_steps": n_steps,
        "N": N,
        "num_threads": model_kw["num_threads"],
        "model": model_kw,
        "risky_share": risky_share,
        "policy_path": None if policy_path is None else str(policy_path),
        "primitive_knobs": primitive_knobs,
    }
    report = _report(
        settings, [run], sweep_out, t0, data=platform.summary(), recall_pooled=_pooled_recall(pairs)
    )
    report["targets"] = _own_targets(report, has_minors=data.minors is not None)
    return report


def _own_targets(report: dict, *, has_minors: bool) -> list[dict]:
    """The targets of an own-data report, with what gates and what is left out."""
    targets = check_targets(report)
    for t in targets:
        # Whether *your* recommender floods test accounts is a finding, not a failure of
        # the guard: reported, never gating.
        t["gating"] = t.get("gating", True) and t["target"] != "flood_reproduced"
    if not has_minors:  # nothing to measure: a target that cannot fail is left out
        targets = [t for t in targets if t["target"] != "risky_viewers_no_minors"]
    return targets


def _own_platform(data, seed: int, risky_share: float, policy_path, primitive_knobs: dict):
    """Own data read (or as given), its platform view, seed risk and every policy, each
    compiled once so that arrays sized to another catalogue fail before training.

    Returns ``(data, platform, risk, policies)``.
    """
    from .data import DataPlatform, OwnData, load_data

    if not isinstance(data, OwnData):
        data = load_data(data)
    # Duck-typed as a Platform: the walks, metrics and sweep read the same names.
    platform: Any = DataPlatform.from_data(data, seed=seed, risky_share=risky_share)
    risk = platform.seed_risk()
    policies = _policies(platform, risk, policy_path, primitive_knobs)
    catalog = gr.filters.Catalog("items", data.n_items)
    for p in policies.values():
        if p is not None:
            p.compile_global(catalog)
    return data, platform, risk, policies


def _own_model(data, platform, seed: int, model_kw: dict):
    """The model of own data: given, built from given factors, or trained (ALS)."""
    if data.model is not None:
        return data.model
    if data.user_factors is not None:
        return gr.FactorModel(
            data.user_factors, data.item_factors, regularization=model_kw["regularization"]
        )
    return train_model(platform, seed=seed, **model_kw)
