"""The leaderboard's model: its tables, rows and values, computed from a frame of stored records
(``leaderboard``), and the points of the page's lead figures (``lead_points``). No HTML here: the
page (``bench.render.site``) renders these, and README's headline and the grid reports rank by the
same function (``bench.analysis.worst.row_worst``). What each column means: ``bench.render.site``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.adequacy import annotate, match_key
from bench.analysis.worst import Worst, row_key, row_records, row_worst
from bench.core.identity import ASPECTS, flatten, of_record
from bench.core.labels import fmt_eps, missing, short
from bench.core.record import decode
from bench.core.threats import THREAT_NAMES, THREATS, over_all, threat_name


@dataclass
class Value:
    acc: float
    lo: float
    hi: float
    n: int
    detail: str = ""  # what it covers (tooltip)
    flag: str = ""  # adequacy flag(s), "" when none

    def tip(self) -> str:
        return self.detail + (f"\n† {self.flag}" if self.flag else "")


@dataclass
class Row:
    label: str
    variant: str
    randomized: bool
    n: list[int]
    clean: Value | None
    threats: dict[str, Value | None]
    worst: Value | None
    ms: dict[str, float | None]
    runs: list[str]
    contract: str = ""  # the defense's broken-contract checks on its cells (bench.run.contract), "" when none


@dataclass
class Table:
    title: str
    anchor: str
    devices: list[str]
    rows: list[Row] = field(default_factory=list)
    dataset: str = ""
    classifier: str = ""
    budget: str = ""  # "L∞ ε = 0.3", or "unbounded attacks"


def _row_identity(r: pd.Series) -> dict[str, Any]:
    ident = of_record(r)
    return {k: ident.get(k) for k in ASPECTS["row"]}


def row_variants(g: pd.DataFrame) -> pd.Series:
    """Per cell of one (dataset, classifier): what tells its row apart from the same defense's others."""
    flat = g.apply(lambda r: flatten(_row_identity(r)), axis=1)
    out = pd.Series("", index=g.index, dtype=object)
    for _, idx in g.groupby("defense", sort=False).groups.items():
        dicts = flat[idx]
        keys = sorted({k for d in dicts for k in d})
        differ = [k for k in keys if len({json.dumps(d.get(k), default=str) for d in dicts}) > 1]
        out[idx] = dicts.map(lambda d: ", ".join(f"{k.split('.')[-1]}={short(d.get(k))}" for k in differ))
    # Cells that still collide (the same cell in every field stored, in two runs: e.g. records that
    # predate identities, of two trainings of one defense): tell them apart by run.
    cols = [
        "defense",
        "_v",
        "threat",
        "attack",
        "_p",
        "eps",
        "n",
        "device",
        "seed",
        "batch_size",
        "attack_labels",
        "eot_samples",
    ]
    probe = g.assign(_v=out, _p=g["attack_params"].map(lambda p: json.dumps(p, sort_keys=True, default=str)))
    for c in cols:
        if c not in probe.columns:
            probe[c] = None
    dup = probe[cols].astype(str).duplicated(keep=False)
    out[dup] = [", ".join(x for x in (v, f"run {r}") if x) for v, r in zip(out[dup], g.loc[dup, "run_id"])]
    return out


def _cell_line(r: pd.Series) -> str:
    lo, hi = r.get("defended_adv_acc_ci_low"), r.get("defended_adv_acc_ci_high")
    ci = "" if missing(lo) or missing(hi) else f" [{lo:.3f}, {hi:.3f}]"
    variant = r.get("attack_variant") or ""
    params = r.get("attack_params")
    if not variant and isinstance(params, dict) and "steps" in params:
        variant = f"steps={params['steps']}" + (f", restarts={params['restarts']}" if "restarts" in params else "")
    eot, resubmit = r.get("eot_samples"), r.get("resubmit")
    stages, ran = r.get("cascade"), r.get("ran_on")
    stage = ""
    if isinstance(stages, list):  # a cascade stage: robust after it and every earlier stage
        stage = f" · cascade after {', '.join(stages)}" + (
            f" (ran on {int(decode(ran, int(r['n'])).sum())})" if isinstance(ran, str) else ""
        )
    fwd, bwd = r.get("attack_forward_per_sample"), r.get("attack_backward_per_sample")
    passes = (
        "" if missing(fwd) or missing(bwd) else f", {float(fwd):.4g} forward + {float(bwd):.4g} backward passes/image"
    )
    return (
        f"{r['threat']} · {r['attack']}"
        + (f" [{variant}]" if variant else "")
        + stage
        + (f" · EOT {int(eot)}" if not missing(eot) and eot and eot > 1 else "")
        + (f" · worst of {int(resubmit)} draws" if not missing(resubmit) and resubmit and resubmit > 1 else "")
        + f": {r['defended_adv_acc']:.3f}{ci}, n={int(r['n'])}{passes}"
    )


def combine(cells: pd.DataFrame, what: str) -> Value | None:
    """Worst case over ``cells`` (one row's records, or those of one threat model): per image over
    every cell, on the images all of them scored (``bench.analysis.worst.row_worst``, the function
    README's headline ranks by)."""
    cells = cells[cells["defended_adv_acc"].notna() & cells["n"].notna()]
    if cells.empty:
        return None
    top = row_records([r for _, r in cells.iterrows()])
    w: Worst | None = row_worst(top)
    if w is None:
        return None
    cells = pd.DataFrame(top)
    n = w.n
    lines = [_cell_line(r) for _, r in cells.sort_values(["threat", "attack", "n"], kind="stable").iterrows()]
    # The single cell that does the most damage: the attack that sets this value, named on hover.
    # (on the images the value is computed on: cells of that n)
    single = [r for r in top if r.get("kind") == "cell" and int(r["n"]) == n]
    strongest = min(single, key=lambda r: r["defended_adv_acc"]) if single else None
    set_by = (
        f"; set by {strongest['attack']} · {threat_name(strongest['threat'])} "
        f"({strongest['defended_adv_acc']:.3f} alone)"
        if strongest is not None and len(top) > 1
        else ""
    )
    if w.per_image:
        sizes = sorted({int(r["n"]) for r in top})
        on = f"the first {n} images" + (f" (cells of n = {', '.join(map(str, sizes))})" if len(sizes) > 1 else "")
        how = (
            f"{what}: robust = survives all {len(top)} cell(s) on {on}, image by image{set_by}"
            if len(top) > 1
            else f"{what}: the one cell with n={n}"
        )
    else:
        how = f"{what}: the lowest of {len(top)} cell(s) (no per-sample outcomes stored)"
    value = Value(w.acc, w.ci_low, w.ci_high, n, how)
    value.detail += "\n" + "\n".join(lines)
    value.flag = _flag(cells)
    return value


def _flag(cells: pd.DataFrame) -> str:
    """A value is flagged when, for some attack, every one of its cells is below the converged budget."""
    if "adequacy" not in cells.columns:
        return ""
    reasons = []
    for _, g in cells.groupby(cells.apply(match_key, axis=1), sort=True):
        if (g["adequacy"] != "").all():
            best = g.loc[
                g["attack_params"].map(lambda p: (p or {}).get("steps", 0) if isinstance(p, dict) else 0).idxmax()
            ]
            reasons.append(f"{best['attack']}: {best['adequacy']}")
    return "; ".join(reasons)


def _variant_label(cells: pd.DataFrame, defense: pd.DataFrame) -> str:
    """What tells a row apart from its defense's other rows of one table: its identity's differing
    fields (``row_variants``), and its norm where its defense's rows differ in it."""
    parts = list(dict.fromkeys(v for v in cells["_variant"] if v))
    if "norm" in defense.columns and defense["norm"].nunique(dropna=False) > 1:
        parts += [f"norm={v}" for v in dict.fromkeys(cells["norm"].dropna())]
    return ", ".join(parts)


CONTRACT_CODES = ("defense-range", "wrote-input")


def _contract(cells: pd.DataFrame) -> str:
    """The messages of the checks that say a row's defense broke its contract (shown as a badge)."""
    if "check_codes" not in cells.columns:
        return ""
    found = {
        m
        for codes, msgs in zip(cells["check_codes"], cells["checks"])
        if isinstance(codes, list) and isinstance(msgs, list)
        for c, m in zip(codes, msgs)
        if c in CONTRACT_CODES
    }
    return "; ".join(sorted(found))


def device_heading(device: str) -> str:
    return "CPU" + device[3:] if device.lower().startswith("cpu") else device


def leaderboard(df: pd.DataFrame) -> list[Table]:
    if df.empty:
        return []
    df = df.copy()
    if "adequacy" not in df.columns:
        df["adequacy"] = annotate(df)
    for col in (
        "defense_randomized",
        "attack_variant",
        "identity",
        "eot_samples",
        "attack_params",
        "defense_ms_per_sample",
        "device",
        "run_id",
    ):
        if col not in df.columns:
            df[col] = None
    df["_eps_key"] = df["eps"].map(lambda e: -1.0 if missing(e) else float(e))
    tables = []
    for (dataset, clf), g in df.groupby(["dataset", "classifier"], sort=True):
        g = g.assign(_variant=row_variants(g), _row=[row_key(r) for _, r in g.iterrows()])
        for _, h in g.groupby("_eps_key", sort=True):
            eps = h["eps"].iloc[0]
            devices = sorted(
                {d for d in h.loc[h["kind"] == "cell", "device"].dropna()},
                key=lambda d: (not str(d).lower().startswith("cpu"), str(d)),
            )
            norm = h["norm"].dropna().iloc[0] if "norm" in h.columns and h["norm"].notna().any() else "Linf"
            budget = "unbounded attacks" if missing(eps) else f"{norm.replace('Linf', 'L∞')} ε = {fmt_eps(eps)}"
            title = f"{dataset} · {clf} · {budget}"
            anchor = "-".join(str(x) for x in (dataset, clf, "eps", fmt_eps(eps))).replace(".", "_")
            table = Table(
                title, anchor, [str(d) for d in devices], dataset=str(dataset), classifier=str(clf), budget=budget
            )
            # One row per leaderboard row of README's headline (``row_key``): its records combine.
            for (defense, _), cells in h.groupby(["defense", "_row"], sort=True):
                variant = _variant_label(cells, h[h["defense"] == defense])
                latest = (
                    cells.sort_values(["n", "time"], kind="stable", na_position="first").iloc[-1]
                    if "time" in cells.columns
                    else cells.iloc[-1]
                )
                clean = None
                if not missing(latest.get("defended_clean_acc")):
                    lo, hi = latest.get("defended_clean_acc_ci_low"), latest.get("defended_clean_acc_ci_high")
                    clean = Value(
                        float(latest["defended_clean_acc"]),
                        np.nan if missing(lo) else lo,
                        np.nan if missing(hi) else hi,
                        int(latest["n"]),
                        f"defended clean accuracy, n={int(latest['n'])}",
                    )
                threats = {t: combine(cells[cells["threat"] == t], THREAT_NAMES[t]) for t in THREATS}
                present = [v for v in threats.values() if v is not None]
                worst = None
                if present:
                    # every threat model of the grid, transfer ones too (they have no column of their own),
                    # image by image on the images every cell scored
                    worst = combine(cells[~cells["threat"].map(over_all)], "worst over threat models")
                timed = cells[(cells["kind"] == "cell") & cells["defense_ms_per_sample"].notna()]
                ms = {
                    str(d): (
                        float(timed.loc[timed["device"] == d, "defense_ms_per_sample"].median())
                        if (timed["device"] == d).any()
                        else None
                    )
                    for d in devices
                }
                table.rows.append(
                    Row(
                        label=str(defense),
                        variant=str(variant),
                        randomized=bool(cells["defense_randomized"].fillna(False).astype(bool).any()),
                        n=sorted({int(v) for v in cells["n"].dropna()}),
                        clean=clean,
                        threats=threats,
                        worst=worst,
                        ms=ms,
                        runs=sorted({str(r) for r in cells["run_id"].dropna()}),
                        contract=_contract(cells),
                    )
                )
            # Best first by the worst case over threat models (rows without one last): the order a
            # reader picking a defense wants; a header click re-sorts.
            table.rows.sort(key=lambda r: (r.worst is None, -(r.worst.acc if r.worst is not None else 0), r.label))
            tables.append(table)
    return tables


# --- the lead figures -----------------------------------------------------------------------------

LEAD = "lead_"  # the page's own figures (site/plots/lead_*.png), drawn from its tables


def lead_points(tables: list[Table]) -> pd.DataFrame:
    """The lead figures' points: per dataset · budget, each row's worst case over every attack and
    threat model (the page's ``worst`` column) and its defense ms/sample on each device timed. A
    row of another classifier than the figure's main one (the one with most rows) is named so."""
    groups: dict[tuple[str, str], list[Table]] = {}
    for t in tables:
        groups.setdefault((t.dataset, t.budget), []).append(t)
    out = []
    for (dataset, budget), ts in groups.items():
        main = max(ts, key=lambda t: len(t.rows)).classifier
        several = len({t.classifier for t in ts}) > 1
        title = f"{dataset} · {budget}" + (f" (classifier {main} unless named)" if several else f" · {main}")
        stem = LEAD + re.sub(r"[^A-Za-z0-9]+", "-", f"{dataset} {budget}".replace("∞", "inf")).strip("-")
        for t in ts:
            for row in t.rows:
                if row.worst is None:
                    continue
                label = (
                    row.label
                    + (f" [{row.variant}]" if row.variant else "")
                    + (f" · {t.classifier}" if t.classifier != main else "")
                )
                for device, ms in row.ms.items():
                    if ms is None or missing(ms):
                        continue
                    w = row.worst
                    out.append(
                        {
                            "title": title,
                            "stem": stem,
                            "label": label,
                            "defense": row.label,
                            "acc": w.acc,
                            "lo": w.lo,
                            "hi": w.hi,
                            "n": w.n,
                            "device": device,
                            "ms": ms,
                        }
                    )
    return pd.DataFrame(out)
