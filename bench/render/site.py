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
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.adequacy import curves as find
from bench.analysis.frame import frame, run_commits
from bench.core.labels import fmt_eps, missing
from bench.core.threats import THREAT_NAMES, THREATS
from bench.render import plots as plotting
from bench.render.leaderboard import LEAD, Row, Table, Value, device_heading, lead_points, leaderboard
from bench.store.runs import iter_records, write_atomic


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
        f"{_e(device_heading(d))}</small></th>"
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
