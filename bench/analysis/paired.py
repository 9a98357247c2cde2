"""Paired significance: do two defenses really differ on the same cells?

Two defenses evaluated on the same cells — same data and classifier, same attack with the same
parameters, eps, threat model, attack labels, seed and ``n`` — were scored on the same test
images, so their per-sample outcomes under attack (the ``correct.defended_adv`` bitmaps every
record stores) are paired. For each such pair:

* **exact McNemar test**: the two-sided exact binomial test of the discordant pairs (images
  only A survives vs images only B survives) against p = 1/2 (``scipy.stats.binomtest``);
  pairs with no discordant image get p = 1;
* **Holm–Bonferroni** step-down correction over the family of every pair of defenses (variants)
  compared on one set of cells (one column of the paper view: dataset × classifier × threat ×
  attack × eps); a pair is "significant" when its Holm-adjusted p is below 0.05;
* the difference of accuracies A − B with **Newcombe's hybrid score interval for paired
  proportions** (Newcombe 1998, method 10: Wilson intervals of both marginals combined with
  the phi correlation of the 2×2 table, with Newcombe's correction when it is positive), 95%.

Everything comes from stored records; nothing is run. ``bench.render.paired`` writes the tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from bench.core.identity import canonical as _canon
from bench.core.identity import group_key
from bench.core.labels import defense_label, fmt_eps
from bench.core.record import decode
from bench.core.stats import wilson
from bench.core.threats import table_title

ALPHA = 0.05


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    from scipy.stats import binomtest

    m = only_a + only_b
    if m == 0:
        return 1.0
    return float(binomtest(only_a, m, 0.5, alternative="two-sided").pvalue)


def newcombe_paired(
    both: int, only_a: int, only_b: int, neither: int, z: float = 1.959963984540054
) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for p_A − p_B from paired outcomes (95% by default)."""
    a, b, c, d = both, only_a, only_b, neither
    n = a + b + c + d
    if n == 0:
        return (math.nan, math.nan)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's phi: the 2×2 correlation with his correction for a positive association.
    ad_bc: float = a * d - b * c
    if ad_bc > n / 2:
        ad_bc -= n / 2
    elif ad_bc >= 0:
        ad_bc = 0
    phi = ad_bc / math.sqrt(den) if den else 0.0
    theta = p1 - p2
    lower = theta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = theta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, lower), min(1.0, upper))


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Pair:
    group: str  # the cells both were evaluated on, in words
    a: str
    b: str
    n: int
    both: int  # images both survive
    only_a: int
    only_b: int
    neither: int
    p: float
    p_holm: float = math.nan
    family: int = 1  # pairs in the Holm family

    @property
    def acc_a(self) -> float:
        return (self.both + self.only_a) / self.n

    @property
    def acc_b(self) -> float:
        return (self.both + self.only_b) / self.n

    @property
    def diff(self) -> float:
        return self.acc_a - self.acc_b

    @property
    def ci(self) -> tuple[float, float]:
        return newcombe_paired(self.both, self.only_a, self.only_b, self.neither)

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


def row_labels(g: pd.DataFrame) -> pd.Series:
    """A defense's name plus its variant; a run id where two rows would still read the same."""
    label = g.apply(defense_label, axis=1).astype(str)
    dup = label.duplicated(keep=False)
    if dup.any():
        label = pd.Series(
            [f"{lab} (run {r})" if d else lab for lab, r, d in zip(label, g["run_id"], dup)], index=label.index
        )
    return label


def _group_title(row: pd.Series) -> str:
    eps = fmt_eps(row.get("eps"))
    variant = row.get("attack_variant") or ""
    return (
        f"{table_title(row['dataset'], row['classifier'], row['threat'])} · {row['attack']} eps={eps}"
        + (f" [{variant}]" if variant else "")
        + f" · n={int(row['n'])}"
    )


def groups(df: pd.DataFrame):
    """(title, rows) for every set of cells evaluated on the same images with ≥ 2 defenses."""
    if df.empty or "correct" not in df.columns:
        return
    usable = df[
        df["correct"].map(lambda c: isinstance(c, dict) and isinstance(c.get("defended_adv"), str)) & df["n"].notna()
    ]
    if usable.empty:
        return
    # Comparable image by image: the same cell but for the defense.
    keys = usable.apply(lambda r: group_key(r, vary=("defense",)), axis=1)
    found = [(_group_title(g.iloc[0]), g) for _, g in usable.groupby(keys, sort=False) if len(g) >= 2]
    titles = [t for t, _ in found]
    for title, g in found:
        if titles.count(title) > 1:  # two tables that differ in what no label shows: name the parameters
            params = g.iloc[0].get("attack_params")
            title += " · " + (
                ", ".join(f"{k}={v}" for k, v in sorted(params.items())) if isinstance(params, dict) else _canon(params)
            )
            if titles.count(title) > 1 or title in titles:
                title += f" · run {g.iloc[0].get('run_id')}"
        yield title, g.assign(label=row_labels(g)).sort_values("label", kind="stable")


def pairs(df: pd.DataFrame) -> list[Pair]:
    """Every pair of defenses on shared cells, with exact McNemar p and Holm within its group."""
    out: list[Pair] = []
    for title, g in groups(df):
        n = int(g["n"].iloc[0])
        outcomes = {lab: decode(c["defended_adv"], n) for lab, c in zip(g["label"], g["correct"])}
        family = []
        for a, b in combinations(list(outcomes), 2):
            x, y = outcomes[a], outcomes[b]
            both, only_a = int((x & y).sum()), int((x & ~y).sum())
            only_b, neither = int((~x & y).sum()), int((~x & ~y).sum())
            family.append(Pair(title, a, b, n, both, only_a, only_b, neither, mcnemar_exact(only_a, only_b)))
        for pair, adj in zip(family, holm([p.p for p in family])):
            pair.p_holm, pair.family = adj, len(family)
        out += family
    return out
