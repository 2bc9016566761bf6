"""The audit report: a terminal table, a JSON file with every number, and PNG plots.

Plots need matplotlib (the ``plot`` extra); without it :func:`write_plots` returns no files
and says why, and the rest of the report is written as usual.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable

__all__ = [
    "format_table",
    "format_targets",
    "format_sweep",
    "write_json",
    "write_plots",
    "write_report",
    "markdown_summary",
]

_WALK_LABELS = {
    "view_one": "view one",
    "follow_handful": "follow a handful",
    "follow_handful_unknown": "follow (unknown seller)",
    "search_start": "search start",
    "risky_viewers": "buyers as viewers",
}


def _pct(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}%"


def _rows(report: dict) -> list[list[str]]:
    rows = []
    for run in report["runs"]:
        for name, c in run["configs"].items():
            w = c["walks"]
            s2h = w["follow_handful"]["mean_share_curve_steps_to_half"]
            rows.append(
                [
                    f"{run['seed']}",
                    run["scenario"],
                    name,
                    _pct(max(w["view_one"]["network_share_mean"])),
                    _pct(max(w["follow_handful"]["network_share_mean"])),
                    _pct(max(w["follow_handful_unknown"]["network_share_mean"])),
                    _pct(max(w["search_start"]["network_share_mean"]))
                    if "search_start" in w
                    else "-",
                    "never" if s2h is None else str(s2h),
                    _pct(
                        max(
                            w[k]["worst_vulnerable_share"]
                            for k in ("follow_handful", "search_start", "risky_viewers")
                            if k in w
                        )
                    ),
                    f"{c['quality']['recall']:.4f}",
                    f"{c['quality']['recall_ratio']:.3f}",
                    f"{c['quality']['ndcg_ratio']:.3f}",
                    _pct(c["suppressed"]["mean"]),
                    _pct(c["minor_reach"]["lost"]),
                ]
            )
    return rows


_HEADER = [
    "seed",
    "scenario",
    "config",
    "view one",
    "follow",
    "follow unk.",
    "search",
    "steps to 1/2",
    "minors to risky",
    "recall@10",
    "recall ratio",
    "NDCG ratio",
    "benign suppr.",
    "minor reach lost",
]


def format_table(report: dict, *, markdown: bool = False) -> str:
    """The main table: worst per-step network share of each walk, minors, quality, collateral.

    Network shares are the mean over test accounts at the worst step; "minors to risky" is
    the worst single slate shown to a risky viewer.
    """
    rows = _rows(report)
    if markdown:
        lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join("---" for _ in _HEADER) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADER)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*_HEADER), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def format_targets(report: dict, *, markdown: bool = False) -> str:
    """One line per target and run: PASS, FAIL, or for a miss that does not gate INFO
    (or its own ``verdict``, UNSURE for recall), with the measured value."""
    lines = []
    if markdown:
        lines += [
            "| target | run | config | measured | bound | result |",
            "|---|---|---|---|---|---|",
        ]
    for t in report["targets"]:
        v = t["value"]
        shown = "never" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
        # A target with gating false (own data: whether the unguarded recommender floods
        # at all; a recall miss its interval does not confirm) informs and never fails
        # the audit.
        gating = t.get("gating", True)
        res = "PASS" if t["passed"] else ("FAIL" if gating else t.get("verdict", "INFO"))
        if markdown:
            lines.append(
                f"| {t['description']} | {t['run']} | {t['config']} | {shown} "
                f"| {t['bound']} | {res} |"
            )
        else:
            lines.append(
                f"[{res}] {t['run']:<16} {t['config']:<15} {t['target']:<24} {shown:>10}  "
                f"({t['bound']})"
            )
    return "\n".join(lines)


def format_sweep(report: dict, *, markdown: bool = False) -> str:
    """The sweep's Pareto front."""
    sw = report.get("sweep")
    if not sw:
        return ""
    head = ["config", "knobs", "exposure", "minors (walks)", "recall@10", "recall ratio"]
    rows = [
        [
            p["name"],
            ", ".join(f"{k}={v}" for k, v in p["knobs"].items()) or "-",
            _pct(p["exposure"]),
            _pct(p["vulnerable_exposure"]),
            f"{p['recall']:.4f}",
            f"{p['recall_ratio']:.3f}",
        ]
        for p in sw["pareto"]
    ]
    if markdown:
        return "\n".join(
            ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    )


def write_json(report: dict, path) -> str:
    """Write the report as JSON (NaN written as null); returns the path."""

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(clean(report), fh, indent=2)
        fh.write("\n")
    return path


def write_plots(report: dict, out_dir, *, log: Callable[[str], None] | None = None) -> list[str]:
    """Exposure per step (each walk, with and without the guard) and the Pareto front, as PNG.

    Returns the files written; an empty list (with a message to ``log``) when matplotlib
    is not installed.
    """
    say = log or (lambda _m: None)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: plots skipped (pip install 'recsys-guardrails[plot]').")
        return []
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    files = []
    styles = {
        "unguarded": ("tab:red", "-"),
        "primitive": ("tab:orange", "--"),
        "default_policy": ("tab:blue", "-"),
        "policy_file": ("tab:green", "-."),
    }
    walks = ("follow_handful", "follow_handful_unknown", "search_start")
    for run in report["runs"]:
        fig, axes = plt.subplots(
            2, len(walks), figsize=(4.2 * len(walks), 6.4), sharey="row", squeeze=False
        )
        for j, walk in enumerate(walks):
            for name, c in run["configs"].items():
                if walk not in c["walks"]:  # own data without flagged terms: no search walk
                    continue
                s = c["walks"][walk]
                steps = range(1, len(s["network_share_mean"]) + 1)
                color, ls = styles.get(name, ("tab:gray", ":"))
                axes[0, j].plot(
                    steps, s["network_share_mean"], ls, color=color, marker="o", label=name
                )
                axes[1, j].plot(
                    steps, s["vulnerable_share_mean"], ls, color=color, marker="o", label=name
                )
            axes[0, j].set_title(_WALK_LABELS[walk])
            axes[0, j].axhline(0.5, color="gray", lw=0.6, ls=":")
            axes[0, j].axhline(0.01, color="gray", lw=0.6, ls=":")
            axes[1, j].set_xlabel("step (suggestion round)")
            for i in range(2):
                axes[i, j].set_ylim(-0.02, 1.02)
                axes[i, j].grid(alpha=0.3)
        axes[0, 0].set_ylabel("share of suggestions\nin the abusive network")
        axes[1, 0].set_ylabel("share of suggestions\nfrom minors' accounts")
        axes[0, 0].legend(loc="center right", fontsize=8)
        fig.suptitle(
            f"Test-account walks, {run['scenario']} platform, seed {run['seed']} "
            f"({run['platform']['n_accounts']:,} accounts)"
        )
        fig.tight_layout()
        path = os.path.join(out_dir, f"exposure_{run['scenario']}_seed{run['seed']}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    sw = report.get("sweep")
    if sw:
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        pts, front = sw["points"], sw["pareto"]
        for p in pts:
            color, _ = styles.get(p["name"], ("tab:gray", ":"))
            ax.scatter(p["exposure"], p["recall_ratio"], color=color, s=30, alpha=0.7)
        fx = [p["exposure"] for p in front]
        fy = [p["recall_ratio"] for p in front]
        ax.plot(fx, fy, "k-", lw=1, label="Pareto front")
        for name in dict.fromkeys(p["name"] for p in pts):
            color, _ = styles.get(name, ("tab:gray", ":"))
            ax.scatter([], [], color=color, label=name)
        for p in front:
            label = ", ".join(f"{k[0]}={v}" for k, v in p["knobs"].items())
            if label:
                ax.annotate(
                    label,
                    (p["exposure"], p["recall_ratio"]),
                    fontsize=7,
                    xytext=(4, 2),
                    textcoords="offset points",
                )
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("exposure: mean share of network suggestions over all walk steps")
        ax.set_ylabel("benign recall@10 / unguarded")
        ax.axhline(0.98, color="gray", lw=0.6, ls=":")
        ax.axvline(0.01, color="gray", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Safety against quality (seed {sw['seed']}, {sw['scenario']} platform)")
        fig.tight_layout()
        path = os.path.join(out_dir, "pareto.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def markdown_summary(report: dict, *, image_dir: str | None = None) -> str:
    """The report as Markdown: settings, the main table, targets and the Pareto front."""
    s = report["settings"]
    parts = [
        f"Measured with recsys-guardrails {report['library_version']}: "
        f"{s['n_accounts']:,} accounts, "
        f"seeds {s['seeds']}, scenarios {s['scenarios']}, {s['n_walkers']} test accounts per walk, "
        f"{s['n_steps']} rounds of N={s['N']} suggestions; guarded configuration: "
        f"`{report['guarded_config']}`. Total {report['seconds']:.0f} s.",
        "",
        format_table(report, markdown=True),
        "",
        format_targets(report, markdown=True),
    ]
    sw = format_sweep(report, markdown=True)
    if sw:
        parts += ["", "Pareto front of the sweep:", "", sw]
    if image_dir is not None:
        parts.append("")
        for run in report["runs"]:
            parts.append(
                f"![exposure {run['scenario']} seed {run['seed']}]"
                f"({image_dir}/exposure_{run['scenario']}_seed{run['seed']}.png)"
            )
        if report.get("sweep"):
            parts.append(f"![Pareto front]({image_dir}/pareto.png)")
    return "\n".join(parts)


def write_report(
    report: dict, out_dir, *, plots: bool = True, log: Callable[[str], None] | None = None
) -> dict:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``.

    Returns
    -------
    dict with ``json``, ``markdown`` (paths) and ``plots`` (list of paths)
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    files = write_plots(report, out_dir, log=log) if plots else []
    j = write_json(report, os.path.join(out_dir, "report.json"))
    md = os.path.join(out_dir, "report.md")
    with open(md, "w", encoding="utf-8") as fh:
        fh.write(markdown_summary(report, image_dir="." if files else None) + "\n")
    return {"json": j, "markdown": md, "plots": files}
