"""Tables and plots from stored records only (``python -m bench report``); no model is run.

Writes ``results.md`` (a ranking by the worst case over every attack and threat model, a "paper
view" pivot per threat model, the full table), ``results.csv`` (unrounded),
optionally ``results.tex``, and PNG plots under ``plots/``, each file atomically.

Rows never mix: a row is one cell identity (``bench.core.identity``). Two stored cells that differ
in anything — n, an attack parameter, the EOT draws, the classifier's weights — are two rows,
labelled with the fields they differ in. Only a cell recomputed with ``--rerun`` (same
identity) is shown once, latest first. A table whose rows come from more than one git commit
(or a dirty tree) says so under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import adequacy
from bench.analysis.frame import ACCS, COLUMNS, ROW_KEY, frame, run_commits, run_versions
from bench.analysis.worst import Worst, row_key, row_records, row_worst
from bench.core.labels import defense_label, fmt_eps, missing
from bench.core.record import decode
from bench.core.threats import THREAT_NAMES, THREAT_ORDER, table_title
from bench.render import adequacy as adequacy_render
from bench.render import leaderboard, plots, site
from bench.render import paired as paired_render
from bench.render.blocks import fill as fill_block
from bench.store.runs import iter_records, write_atomic

FORMATS = ("md", "csv", "latex")


def provenance_note(df: pd.DataFrame) -> str:
    """A line under a table whose rows come from several code states, a dirty tree, or several
    package versions (torch, torchvision, torchattacks, numpy, python)."""
    commits = sorted({c if isinstance(c, str) else "unknown" for c in df["git_commit"]})
    dirty = [c for c in commits if c.endswith("-dirty")]
    lines = []
    if len(commits) > 1 or dirty:
        shown = ", ".join(c[:7] + ("-dirty" if c.endswith("-dirty") else "") for c in commits)
        lines.append(
            f"_Note: these rows come from {len(commits)} code state(s) ({shown})"
            + (", including uncommitted changes" if dirty else "")
            + "; see each run's env.json._"
        )
    stacks = sorted({v for v in df.get("versions", pd.Series(dtype=object)) if isinstance(v, str)})
    if len(stacks) > 1:
        lines.append(
            f"_Note: these rows were computed under {len(stacks)} package version sets "
            f"({'; '.join(stacks)}); see each run's env.json._"
        )
    return "\n\n".join(lines)


def table(df: pd.DataFrame) -> pd.DataFrame:
    cols = [*COLUMNS, "variant", "attack_variant", "attack_labels", "cell_key", "run_id", "git_commit"]
    cols = [c for c in cols if c in df.columns]
    cols += [f"{a}_ci_{s}" for a in ACCS for s in ("low", "high") if f"{a}_ci_{s}" in df.columns]
    extra = [c for c in ("checks", "adequacy") if c in df.columns]
    return df[cols + extra].copy()


def _with_ci(df: pd.DataFrame, acc: str) -> pd.Series:
    lo, hi = f"{acc}_ci_low", f"{acc}_ci_high"

    def cell(row):
        v = row[acc]
        if pd.isna(v):
            return ""
        if lo in row and not pd.isna(row.get(lo)) and not pd.isna(row.get(hi)):
            return f"{v:.3f} [{row[lo]:.3f}, {row[hi]:.3f}]"
        return f"{v:.4g}"

    return df.apply(cell, axis=1)


def _count(v) -> str:
    return "" if missing(v) else f"{float(v):.4g}"


def _stage(r: pd.Series) -> str:
    """A cascade stage's place (its outcomes are the robust accuracy after it, as AutoAttack's log
    prints it), the images it ran on; a cascade suite's row says it is one."""
    stages, ran, n = r.get("cascade"), r.get("ran_on"), r.get("n")
    if isinstance(stages, list):
        count = ""
        if isinstance(ran, str) and not missing(n):
            count = f"; ran on {int(decode(ran, int(n)).sum())}/{int(n)}"
        return f"after {', '.join(stages) or '—'}{count}"
    params = r.get("attack_params")
    if isinstance(params, dict) and params.get("mode") == "cascade":
        return "cascade: robust after every stage"
    return ""


def display(df: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({k: df[k] for k in [*ROW_KEY, "n"]})
    shown["eps"] = df["eps"].map(fmt_eps)
    shown["variant"] = [", ".join(x for x in (v, a) if x) for v, a in zip(df["variant"], df["attack_variant"])]
    names = {
        "clean_acc": "clean",
        "adv_acc": "attacked (undefended)",
        "defended_clean_acc": "defended clean",
        "defended_adv_acc": "defended attacked",
    }
    if "cascade" in df.columns or "ran_on" in df.columns:  # only where records have cascade stages
        shown["cascade"] = [_stage(r) for _, r in df.iterrows()]
    for acc, name in names.items():
        shown[name] = _with_ci(df, acc)
    if "resubmit" in df.columns:  # a randomised defense scored on N draws: its defended numbers are the worst
        # Formatted element by element: a vectorised str + number (or + an empty selection, which
        # pandas types float64) raises under pandas 3's pyarrow-backed strings.
        draws = [f" (worst of {int(v)} draws)" if not missing(v) and v > 1 else "" for v in df["resubmit"]]
        for name in ("defended clean", "defended attacked"):
            shown[name] = [f"{s}{d}" for s, d in zip(shown[name], draws)]
    shown["defense ms/sample"] = df["defense_ms_per_sample"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    # Passes through the attacked model per image: only where records counted them (older tables
    # stay as they were).
    for col, name in (
        ("attack_forward_per_sample", "attack fwd/img"),
        ("attack_backward_per_sample", "attack bwd/img"),
    ):
        if col in df.columns and df[col].notna().any():
            shown[name] = [_count(v) for v in df[col]]
    shown["device"] = df["device"]
    if "checks" in df.columns:
        shown["warnings"] = df["checks"].map(lambda c: "; ".join(c) if isinstance(c, list) else "")
    if "adequacy" in df.columns and (df["adequacy"] != "").any():  # bench.analysis.adequacy's flag
        shown["adequacy"] = df["adequacy"]
    return shown


def paper_view(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Rows defenses, columns attack × eps (defended accuracy under attack), as counterGAN's table."""
    out = []
    order = lambda k: (k[0], k[1], THREAT_ORDER.index(k[2]) if k[2] in THREAT_ORDER else len(THREAT_ORDER), k[2])
    groups = sorted(df.groupby(["dataset", "classifier", "threat"]), key=lambda kv: order(kv[0]))
    for (dataset, clf, threat), g in groups:
        stage = g["cascade"] if "cascade" in g.columns else [None] * len(g)
        g = g.assign(
            col=[
                f"{a} {fmt_eps(e)}" + (f" [{v}]" if v else "") + (" (cascade)" if isinstance(c, list) else "")
                for a, e, v, c in zip(g["attack"], g["eps"], g["attack_variant"], stage)
            ],
            row=g.apply(defense_label, axis=1),
        )
        # Each (row, col) holds exactly one cell: rows and columns carry every differing field;
        # should two cells still meet, both rows get their cell key rather than one being dropped.
        clash = g.duplicated(["row", "col"], keep=False)
        g["row"] = [f"{r} {{{str(k)[:8]}}}" if c else r for r, k, c in zip(g["row"], g["cell_key"], clash)]
        pivot = g.pivot_table(index="row", columns="col", values="defended_adv_acc", aggfunc="first")
        rows = g.groupby("row")
        pivot.insert(0, "n", rows["n"].agg(lambda s: "/".join(str(v) for v in sorted(set(s)))))
        pivot.insert(1, "clean (defended)", rows["defended_clean_acc"].first())
        pivot["ms/sample"] = rows["defense_ms_per_sample"].median()
        pivot = pivot.reset_index().rename(columns={"row": "defense"})
        pivot.columns.name = None
        table = pivot.astype(object).where(pivot.notna(), None)
        table.attrs["note"] = provenance_note(g)
        table.attrs["devices"] = devices_line(g)
        out.append((table_title(dataset, clf, threat), table))
    return out


RANKING_INTRO = (
    "Per dataset · classifier · ε, each defense's defended accuracy with an image counted robust "
    "only where it survives every stored attack under every threat model, on any device, on the "
    "images every record scored (`bench.analysis.worst.row_worst` over the records of one "
    "leaderboard row, `row_key`: the number README's headline and the leaderboard page rank by). "
    "Best first; **cells**: the attack × threat-model cells it combines."
)


def _cell_count(rec: pd.Series) -> int:
    """The cells a record of ``row_worst``'s combination stands for: a cell itself, or a stored
    worst row standing in for the cells it names (they are not in this report)."""
    if rec.get("kind", "cell") == "cell":
        return 1
    ident = rec.get("identity")
    cells = (ident.get("attack_params") or {}).get("cells") if isinstance(ident, dict) else None
    return len(cells) if isinstance(cells, list) and cells else 1


def _worst_text(w: Worst) -> str:
    if missing(w.ci_low) or missing(w.ci_high):
        return f"{w.acc:.3f}"
    return f"{w.acc:.3f} [{w.ci_low:.3f}, {w.ci_high:.3f}]"


def ranking(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Per (dataset, classifier, eps), one row per leaderboard row (defense and ``row_key``) with
    its worst case over every attack and threat model (``row_worst`` over all its records, as
    README's headline and the page take it): accuracy, Wilson 95% interval, n, and the cells it
    combines, best first. A defense with several rows in one table (other weights, settings or
    norm) is labelled with what tells them apart, as on the page."""
    if df.empty or "threat" not in df.columns:
        return []
    df = df.copy()
    for col in ("attack_params", "run_id", "identity", "norm"):
        if col not in df.columns:
            df[col] = None
    df["_eps_key"] = df["eps"].map(lambda e: -1.0 if missing(e) else float(e))
    out = []
    for (dataset, clf), g in df.groupby(["dataset", "classifier"], sort=True):
        g = g.assign(_variant=leaderboard.row_variants(g), _row=[row_key(r) for _, r in g.iterrows()])
        for _, h in g.groupby("_eps_key", sort=True):
            eps = h["eps"].iloc[0]
            norm = h["norm"].dropna().iloc[0] if h["norm"].notna().any() else "Linf"
            budget = "unbounded attacks" if missing(eps) else f"{str(norm).replace('Linf', 'L∞')} ε = {fmt_eps(eps)}"
            rows = []
            for (defense, _), recs in h.groupby(["defense", "_row"], sort=True):
                records = [r for _, r in recs.iterrows()]
                w = row_worst(records)
                if w is None:
                    continue
                mine = h[h["defense"] == defense]
                parts = list(dict.fromkeys(v for v in recs["_variant"] if v))
                if mine["norm"].nunique(dropna=False) > 1:
                    parts += [f"norm={v}" for v in dict.fromkeys(recs["norm"].dropna())]
                rows.append(
                    {
                        "defense": str(defense) + (f" [{', '.join(parts)}]" if parts else ""),
                        "worst case [95% CI]": _worst_text(w)
                        + ("" if w.per_image else " (lowest cell: no per-image outcomes)"),
                        "n": w.n,
                        "cells": sum(_cell_count(r) for r in row_records(records) if not missing(r.get("n"))),
                        "_acc": w.acc,
                    }
                )
            if rows:
                t = pd.DataFrame(rows).sort_values(["_acc", "defense"], ascending=[False, True], kind="stable")
                out.append((f"{dataset} · {clf} · {budget}", t.drop(columns="_acc").reset_index(drop=True)))
    return out


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_no records_\n"
    return display(df).to_markdown(index=False) + "\n"


def write_report(
    results_dir: Path,
    formats: Iterable[str] = ("md", "csv"),
    filters: dict[str, list[str]] | None = None,
    plots: bool = True,
    readme: Path | None = None,
    runs: list[str] | None = None,
    html: bool = False,
    readme_block: str = "results",
) -> list[Path]:
    results_dir = Path(results_dir)
    df = frame(iter_records(results_dir, runs), filters, run_commits(results_dir), run_versions(results_dir))
    curves = adequacy.curves(df)
    df["adequacy"] = adequacy.annotate(df, curves)
    notes = adequacy_render.paper_notes(df, df["adequacy"])
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "md" in formats:
        parts = [
            "# defense-bench results\n",
            "Generated by `python -m bench report` from "
            "`runs/*/records.jsonl`; do not edit. Accuracies with a Wilson 95% interval "
            "where stored.\n",
        ]
        ranked = ranking(df)
        if ranked:
            parts += ["## Ranking: worst case over every attack and threat model\n", RANKING_INTRO + "\n"]
            for title, t in ranked:
                parts += [f"### {title}\n", t.to_markdown(index=False, disable_numparse=[0, 1]) + "\n"]
        parts += ["## Paper view: defended accuracy under attack\n"]
        for title, pv in paper_view(df):
            parts += [f"### {title}\n", pv.to_markdown(index=False, floatfmt=".4g", missingval="—") + "\n"]
            if pv.attrs.get("note"):
                parts.append(pv.attrs["note"] + "\n")
            if notes.get(title):
                parts.append(notes[title] + "\n")
        parts += ["## All cells\n", markdown(df)]
        if provenance_note(df):
            parts.append(provenance_note(df) + "\n")
        parts += [s for s in (adequacy_render.markdown(df, curves), paired_render.markdown(df)) if s]
        write_atomic(results_dir / "results.md", "\n".join(parts))
        written.append(results_dir / "results.md")
    if "csv" in formats:
        write_atomic(results_dir / "results.csv", table(df).to_csv(index=False, float_format="%.17g"))
        written.append(results_dir / "results.csv")
    if "latex" in formats:
        blocks = [
            pv.to_latex(index=False, float_format="%.3f", na_rep="--", caption=title.replace("·", "/"))
            for title, pv in paper_view(df)
        ]
        write_atomic(results_dir / "results.tex", "\n".join(blocks))
        written.append(results_dir / "results.tex")
    if plots and not df.empty:
        drawn = write_plots(df, results_dir)
        drawn += adequacy_render.write_plots(df, results_dir / "plots", curves)  # the same colours: by name
        # plots/ is this report's output: a figure it no longer draws (another rule, records gone)
        # must not stay beside the current ones, nor be copied onto the page.
        keep = {p.resolve() for p in drawn}
        for old in (results_dir / "plots").rglob("*.png"):
            if old.resolve() not in keep:
                old.unlink()
        written += drawn
    if html:
        written += site.write_site(df, results_dir, curves)
    if readme is not None:
        written.append(update_readme(Path(readme), results_dir, df, readme_block))
    return written


def devices_line(g: pd.DataFrame) -> str:
    """The devices a table's timings come from, a CPU with its model where records name it (so
    two machines' tables can be told apart; a GPU's device string is already its name)."""
    out = []
    for device, h in g.groupby("device", sort=True):
        models = sorted(set(h["cpu_model"].dropna())) if "cpu_model" in h.columns else []
        out.append(f"{device}" + (f" on {', '.join(models)}" if models and str(device).startswith("cpu") else ""))
    return ", ".join(out) or "unknown"


def update_readme(readme: Path, results_dir: Path, df: pd.DataFrame, block: str = "results") -> Path:
    """Replace the block between ``<!-- block:start -->`` and ``<!-- block:end -->`` with the
    paper view (one table per dataset · classifier · threat) and one plot."""
    parts = [
        "",
        f"_Generated by `python -m bench report --results-dir {results_dir} --readme "
        f"{readme.as_posix()} --readme-block {block}` from `{results_dir}/runs/*/records.jsonl`; "
        "do not edit by hand._",
        "",
    ]
    for title, pv in paper_view(df):
        parts += [
            f"**{title}** (defended accuracy; device: {pv.attrs['devices']})",
            "",
            pv.to_markdown(index=False, floatfmt=".3f", missingval="—"),
            "",
        ]
        if pv.attrs.get("note"):
            parts += [pv.attrs["note"], ""]
    pareto = sorted((results_dir / "plots").glob("pareto_*.png"))
    if pareto:
        # Relative to the page, so that a page under docs/ shows it too.
        link = Path(os.path.relpath(pareto[0].resolve(), readme.resolve().parent)).as_posix()
        parts += [f"![accuracy vs latency]({link})", ""]
    return fill_block(readme, block, parts)


def write_plots(df: pd.DataFrame, results_dir: Path) -> list[Path]:
    out = results_dir / "plots"
    colour = plots.colours(df["defense"])  # one colour per defense in every plot of this report
    paths = (
        plots.accuracy_vs_eps(df, out, colour)
        + plots.accuracy_vs_latency(df, out, colour)
        + plots.accuracy_vs_iterations(df, out, colour)
    )
    if "samples" in df.columns:
        for _, row in df[df["samples"].notna()].iterrows():
            path = results_dir / row["samples"]
            if not path.is_file():
                continue
            with np.load(path, allow_pickle=False) as z:
                samples = {k: z[k] for k in z.files}
            name = (
                "_".join(str(row[k]) for k in ("dataset", "classifier", "threat", "attack")) + f"_{fmt_eps(row['eps'])}"
            )
            title = (
                f"{row['defense']} — {row['dataset']}, {row['attack']} eps={fmt_eps(row['eps'])}, "
                f"{THREAT_NAMES.get(row['threat'], row['threat'])}"
            )
            safe = str(row["defense"]).replace(":", "_").replace("/", "_") + f"_{row['cell_key']}"
            paths.append(plots.image_grid(samples, title, out / "samples" / f"{name}_{safe}.png"))
    return paths
