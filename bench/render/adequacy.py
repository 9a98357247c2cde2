"""Attack adequacy, rendered: the curves' table, the notes under paper-view tables, the plots."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.ticker
import pandas as pd

from bench.analysis.adequacy import Axis, Curve, curves
from bench.core.labels import defense_label, fmt_eps
from bench.core.threats import table_title
from bench.render.plots import colours, legend_outside, plt, save


def markdown(df: pd.DataFrame, found: list[Curve] | None = None) -> str:
    found = curves(df) if found is None else found
    if not found:
        return ""
    rows = []
    for c in found:
        r = c.row
        for a in c.axes:
            fixed = ", ".join(f"{k}={v}" for k, v in a.fixed.items())
            rows.append(
                {
                    "dataset · classifier": f"{r['dataset']} · {r['classifier']}",
                    "defense": defense_label(r),
                    "threat": r["threat"],
                    "attack": r["attack"],
                    "eps": fmt_eps(r["eps"]),
                    "n": c.n,
                    "axis": f"{a.name} ({fixed})",
                    "accuracy by budget": ", ".join(f"{v}: {acc:.3f}" for v, acc, *_ in a.points),
                    "verdict": a.verdict(),
                }
            )
    return "\n".join(
        [
            "## Attack adequacy (accuracy vs attack budget)\n",
            "Cells that differ only in the attack's budget, one axis at a time. A curve is *not "
            "converged* when its last step (at least a doubling) still lowers defended accuracy "
            "under attack by more than the Wilson 95% half-width; cells whose budget is below the "
            "converged one are flagged in the tables (`adequacy` column; listed under each paper-view "
            "table).\n",
            pd.DataFrame(rows).to_markdown(index=False) + "\n",
        ]
    )


def paper_notes(df: pd.DataFrame, flags: pd.Series) -> dict[str, str]:
    """Paper-view title (``threats.table_title``) → a note listing its flagged cells."""
    out: dict[str, dict[str, list[str]]] = {}
    for idx in flags[flags != ""].index:
        r = df.loc[idx]
        variant = ", ".join(x for x in (r.get("variant"), r.get("attack_variant")) if x)
        cell = f"{r['defense']} · {r['attack']} {fmt_eps(r['eps'])}" + (f" [{variant}]" if variant else "")
        title = table_title(r["dataset"], r["classifier"], r["threat"])
        out.setdefault(title, {}).setdefault(flags[idx], []).append(cell)
    return {
        t: "† Attack budget below the converged one (see *Attack adequacy*): "
        + "; ".join(f"{', '.join(cells)} — {why}" for why, cells in by_why.items())
        for t, by_why in out.items()
    }


def _budgets(a: Axis) -> list[int]:
    """Gradient evaluations per image at each point of an axis: steps × restarts × EOT draws."""
    out = []
    for v, *_ in a.points:
        coord = {**a.fixed, a.name: v}
        out.append(coord["steps"] * coord["restarts"] * coord["eot"])
    return out


def write_plots(
    df: pd.DataFrame, out: Path, found: list[Curve] | None = None, colour: dict[str, tuple] | None = None
) -> list[Path]:
    """Accuracy vs attack budget (gradient evaluations per image, log x), one figure per
    (dataset, classifier, threat, attack, eps, n), one line per defense and swept axis."""
    found = curves(df) if found is None else found
    figs: dict[tuple, list[Curve]] = {}
    for c in found:
        r = c.row
        figs.setdefault((r["dataset"], r["classifier"], r["threat"], r["attack"], fmt_eps(r["eps"]), c.n), []).append(c)
    paths = []
    styles = {"steps": "o-", "restarts": "s--", "eot": "^:"}
    for (dataset, clf, threat, attack, eps, n), cs in sorted(figs.items(), key=str):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        colour = colour or colours(df["defense"])
        for c in sorted(cs, key=lambda c: str(c.row["defense"])):
            color = colour[str(c.row["defense"])]
            for a in c.axes:
                budget = _budgets(a)
                acc = [p[1] for p in a.points]
                err = [
                    [max(0.0, p[1] - p[2]) if not math.isnan(p[2]) else 0 for p in a.points],
                    [max(0.0, p[3] - p[1]) if not math.isnan(p[3]) else 0 for p in a.points],
                ]
                label = f"{defense_label(c.row, 40)} · {a.name}" + ("" if a.converged else " (NOT converged)")
                ax.errorbar(budget, acc, yerr=err, fmt=styles[a.name], color=color, capsize=2, label=label, alpha=0.9)
        ax.set_xscale("log")
        ticks = sorted({b for c in cs for a in c.axes for b in _budgets(a)})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("attack budget: gradient evaluations per image (steps × restarts × EOT draws, log)")
        ax.set_ylabel("defended accuracy under attack")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"attack adequacy — {dataset}, {clf}, {attack} eps={eps}, {threat}-box, n={n}", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        legend_outside(ax)
        paths.append(save(fig, out / f"adequacy_{dataset}_{clf}_{threat}_{attack}_{eps}_n{n}.png"))
    return paths
