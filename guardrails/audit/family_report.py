"""The family audit's report: targets, distribution, table and plot.

What :func:`guardrails.audit.family_run.run_family` returns is checked against
:data:`FAMILY_TARGETS` (:func:`family_targets`), summarised (:func:`family_distribution`),
printed (:func:`format_family`) and drawn (:func:`write_family_plot`, with matplotlib).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .family import MODEL_KINDS

__all__ = [
    "FAMILY_TARGETS",
    "family_distribution",
    "family_targets",
    "format_family",
    "write_family_plot",
]

#: Targets checked on every (platform, model kind): (description, bound, test).
FAMILY_TARGETS = {
    "exposure": ("worst walk: mean network share <= 1% at every step", "<= 0.01"),
    "self_shown": ("a viewed network account never appears in its own suggestions", "== 0"),
    "minors_to_risky": ("risky viewers get no minors' accounts (worst slate)", "== 0"),
    "recall_ratio": ("benign recall@10 >= 0.98 of unguarded", ">= 0.98"),
    "benign_suppressed": ("benign accounts suppressed for ordinary viewers <= 1%", "<= 0.01"),
}
_PASS = {
    "exposure": lambda v: v <= 0.01,
    "self_shown": lambda v: v == 0.0,
    "minors_to_risky": lambda v: v == 0.0,
    "recall_ratio": lambda v: v >= 0.98,
    "benign_suppressed": lambda v: v <= 0.01,
}


def family_distribution(rows: list[dict]) -> dict:
    """Median, 90th percentile (10th for recall kept) and worst of every target over the
    rows; the worst recall row's interval and the hits the ratios rest on; time per row."""
    out: dict[str, dict[str, Any]] = {}
    for key in FAMILY_TARGETS:
        v = np.array([r["values"][key] for r in rows], dtype=np.float64)
        worst = np.nanmin(v) if key == "recall_ratio" else np.nanmax(v)
        out[key] = {
            "median": float(np.nanmedian(v)),
            "p90": float(np.nanpercentile(v, 10 if key == "recall_ratio" else 90)),
            "worst": float(worst),
        }
    # The recall ratio's interval on its worst row, and how many hits the ratios rest on.
    with_ci = [
        (r["values"]["recall_ratio"], ci, r["quality"]["hits_unguarded"])
        for r in rows
        if (ci := _interval(r)) is not None and np.isfinite(r["values"]["recall_ratio"])
    ]
    if with_ci:
        out["recall_ratio"]["worst_interval"] = list(min(with_ci, key=lambda t: t[0])[1])
        hits = np.array([t[2] for t in with_ci])
        out["recall_ratio"]["hits_unguarded"] = {
            "median": float(np.median(hits)),
            "min": int(hits.min()),
        }
    secs = np.array([r["seconds"]["total"] for r in rows])
    out["seconds_per_platform_kind"] = {
        "median": float(np.median(secs)),
        "p90": float(np.percentile(secs, 90)),
        "worst": float(secs.max()),
    }
    return out


def _interval(row: dict) -> tuple[float, float] | None:
    """The recall ratio's interval of a row, or ``None`` for a row measured without one."""
    q = row.get("quality") or {}
    if "recall_ratio_low" not in q:
        return None
    return float(q["recall_ratio_low"]), float(q["recall_ratio_high"])


def family_targets(report: dict) -> list[dict]:
    """Per target: passed everywhere, the worst value and the rows that break it.

    A row breaks a target on its point estimate. For ``recall_ratio`` each broken row also
    carries its interval and hits, and ``significant`` lists the broken rows whose whole
    interval lies below the bound (the rest may be noise of the held-out sample).
    """
    out = []
    for key, (desc, bound) in FAMILY_TARGETS.items():
        broken = []
        for r in report["rows"]:
            if _PASS[key](r["values"][key]):
                continue
            b = {"seed": r["seed"], "kind": r["kind"], "value": r["values"][key]}
            ci = _interval(r) if key == "recall_ratio" else None
            if ci is not None:
                q = r["quality"]
                b.update(low=ci[0], high=ci[1], hits=q["hits"], hits_unguarded=q["hits_unguarded"])
            broken.append(b)
        t = {
            "target": key,
            "description": desc,
            "bound": bound,
            "worst": report["distribution"][key]["worst"],
            "passed": not broken,
            "n_rows": len(report["rows"]),
            "broken": broken,
        }
        if key == "recall_ratio":
            t["significant"] = [b for b in broken if "high" in b and not _PASS[key](b["high"])]
        out.append(t)
    return out


def _fmt(key: str, v: float) -> str:
    if v != v:
        return "-"
    return f"x{v:.3f}" if key == "recall_ratio" else f"{100 * v:.2f}%"


def _adult_hits(q: dict) -> str:
    """The adult-pair hits kept, as ``x0.990 (990/1000)``, or ``-`` where not measured."""
    if "hits_adults" not in q:
        return "-"
    a, b = q["hits_adults"], q["hits_adults_unguarded"]
    return f"x{a / b:.3f} ({a}/{b})" if b else f"- ({a}/0)"


def _contexts(q: dict) -> str:
    """The shares of ordinary and network accounts that are risky viewing contexts."""
    o, n = q.get("contexts_ordinary"), q.get("contexts_network")
    if o is None or n is None or o != o:
        return "-"
    return f"{100 * o:.1f}% / {100 * n:.0f}%"


def _profiles_kept(q: dict) -> str:
    """Ordinary profiles' lists kept, over all sampled profiles and risky contexts."""
    a, c = q.get("profiles_kept"), q.get("profiles_kept_contexts")
    if a is None or a != a:
        return "-"
    return f"{100 * a:.0f}% / " + ("-" if c is None or c != c else f"{100 * c:.0f}%")


def format_family(report: dict, *, markdown: bool = False) -> str:
    """Per-platform rows, the distribution and the targets, as text (or Markdown)."""
    keys = list(FAMILY_TARGETS)
    # Rows measured with the recall interval get six more columns beside recall_ratio.
    has_ci = any(_interval(r) is not None for r in report["rows"])
    extra = (
        [
            "recall 95% CI",
            "hits (guarded/unguarded)",
            "adult-pair hits kept",
            "contexts ordinary / network",
            "profile lists kept (all / contexts)",
            "new-account recall kept",
        ]
        if has_ci
        else []
    )
    at = keys.index("recall_ratio") + 1
    # Rows that measured it: benign suppression over adults' accounts only, beside the
    # target (what is left is minors' accounts withheld from adults by the minors' rules).
    has_adults = any("benign_suppressed_adults" in (r.get("quality") or {}) for r in report["rows"])
    head = [
        "seed",
        "kind",
        "accounts",
        "subnets (unknown)",
        "known",
        *keys[:at],
        *extra,
        *keys[at:],
        *(["benign_suppressed (adults' accounts)"] if has_adults else []),
    ]
    body = []
    for r in report["rows"]:
        p = r["platform"]
        cells = [_fmt(k, r["values"][k]) for k in keys]
        if has_ci:
            ci, q = _interval(r), r.get("quality") or {}
            cells[at:at] = [
                "-" if ci is None or ci[0] != ci[0] else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                f"{q['hits']}/{q['hits_unguarded']}" if "hits" in q else "-",
                _adult_hits(q),
                _contexts(q),
                _profiles_kept(q),
                _fmt("recall_ratio", q.get("recall_ratio_new", float("nan"))),
            ]
        if has_adults:
            q = r.get("quality") or {}
            v = q.get("benign_suppressed_adults")
            cells.append("-" if v is None else _fmt("benign_suppressed", v))
        body.append(
            [
                str(r["seed"] % 100_000),
                r["kind"] if r["kind"] != "item" else r["model"]["model"],
                str(p["n_accounts"]),
                f"{p['n_subnetworks']} ({p['unknown_subnetworks']})",
                str(p["n_known_seeds"]),
                *cells,
            ]
        )
    d = report["distribution"]
    for stat in ("median", "p90", "worst"):
        cells = [_fmt(k, d[k][stat]) for k in keys]
        if has_ci:
            wi = d["recall_ratio"].get("worst_interval") if stat == "worst" else None
            cells[at:at] = ["" if wi is None else f"[{wi[0]:.3f}, {wi[1]:.3f}]", *[""] * 5]
        if has_adults:
            cells.append("")
        body.append([stat, "", "", "", "", *cells])
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(b) + " |" for b in body]
    else:
        widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    lines.append("")
    for t in report["targets"]:
        mark = "PASS" if t["passed"] else "MISS"
        msg = f"{mark} {t['target']}: {t['description']} (worst {_fmt(t['target'], t['worst'])})"
        if t["broken"]:
            msg += f"; broken by {len(t['broken'])}/{t['n_rows']}: " + ", ".join(
                f"{b['seed'] % 100_000}/{b['kind']}" for b in t["broken"][:8]
            )
        if "significant" in t and t["broken"]:
            sig = t["significant"]
            msg += (
                f"; significant (whole {100 * report['settings']['recall_interval']['level']:.0f}%"
                f" interval below the bound) {len(sig)}/{t['n_rows']}"
                if "recall_interval" in report.get("settings", {})
                else f"; significant {len(sig)}/{t['n_rows']}"
            )
            if sig:
                msg += ": " + ", ".join(
                    f"{b['seed'] % 100_000}/{b['kind']} [{b['low']:.3f}, {b['high']:.3f}]"
                    for b in sig[:8]
                )
        lines.append(("- " if markdown else "") + msg)
    return "\n".join(lines)


def write_family_plot(report: dict, path) -> str | None:
    """Exposure and recall kept across platforms, one marker per model kind (PNG).

    Returns the path, or ``None`` when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    seeds = list(dict.fromkeys(r["seed"] for r in report["rows"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, marker in zip(MODEL_KINDS, "os^", strict=True):
        rows = [r for r in report["rows"] if r["kind"] == kind]
        if not rows:
            continue
        x = [seeds.index(r["seed"]) for r in rows]
        axes[0].scatter(x, [100 * r["values"]["exposure"] for r in rows], marker=marker, label=kind)
        axes[1].scatter(x, [r["values"]["recall_ratio"] for r in rows], marker=marker, label=kind)
    axes[0].axhline(1.0, color="red", lw=1, ls="--", label="target")
    axes[1].axhline(0.98, color="red", lw=1, ls="--", label="target")
    axes[0].set(xlabel="platform", ylabel="worst walk network share (%)", title="Exposure")
    axes[1].set(xlabel="platform", ylabel="recall@10 kept", title="Benign recall kept")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{len(seeds)} {report['settings']['split']} platforms ({report['settings']['size']}), "
        f"{report['settings']['policy']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
