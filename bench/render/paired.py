"""Paired comparisons, rendered: the report's section and ``report --compare A,B``."""

from __future__ import annotations

import pandas as pd

from bench.analysis.paired import Pair, newcombe_paired, pairs
from bench.core.errors import BenchError


def fmt_p(p: float) -> str:
    if p < 1e-300:
        return "< 1e-300"
    return f"{p:.3g}" if p < 0.001 else f"{p:.3f}"


def markdown(df: pd.DataFrame) -> str:
    """The report's section: one table of pairs per set of shared cells ("" when there are none)."""
    found = pairs(df)
    if not found:
        return ""
    parts = [
        "## Paired comparisons (exact McNemar, Holm-corrected)\n",
        "Defended accuracy under attack, image by image, for every two defenses evaluated on the "
        "same cells. *p*: two-sided exact McNemar test (binomial on the discordant images); "
        "*Holm p*: Holm–Bonferroni adjusted over the pairs of one table; **n.s.** marks pairs "
        "whose difference is not significant at 0.05 after correction. Difference A − B with "
        "Newcombe's hybrid score 95% interval for paired proportions (method 10).\n",
    ]
    by_group: dict[str, list[Pair]] = {}
    for p in found:
        by_group.setdefault(p.group, []).append(p)
    for title, ps in by_group.items():
        rows = [
            {
                "A": p.a,
                "B": p.b,
                "acc A": f"{p.acc_a:.3f}",
                "acc B": f"{p.acc_b:.3f}",
                "A − B [95% CI]": f"{p.diff:+.3f} [{p.ci[0]:+.3f}, {p.ci[1]:+.3f}]",
                "only A": p.only_a,
                "only B": p.only_b,
                "p": fmt_p(p.p),
                "Holm p": fmt_p(p.p_holm),
                "": "" if p.significant else "n.s.",
            }
            for p in ps
        ]
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
        raise BenchError(
            f"{a} and {b} were never evaluated on the same cells (same data, classifier, "
            "attack and its parameters, eps, threat, attack labels, seed and n) with per-sample "
            "outcomes stored"
        )
    out = []
    for p, swap in chosen:
        la, lb = (p.b, p.a) if swap else (p.a, p.b)
        both, neither = p.both, p.neither
        only_a, only_b = (p.only_b, p.only_a) if swap else (p.only_a, p.only_b)
        acc_a, acc_b = (both + only_a) / p.n, (both + only_b) / p.n
        lo, hi = newcombe_paired(both, only_a, only_b, neither)
        w = max(len(la), len(lb), 10) + 10
        c = len(lb) + 8  # wide enough for "<b> correct"
        out += [
            p.group,
            "defended accuracy under attack, per image:",
            f"{'':{w}}  {lb + ' correct':>{c}}  {lb + ' wrong':>{c}}",
            f"{la + ' correct':{w}}  {both:>{c}}  {only_a:>{c}}",
            f"{la + ' wrong':{w}}  {only_b:>{c}}  {neither:>{c}}",
            f"accuracy: {la} {acc_a:.4f}, {lb} {acc_b:.4f}; difference {acc_a - acc_b:+.4f}, "
            f"95% CI [{lo:+.4f}, {hi:+.4f}] (Newcombe hybrid score interval for paired proportions)",
            f"exact McNemar (two-sided binomial test of {only_a} vs {only_b} discordant images): "
            f"p = {fmt_p(p.p)}; Holm-adjusted over the {p.family} pair(s) of this table: p = "
            f"{fmt_p(p.p_holm)} → " + ("significant" if p.significant else "not significant") + " at 0.05",
            "",
        ]
    return "\n".join(out)
