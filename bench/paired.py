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

Everything comes from stored records; nothing is run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from bench.errors import BenchError
from bench.stats import wilson
from bench.threats import table_title
from bench.identity import canonical as _canon, group_key
from bench.record import decode  # re-exported for callers of bench.paired.decode

ALPHA = 0.05




def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    from scipy.stats import binomtest
    m = only_a + only_b
    if m == 0:
        return 1.0
    return float(binomtest(only_a, m, 0.5, alternative="two-sided").pvalue)


def newcombe_paired(both: int, only_a: int, only_b: int, neither: int, z: float = 1.959963984540054
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
    ad_bc = a * d - b * c
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
    group: str            # the cells both were evaluated on, in words
    a: str
    b: str
    n: int
    both: int             # images both survive
    only_a: int
    only_b: int
    neither: int
    p: float
    p_holm: float = math.nan
    family: int = 1       # pairs in the Holm family

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
    variant = g["variant"] if "variant" in g.columns else pd.Series("", index=g.index)
    label = g["defense"].astype(str) + variant.fillna("").map(lambda v: f" [{v}]" if v else "")
    dup = label.duplicated(keep=False)
    if dup.any():
        label[dup] = label[dup] + g.loc[dup, "run_id"].map(lambda r: f" (run {r})")
    return label


def _group_title(row: pd.Series) -> str:
    eps = row.get("eps")
    eps = "—" if eps is None or (isinstance(eps, float) and math.isnan(eps)) else f"{eps:.4g}"
    variant = row.get("attack_variant") or ""
    return (f"{table_title(row['dataset'], row['classifier'], row['threat'])} · {row['attack']} eps={eps}"
            + (f" [{variant}]" if variant else "") + f" · n={int(row['n'])}")


def groups(df: pd.DataFrame):
    """(title, rows) for every set of cells evaluated on the same images with ≥ 2 defenses."""
    if df.empty or "correct" not in df.columns:
        return
    usable = df[df["correct"].map(lambda c: isinstance(c, dict) and isinstance(c.get("defended_adv"), str))
                & df["n"].notna()]
    if usable.empty:
        return
    # Comparable image by image: the same cell but for the defense.
    keys = usable.apply(lambda r: group_key(r, vary=("defense",)), axis=1)
    found = [(_group_title(g.iloc[0]), g) for _, g in usable.groupby(keys, sort=False) if len(g) >= 2]
    titles = [t for t, _ in found]
    for title, g in found:
        if titles.count(title) > 1:  # two tables that differ in what no label shows: name the parameters
            params = g.iloc[0].get("attack_params")
            title += " · " + (", ".join(f"{k}={v}" for k, v in sorted(params.items()))
                              if isinstance(params, dict) else _canon(params))
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


def fmt_p(p: float) -> str:
    if p < 1e-300:
        return "< 1e-300"
    return f"{p:.3g}" if p < 0.001 else f"{p:.3f}"


def markdown(df: pd.DataFrame) -> str:
    """The report's section: one table of pairs per set of shared cells ("" when there are none)."""
    found = pairs(df)
    if not found:
        return ""
    parts = ["## Paired comparisons (exact McNemar, Holm-corrected)\n",
             "Defended accuracy under attack, image by image, for every two defenses evaluated on the "
             "same cells. *p*: two-sided exact McNemar test (binomial on the discordant images); "
             "*Holm p*: Holm–Bonferroni adjusted over the pairs of one table; **n.s.** marks pairs "
             "whose difference is not significant at 0.05 after correction. Difference A − B with "
             "Newcombe's hybrid score 95% interval for paired proportions (method 10).\n"]
    by_group: dict[str, list[Pair]] = {}
    for p in found:
        by_group.setdefault(p.group, []).append(p)
    for title, ps in by_group.items():
        rows = [{"A": p.a, "B": p.b, "acc A": f"{p.acc_a:.3f}", "acc B": f"{p.acc_b:.3f}",
                 "A − B [95% CI]": f"{p.diff:+.3f} [{p.ci[0]:+.3f}, {p.ci[1]:+.3f}]",
                 "only A": p.only_a, "only B": p.only_b, "p": fmt_p(p.p), "Holm p": fmt_p(p.p_holm),
                 "": "" if p.significant else "n.s."} for p in ps]
        parts += [f"### {title}\n", pd.DataFrame(rows).to_markdown(index=False) + "\n"]
    return "\n".join(parts)


def compare(df: pd.DataFrame, a: str, b: str) -> str:
    """``report --compare A,B``: per shared set of cells, the 2×2 table, p-values, difference + CI.
    A and B are defense names (every variant of each) or labels as the report prints them."""
    found = pairs(df)

    def matches(label: str, name: str) -> bool:
        return label == name or label.split(" [", 1)[0].split(" (run ", 1)[0] == name

    known = set(df["defense"].astype(str)) if not df.empty else set()
    for name in (a, b):
        if name not in known and not any(matches(lbl, name) for p in found for lbl in (p.a, p.b)):
            raise BenchError(f"no stored records for defense {name!r}; stored: {', '.join(sorted(known)) or '(none)'}")
    chosen = []
    for p in found:
        if matches(p.a, a) and matches(p.b, b):
            chosen.append((p, False))
        elif matches(p.a, b) and matches(p.b, a):
            chosen.append((p, True))
    if not chosen:
        raise BenchError(f"{a} and {b} were never evaluated on the same cells (same data, classifier, "
                         "attack and its parameters, eps, threat, attack labels, seed and n) with per-sample "
                         "outcomes stored")
    out = []
    for p, swap in chosen:
        la, lb = (p.b, p.a) if swap else (p.a, p.b)
        both, neither = p.both, p.neither
        only_a, only_b = (p.only_b, p.only_a) if swap else (p.only_a, p.only_b)
        acc_a, acc_b = (both + only_a) / p.n, (both + only_b) / p.n
        lo, hi = newcombe_paired(both, only_a, only_b, neither)
        w = max(len(la), len(lb), 10) + 10
        c = len(lb) + 8  # wide enough for "<b> correct"
        out += [p.group, "defended accuracy under attack, per image:",
                f"{'':{w}}  {lb + ' correct':>{c}}  {lb + ' wrong':>{c}}",
                f"{la + ' correct':{w}}  {both:>{c}}  {only_a:>{c}}",
                f"{la + ' wrong':{w}}  {only_b:>{c}}  {neither:>{c}}",
                f"accuracy: {la} {acc_a:.4f}, {lb} {acc_b:.4f}; difference {acc_a - acc_b:+.4f}, "
                f"95% CI [{lo:+.4f}, {hi:+.4f}] (Newcombe hybrid score interval for paired proportions)",
                f"exact McNemar (two-sided binomial test of {only_a} vs {only_b} discordant images): "
                f"p = {fmt_p(p.p)}; Holm-adjusted over the {p.family} pair(s) of this table: p = "
                f"{fmt_p(p.p_holm)} → " + ("significant" if p.significant else "not significant") + " at 0.05",
                ""]
    return "\n".join(out)
