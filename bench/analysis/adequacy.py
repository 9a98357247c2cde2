"""Attack adequacy: was the attack strong enough? (analysis; the sweep is ``bench.run.sweep``,
``python -m bench adequacy`` runs it, ``bench.render.adequacy`` draws it)

Carlini et al.'s checklist asks for accuracy-vs-budget curves; purification defenses were
repeatedly overturned because the attack had not converged. The sweep runs the same cells at
growing attack budgets, one axis at a time, and stores them as ordinary records:

* **steps**: 10, 20, 40, 100, 200 (``--steps``), one restart;
* **restarts**: 1, 5 (``--restarts``) — PGD's ``restarts`` parameter (``attacks/pgd.py``): each
  image keeps the first restart that fools the attacked model;
* **EOT draws**: 1, 4, 16 (``--eot``), for randomised defenses under ``bpda-eot`` only.

Restarts and EOT draws are swept at the step count where that cell's steps sweep converged (the
largest swept when it did not): they ask whether more randomness or more draws still lower
accuracy once more steps no longer do — and cost a fraction of a sweep at the largest steps.

Analysis (from stored records only, so ``report`` redoes it): cells that differ only in the
budget (steps, the automatic step size that follows them, restarts, EOT draws) form a curve,
one per (dataset, classifier, defense, threat, attack, eps, n, …). Along each swept axis the
*last step* compares the largest value with the largest one at most half of it (a doubling or
more): when accuracy still drops by more than the half-width of the Wilson 95% interval of the
larger budget, the curve is **not converged**. Otherwise the *converged value* is the smallest
one that no larger value undercuts by more than that half-width. Every stored cell of the
same (dataset, classifier, defense, threat, attack, eps) — whatever its n — whose budget is
below the converged value, or any of whose curves did not converge, gets a flag in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.core.identity import group_key
from bench.core.stats import wilson

AXES = ("steps", "restarts", "eot")


def _params(row: pd.Series) -> dict[str, Any]:
    p = row.get("attack_params")
    return p if isinstance(p, dict) else {}


def coords(row: pd.Series) -> tuple[int | None, int, int]:
    """(steps, restarts, EOT draws) of a cell; steps None for an attack without steps."""
    p = _params(row)
    steps = p.get("steps")
    eot = row.get("eot_samples")
    eot = 1 if eot is None or (isinstance(eot, float) and math.isnan(eot)) else int(eot)
    return (int(steps) if isinstance(steps, (int, float)) else None, int(p.get("restarts", 1) or 1), eot)


def match_key(row: pd.Series) -> str:
    """Everything but the budget and n: the cells one curve speaks for."""
    return group_key(row, vary=("budget", "n"))


@dataclass
class Axis:
    name: str
    fixed: dict[str, int]  # the other two coordinates
    points: list[tuple[int, float, float, float, int]]  # (value, acc, ci_low, ci_high, df index)
    converged: bool = True
    converged_at: int | None = None  # None when not converged
    drop: float = 0.0  # accuracy lost over the last step
    half_width: float = 0.0  # CI half-width at the largest value
    last: tuple[int, int] = (0, 0)  # (previous value, largest value)

    def verdict(self) -> str:
        prev, top = self.last
        if not self.converged:
            return (
                f"NOT converged: {self.name} {prev}→{top} still lowers accuracy by {self.drop:.3f} "
                f"> CI half-width {self.half_width:.3f}"
            )
        return (
            f"converged at {self.name} = {self.converged_at} ({self.name} {prev}→{top}: "
            f"{-self.drop:+.3f}, CI half-width {self.half_width:.3f})"
        )


@dataclass
class Curve:
    key: str
    n: int
    row: pd.Series  # one of its cells, for names
    axes: list[Axis] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return all(a.converged for a in self.axes)


def _half_width(row: pd.Series) -> float:
    lo, hi = row.get("defended_adv_acc_ci_low"), row.get("defended_adv_acc_ci_high")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        lo, hi = wilson(round(row["defended_adv_acc"] * row["n"]), int(row["n"]))
    return (hi - lo) / 2


def analyse_axis(name: str, fixed: dict[str, int], rows: list[tuple[int, pd.Series, Any]]) -> Axis:
    rows = sorted(rows, key=lambda t: t[0])
    pts = [
        (
            v,
            float(r["defended_adv_acc"]),
            float(r.get("defended_adv_acc_ci_low", math.nan)),
            float(r.get("defended_adv_acc_ci_high", math.nan)),
            idx,
        )
        for v, r, idx in rows
    ]
    hws = {v: _half_width(r) for v, r, _ in rows}
    acc = {p[0]: p[1] for p in pts}
    values = [p[0] for p in pts]
    top = values[-1]
    halves = [v for v in values[:-1] if v <= top / 2]
    prev = halves[-1] if halves else values[-2]
    axis = Axis(name, fixed, pts, last=(prev, top), drop=acc[prev] - acc[top], half_width=hws[top])
    axis.converged = axis.drop <= axis.half_width
    if axis.converged:
        axis.converged_at = next(
            v for i, v in enumerate(values) if all(acc[v] - acc[w] <= hws[w] for w in values[i + 1 :])
        )
    return axis


def curves(df: pd.DataFrame) -> list[Curve]:
    """Every group of stored cells that differ only in the attack budget, with its swept axes."""
    if df.empty or "attack_params" not in df.columns:
        return []
    out = []
    data = df[df["defended_adv_acc"].notna() & df["n"].notna()]
    keys = data.apply(match_key, axis=1) if len(data) else pd.Series(dtype=str)
    for (key, n), g in data.groupby([keys, data["n"]], sort=True):
        pts: dict[tuple, tuple[pd.Series, Any]] = {}
        for idx, row in g.iterrows():
            c = coords(row)
            if c[0] is None:
                continue
            # Two cells at one budget (e.g. another batch size): the latest stored wins.
            if c not in pts or (row.get("time") or 0) >= (pts[c][0].get("time") or 0):
                pts[c] = (row, idx)
        if len(pts) < 2:
            continue
        curve = Curve(key, int(n), next(iter(pts.values()))[0])
        for i, name in enumerate(AXES):
            others = [j for j in range(3) if j != i]
            lines: dict[tuple, list] = {}
            for c, (row, idx) in pts.items():
                lines.setdefault(tuple(c[j] for j in others), []).append((c[i], row, idx))
            best = max(lines.items(), key=lambda kv: (len(kv[1]), kv[0]))
            if len(best[1]) < 2:
                continue
            fixed = {AXES[j]: v for j, v in zip(others, best[0])}
            curve.axes.append(analyse_axis(name, fixed, best[1]))
        if curve.axes:
            out.append(curve)
    return out


def annotate(df: pd.DataFrame, found: list[Curve] | None = None) -> pd.Series:
    """The report's flag per row: "" or why the cell's attack budget is below the converged one."""
    flags = pd.Series("", index=df.index, dtype=object)
    found = curves(df) if found is None else found
    if not found:
        return flags
    by_key: dict[str, Curve] = {}
    for c in found:  # the curve with the most images speaks for its cells
        if c.key not in by_key or c.n > by_key[c.key].n:
            by_key[c.key] = c
    for idx, row in df.iterrows():
        curve = by_key.get(match_key(row))
        if curve is None:
            continue
        at = dict(zip(AXES, coords(row)))
        if at["steps"] is None:
            continue
        why = []
        for axis in curve.axes:
            value = at[axis.name]
            if value is None:
                continue
            if not axis.converged and value <= axis.last[1]:  # beyond the sweep: unknown, no flag
                why.append(
                    f"not converged ({axis.name} {axis.last[0]}→{axis.last[1]}: "
                    f"−{axis.drop:.3f} > ±{axis.half_width:.3f}, n={curve.n})"
                )
            elif axis.converged_at is not None and value < axis.converged_at:
                why.append(f"{axis.name} {value} < {axis.converged_at} needed (n={curve.n})")
        if why:
            flags[idx] = "under-budget: " + "; ".join(why)
    return flags
