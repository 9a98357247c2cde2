"""The headline: each defense's per-sample worst case over every attack and threat model.

Built from the stored ``worst`` rows of threat ``all`` (the driver's per-sample worst over every
attack × threat model of a run), one row per (dataset, classifier, defense, eps), best first,
naming the single attack that did the most damage on its own. Where several runs each hold a
worst-over-all row for one defense (different attack sets, different n: AutoAttack on fewer
images than PGD), they are combined image by image on the images all of them scored (a run of n
images scored the first n of the test split), and the row with the most images is shown beside
it when that is more: more images under fewer attacks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.errors import BenchError
from bench.core.identity import ASPECTS, digest, of_record
from bench.core.record import robust_on_first
from bench.core.stats import wilson
from bench.core.threats import THREAT_NAMES, threat_name
from bench.render.report import markers
from bench.store.runs import write_atomic


def _ci(acc: float, lo: Any, hi: Any) -> str:
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi) else f"{acc:.3f}"


def _over(parts: list[Any]) -> str:
    threats = sorted({p["threat"] for p in parts}, key=lambda t: list(THREAT_NAMES).index(t)
                     if t in THREAT_NAMES else 99)
    return (f"{len({p['attack'] for p in parts})} attacks × {len(threats)} threat models "
            f"({', '.join(THREAT_NAMES.get(t, t) for t in threats)})")


def _parts(g: pd.DataFrame, by_key: dict[str, Any]) -> list[Any]:
    """The cells behind worst rows ``g``."""
    return [by_key[k] for _, r in g.iterrows() for k in r["identity"]["attack_params"].get("cells", []) if k in by_key]


def _combined(g: pd.DataFrame, n: int) -> tuple[float, Any, Any]:
    """Worst rows ``g`` combined image by image on the first ``n`` images (accuracy, Wilson CI); the
    lowest row of that n when a row has no per-sample outcomes stored."""
    ok = robust_on_first((r for _, r in g.iterrows()), n)
    if ok is not None:
        k = int(ok.sum())
        return (k / n, *wilson(k, n))
    r = g[g["n"] == n].loc[lambda h: h["defended_adv_acc"].idxmin()]
    return float(r["defended_adv_acc"]), r.get("defended_adv_acc_ci_low"), r.get("defended_adv_acc_ci_high")


def rows(df: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """One table per (dataset, classifier, eps): the headline rows, best worst case first."""
    if df.empty or "threat" not in df.columns:
        return {}
    by_key = {r["cell_key"]: r for _, r in df.iterrows()}
    worst = df[(df["attack"] == "worst") & (df["threat"] == "all")]
    out: dict[tuple, list[dict[str, Any]]] = {}
    # Rows are combined only where they are one leaderboard row: the same test data, classifier
    # weights, defense settings and weights (ASPECTS["row"]), norm and attack labels.
    same = worst.apply(lambda r: digest([{k: of_record(r).get(k) for k in ASPECTS["row"]}, r.get("norm"),
                                         r.get("attack_labels")]), axis=1)
    worst = worst.assign(_same=same)
    for (ds, clf, defense, eps, _), g in worst.groupby(["dataset", "classifier", "defense", "eps", "_same"], sort=True):
        g = g.sort_values("n", kind="stable")
        n, most = int(g["n"].min()), int(g["n"].max())
        parts = _parts(g, by_key)
        acc, lo, hi = _combined(g, n)
        small = g.iloc[0]
        # The strongest single attack on the images the worst case is computed on.
        strongest = min((p for p in parts if int(p["n"]) == n), key=lambda p: p["defended_adv_acc"], default=None)
        row = {"defense": defense, "n": n, "clean (defended)": f"{small['defended_clean_acc']:.3f}",
               "worst case": _ci(acc, lo, hi), "_sort": acc,
               "strongest single attack": (f"{strongest['attack']} · {threat_name(strongest['threat'])}"
                                           f" ({strongest['defended_adv_acc']:.3f})") if strongest is not None else "—",
               "over": _over(parts)}
        if most > n:
            big = g[g["n"] == most]
            b_acc, b_lo, b_hi = _combined(big, most)
            row["on more images"] = f"{_ci(b_acc, b_lo, b_hi)} (n={most}, {_over(_parts(big, by_key))})"
        out.setdefault((ds, clf, eps), []).append(row)
    return {k: pd.DataFrame(v).sort_values(["_sort", "defense"], ascending=[False, True]).drop(columns="_sort")
            .fillna("—") for k, v in out.items()}


def update(readme: Path, dirs: list[str], df: pd.DataFrame, block: str = "headline") -> Path:
    """Fill ``<!-- headline:start -->`` … ``<!-- headline:end -->`` of ``readme``."""
    start, end = markers(block)
    text = readme.read_text()
    if start not in text or end not in text:
        raise BenchError(f"{readme} has no '{start}' … '{end}' block to fill")
    parts = [start, "", f"_Generated by `python -m bench report --readme {readme.as_posix()} --headline "
             f"{','.join(dirs)}` from their `runs/*/records.jsonl`; do not edit by hand._", ""]
    tables = rows(df)
    if not tables:
        parts += ["_(no worst-over-all-threat-models rows stored yet)_", ""]
    for (ds, clf, eps), t in tables.items():
        parts += [f"**{ds} · {clf} · L∞ ε = {eps:g}** — defended accuracy, robust only where every attack "
                  "under every threat model fails, image by image", "", t.to_markdown(index=False, disable_numparse=True), ""]
    parts.append(end)
    head, rest = text.split(start, 1)
    write_atomic(readme, head + "\n".join(parts) + rest.split(end, 1)[1])
    return readme
