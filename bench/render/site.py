"""The static leaderboard page (``python -m bench report --html``): ``<results>/site/index.html``.

One self-contained HTML file (inline CSS and a few lines of vanilla JS for sorting; no CDN, no
server, readable without JS) plus the report's plots copied beside it under ``site/plots/``.
Built from stored records only. It leads with its own figures (``site/plots/lead_*.png``): per
dataset · ε, each row's worst case against its defense ms/sample (log axis), per device.

Layout: one table per dataset × classifier × eps (accuracies at different budgets are not
comparable, so they never share a table; unbounded attacks such as CW get their own). One row
per defense (variant: the defense parameters, fitted weights, classifier or data that tell two
rows of one defense apart). Columns:

* **gray, white, bpda, bpda-eot**: defended accuracy under the *strongest attack stored* for that
  threat model — per image, a sample counts as robust only if it survives every attack (and
  every parameter variant of it, e.g. each budget of an adequacy sweep) stored for that row and
  threat, computed from the per-sample bitmaps on the images every one of those cells scored (a
  cell of n images scored the first n, so AutoAttack's 64 meet PGD's 500 on the first 64); the
  cells it covers, each with its own accuracy and Wilson interval, are in the cell's tooltip;
* **worst**: the same across every threat model of the row, image by image
  (``bench.analysis.worst.row_worst``: README's headline ranks by the same function, on the same
  rows, ``row_key``), with **n** the images it is computed on;
* **clean (defended)**, **ms/sample** per device (CPU and GPU side by side when both
  were measured: the median over the row's cells of the defense's forward time), and links to
  the row's raw records and config (``../runs/<id>/``).

Wilson 95% intervals are printed in small type under each value. Randomised defenses carry an
"R" badge; a † marks a value whose attack budget was below the converged one
(``bench.analysis.adequacy``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.adequacy import annotate, match_key
from bench.analysis.adequacy import curves as find
from bench.analysis.frame import frame, run_commits
from bench.analysis.worst import Worst, row_key, row_records, row_worst
from bench.core.errors import BenchError
from bench.core.identity import ASPECTS, flatten, of_record
from bench.core.labels import fmt_eps, missing, short
from bench.core.record import decode
from bench.core.threats import THREAT_NAMES, THREATS, over_all, threat_name
from bench.render import plots as plotting
from bench.store.runs import iter_records, write_atomic


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


def _device_label(device: str) -> str:
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


def draw_lead(tables: list[Table], plots_dir: Path) -> list[Path]:
    """Draw the lead figures into ``plots_dir`` (its earlier ones removed first)."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    for old in plots_dir.glob(f"{LEAD}*.png"):
        old.unlink()
    return plotting.worst_vs_latency(lead_points(tables), plots_dir)


# --- HTML ----------------------------------------------------------------------------------------

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1400px;
  padding:0 1rem;color:#1b1f24;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #d8dee4;padding:.35rem .6rem;text-align:right;vertical-align:top}
th[scope=row],td.links,thead th:first-child{text-align:left}td.links .run{display:inline-block;margin-right:.6em}thead th{background:#f3f5f7;position:sticky;top:0}
thead th.sortable{cursor:pointer;user-select:none}thead th.sortable:hover{background:#e6eaef}
thead th[aria-sort=ascending]::after{content:" ▲";font-size:.7em}
thead th[aria-sort=descending]::after{content:" ▼";font-size:.7em}
small{display:block;color:#57606a;font-size:.72em;white-space:nowrap}
.badge{display:inline-block;font-size:.68em;font-weight:600;border-radius:.6em;padding:0 .45em;margin-left:.35em;
  background:#fff1c2;color:#7a5300;border:1px solid #e3c35a;vertical-align:middle}
.variant{display:block;font-weight:400;color:#57606a;font-size:.75em;max-width:28rem}
td.na{color:#8c959f}td.flagged{background:#fff5f5}.flag{color:#c62828;font-weight:700;margin-left:.15em}
td.links a{margin-right:.4em;font-size:.85em}td.links summary{cursor:pointer;font-size:.85em;color:#0b57d0}.note{color:#57606a;font-size:.9em;max-width:60rem}
figure{display:inline-block;margin:0 1rem 1rem 0}figure img{max-width:620px;border:1px solid #d8dee4}
figure.lead img{max-width:100%;width:1000px}details.grid{margin:.4rem 0}details.grid summary{cursor:pointer}
figcaption{font-size:.8em;color:#57606a}code{background:#f3f5f7;padding:0 .25em;border-radius:3px}
"""

# Click a header to sort its table by that column (again to reverse); empty cells stay last.
JS = """
document.querySelectorAll('table.board').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    if (th.dataset.sort === 'none') return;
    th.classList.add('sortable');
    th.tabIndex = 0;
    th.title = (th.title ? th.title + ' — ' : '') + 'click to sort';
    function sort() {
      var asc = th.getAttribute('aria-sort') === 'descending' ||
                (!th.hasAttribute('aria-sort') && th.dataset.sort === 'text');
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
        var ex = x === undefined || x === '', ey = y === undefined || y === '';
        if (ex || ey) return ex - ey;
        var c = th.dataset.sort === 'text' ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener('click', sort);
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
  });
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _value_td(v: Value | None, absent: str = "not evaluated") -> str:
    if v is None:
        return f'<td class="na" data-value="" title="{_e(absent)}">—</td>'
    ci = "" if missing(v.lo) or missing(v.hi) else f"<small>[{v.lo:.3f}, {v.hi:.3f}]</small>"
    flag = '<span class="flag" aria-label="attack budget below the converged one">†</span>' if v.flag else ""
    cls = ' class="flagged"' if v.flag else ""
    return f'<td{cls} data-value="{v.acc!r}" title="{_e(v.tip())}">{v.acc:.3f}{flag}{ci}</td>'


def _row_html(row: Row, devices: list[str], rel: str | dict[str, str]) -> str:
    badge = (
        (
            '<span class="badge" title="randomised defense: two calls on one input differ (attacked with '
            'EOT under bpda-eot)">R</span>'
        )
        if row.randomized
        else ""
    )
    if row.contract:  # values the classifier was scored on that no defense may return: said on the row
        badge += f'<span class="badge" title="{_e(row.contract)}">contract</span>'
    variant = f'<span class="variant">{_e(row.variant)}</span>' if row.variant else ""
    # n: the images the worst case is computed on (every cell of the row scored them: README's n),
    # with the row's cell sizes under it where they differ
    n = row.worst.n if row.worst is not None else (min(row.n) if row.n else None)
    sizes = f"<small>cells: {'/'.join(str(k) for k in row.n)}</small>" if len(row.n) > 1 else ""
    cells = [
        f'<th scope="row" data-value="{_e(row.label + " " + row.variant)}">{_e(row.label)}{badge}{variant}</th>',
        f'<td data-value="{"" if n is None else n}">{"" if n is None else n}{sizes}</td>',
        _value_td(row.clean),
    ]
    cells += [_value_td(row.threats[t]) for t in THREATS]
    cells.append(_value_td(row.worst))
    for d in devices:
        ms = row.ms.get(d)
        cells.append(
            '<td class="na" data-value="">—</td>'
            if ms is None
            else f'<td data-value="{ms!r}" title="median defense forward time per image on {_e(d)}">{ms:.3g}</td>'
        )
    base = (lambda r: rel.get(r, "..")) if isinstance(rel, dict) else (lambda r: rel)  # per run on a combined page
    links = "".join(
        f'<span class="run" title="run {_e(r)}"><a href="{base(r)}/runs/{_e(r)}/records.jsonl">records</a>'
        f'<a href="{base(r)}/runs/{_e(r)}/config.json">config</a><small>{_e(r[-6:])}</small></span>'
        for r in row.runs
    )
    if len(row.runs) > 3:  # a sweep's many runs: folded (a native <details>, no JS needed)
        links = f"<details><summary>{len(row.runs)} runs</summary>{links}</details>"
    cells.append(f'<td class="links">{links}</td>')
    return f'<tr data-defense="{_e(row.label)}">' + "".join(cells) + "</tr>"


def _table_html(t: Table, rel: str | dict[str, str]) -> str:
    head = [
        '<th scope="col" data-sort="text">defense</th>',
        '<th scope="col" data-sort="num" title="images the worst case is computed on: the first n, which '
        "every cell of the row scored (the cells' own sizes under it)\">n</th>",
        '<th scope="col" data-sort="num" title="accuracy of defense + classifier on clean images">'
        "clean (defended)</th>",
    ]
    head += [
        f'<th scope="col" data-sort="num" title="defended accuracy under the strongest attack stored, '
        f'{THREAT_NAMES[th]}">{_e(th)}</th>'
        for th in THREATS
    ]
    head.append(
        '<th scope="col" data-sort="num" title="robust only if it survives every attack under every '
        'threat model">worst</th>'
    )
    head += [
        f'<th scope="col" data-sort="num" title="defense forward time per image">ms/sample<small>'
        f"{_e(_device_label(d))}</small></th>"
        for d in t.devices
    ]
    head.append('<th scope="col" data-sort="none">raw</th>')
    body = "\n".join(_row_html(r, t.devices, rel) for r in t.rows)
    return (
        f'<section id="{_e(t.anchor)}"><h2>{_e(t.title)}</h2>\n<table class="board">\n<thead><tr>'
        + "".join(head)
        + f"</tr></thead>\n<tbody>\n{body}\n</tbody></table></section>"
    )


def _figure(src: str, cls: str = "") -> str:
    attr = f' class="{_e(cls)}"' if cls else ""
    return (
        f'<figure{attr}><img src="{_e(src)}" alt="{_e(Path(src).name)}" loading="lazy">'
        f"<figcaption>{_e(Path(src).name)}</figcaption></figure>"
    )


def render(
    df: pd.DataFrame,
    plots: list[str] | dict[str, list[str]],
    curves: list | None = None,
    rel: str | dict[str, str] = "..",
    lead: list[str] | None = None,
    tables: list[Table] | None = None,
) -> str:
    """The page. ``plots``: the report's plots (a combined page: each grid's, by grid folder, folded);
    ``lead``: the page's own figures, shown first; ``tables``: ``leaderboard(df)`` when already made."""
    tables = leaderboard(df) if tables is None else tables
    n_records = len(df)
    runs = sorted({str(r) for r in df["run_id"].dropna()}) if "run_id" in df.columns else []
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>defense-bench leaderboard</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>defense-bench leaderboard</h1>",
        f'<p class="note">Generated by <code>python -m bench report --html</code> from {n_records} stored '
        f"cell(s) in {len(runs)} run(s) (<code>runs/*/records.jsonl</code>); no model was run to make this "
        "page. Every accuracy is defended accuracy (defense + classifier) with its Wilson 95% interval "
        "in small type; hover a value for the cells it covers.</p>",
        '<p class="note">Threat columns: the strongest attack stored for that threat model — an image '
        "counts as robust only if it survives every attack (and every budget) stored for the row, "
        "image by image on the images all of them scored (the first n of the smallest cell). "
        "<b>worst</b>: the same across threat "
        'models. <span class="badge">R</span> randomised defense. <span class="flag">†</span> the '
        "attack budget behind this value was below the converged one (see attack adequacy). "
        "Click a column header to sort.</p>",
    ]
    if lead:
        parts += [
            '<h2 id="lead">Worst case against cost</h2>',
            '<p class="note">Per dataset · ε: each row\'s <b>worst</b> case (over every attack and threat '
            "model, on any device, image by image on the images every cell scored: README's headline number) "
            "against its defense's ms/sample on each device it was timed on (log axis; the marker says the "
            "device, a row's points are joined, the vertical bar is its Wilson 95% interval). Numbers are "
            "the rows best first, as the key beside each figure lists them.</p>",
        ]
        parts += [_figure(p, "lead") for p in lead]
    if not tables:
        parts.append("<p><em>No records.</em></p>")
    parts += [_table_html(t, rel) for t in tables]
    if curves:
        items = []
        for c in curves:
            for a in c.axes:
                items.append(
                    f"<li>{_e(c.row['dataset'])} · {_e(c.row['classifier'])} · {_e(c.row['defense'])} · "
                    f"{_e(c.row['threat'])} · {_e(c.row['attack'])} ε={_e(fmt_eps(c.row['eps']))} · "
                    f"n={c.n}: {_e(a.verdict())}</li>"
                )
        parts += ['<h2 id="adequacy">Attack adequacy</h2>', "<ul>" + "".join(items) + "</ul>"]
    if isinstance(plots, dict) and any(plots.values()):
        parts.append('<h2 id="plots">Each grid\'s plots</h2>')
        parts += [
            f'<details class="grid"><summary><code>{_e(grid)}</code>: {len(pngs)} plot(s)</summary>'
            + "".join(_figure(p) for p in pngs)
            + "</details>"
            for grid, pngs in plots.items()
            if pngs
        ]
    elif plots:
        parts.append('<h2 id="plots">Plots</h2>')
        parts += [_figure(p) for p in plots]
    parts += [f"<script>{JS}</script>", "</body></html>", ""]
    return "\n".join(parts)


def write_site(df: pd.DataFrame, results_dir: Path, curves: list | None = None) -> list[Path]:
    """Write ``<results_dir>/site/index.html`` and copy the report's plots beside it."""
    results_dir = Path(results_dir)
    site = results_dir / "site"
    plots_dir = site / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for old in plots_dir.glob("*.png"):
        old.unlink()
    names = []
    for png in sorted((results_dir / "plots").glob("*.png")):
        shutil.copyfile(png, plots_dir / png.name)
        names.append(png.name)
    if curves is None:
        curves = find(df)
    tables = leaderboard(df)
    lead = draw_lead(tables, plots_dir)
    index = site / "index.html"
    page = render(df, [f"plots/{n}" for n in names], curves, lead=[f"plots/{p.name}" for p in lead], tables=tables)
    write_atomic(index, page)
    return [index] + [plots_dir / n for n in names] + lead


def write_combined_site(dirs: list[Path], out: Path) -> list[Path]:
    """One page over several results folders (every reference grid): ``<out>/site/index.html``,
    each run's links and each plot pointing into its own folder (nothing copied)."""
    site = Path(out) / "site"
    site.mkdir(parents=True, exist_ok=True)
    records, commits, rel, names = [], {}, {}, {}
    for d in map(Path, dirs):
        mine = list(iter_records(d))
        records += mine
        commits.update(run_commits(d))
        prefix = Path(os.path.relpath(d.resolve(), site.resolve())).as_posix()
        rel.update({str(r["run_id"]): prefix for r in mine if r.get("run_id")})
        names[d.as_posix()] = [f"{prefix}/plots/{png.name}" for png in sorted((d / "plots").glob("*.png"))]
    df = frame(records, None, commits)
    tables = leaderboard(df)
    lead = draw_lead(tables, site / "plots")
    index = site / "index.html"
    write_atomic(index, render(df, names, find(df), rel, [f"plots/{p.name}" for p in lead], tables))
    return [index, *lead]


# --- a real browser --------------------------------------------------------------------------------

CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def browser_paths() -> tuple[str | None, str | None]:
    """Debian's chromium and chromium-driver, if installed (nothing is ever downloaded)."""
    found = lambda paths: next((p for p in paths if Path(p).is_file()), None)
    return found(CHROMIUM), found(CHROMEDRIVER)


def browser(width: int = 1400, height: int = 1000):
    """Headless Chromium from Debian's packages, driven by Selenium through chromium-driver."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = browser_paths()
    if not binary or not driver:
        raise BenchError("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def screenshot(index: Path, png: Path, width: int = 1400, height: int = 900) -> Path:
    """Open a written page in headless Chromium and save a screenshot of its top (the README's)."""
    drv = browser(width, height)
    try:
        drv.get(Path(index).resolve().as_uri())
        drv.save_screenshot(str(png))
    finally:
        drv.quit()
    return Path(png)


if __name__ == "__main__":  # python -m bench.render.site INDEX.html OUT.png
    import sys

    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
