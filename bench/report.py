"""Tables and plots from stored records only (``python -m bench report``); no model is run.

Writes ``results.md`` (full table + a "paper view" pivot), ``results.csv`` (unrounded),
optionally ``results.tex``, and PNG plots under ``plots/``, each file atomically.

Rows never mix: a row is one cell identity (``bench.identity``). Two stored cells that differ
in anything — n, an attack parameter, the EOT draws, the classifier's weights — are two rows,
labelled with the fields they differ in. Only a cell recomputed with ``--rerun`` (same
identity) is shown once, latest first. A table whose rows come from more than one git commit
(or a dirty tree) says so under it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

import json
import os

from bench.checks import with_fgsm_checks
from bench.identity import aspect_of, digest, flatten, of_record
from bench.threats import THREAT_NAMES, THREAT_ORDER, table_title
from bench.store import iter_records, write_atomic

ROW_KEY = ["dataset", "classifier", "defense", "threat", "attack", "eps"]
ACCS = ["clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc"]
COLUMNS = ROW_KEY + ["n"] + ACCS + ["defense_ms_per_sample", "attack_ms_per_sample", "device"]
FORMATS = ("md", "csv", "latex")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # A cut label keeps a hash of the whole value, so two different values never look alike.
    return text if len(text) <= 14 else text[:8] + "…" + digest(text, 6)


def _differing(flat: pd.Series, skip) -> list[str]:
    """The identity fields whose values differ among these records."""
    keys = sorted({k for d in flat for k in d if not skip(k)})
    return [k for k in keys if len({json.dumps(d.get(k), default=str) for d in flat}) > 1]


def _labels(flat: pd.Series, fields: list[str]) -> pd.Series:
    return flat.map(lambda d: ", ".join(f"{k}={_short(d.get(k))}" for k in fields))


def _identity_of(row: pd.Series) -> dict[str, Any]:
    return flatten(of_record(row))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def with_variants(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``variant`` (what tells a row apart from the same defense's other rows) and
    ``attack_variant`` (what tells an attack column apart), from the stored identities."""
    flat = df.apply(_identity_of, axis=1)
    # Attack settings are the paper view's columns, not properties of its rows.
    attack_field = lambda k: aspect_of(k, "meta") or aspect_of(k, "attack_setting")
    defense_field = lambda k: aspect_of(k, "defense")
    df["variant"], df["attack_variant"] = "", ""
    table = ["dataset", "classifier", "threat"]
    for _, idx in df.groupby(table, dropna=False, sort=False).groups.items():
        # Fields that differ anywhere in one table (n, labels, classifier weights …) label every
        # row of it; a defense's own fields label its rows when they differ between its cells.
        shared = _differing(flat[idx], lambda k: attack_field(k) or defense_field(k))
        df.loc[idx, "variant"] = _labels(flat[idx], shared)
        for _, jdx in df.loc[idx].groupby("defense", dropna=False, sort=False).groups.items():
            own = _differing(flat[jdx], lambda k: not defense_field(k) or k == "defense")
            if own:
                df.loc[jdx, "variant"] = [", ".join(x for x in (v, a) if x) for v, a in
                                          zip(df.loc[jdx, "variant"], _labels(flat[jdx], own))]
    for _, idx in df.groupby(table + ["attack", "eps"], dropna=False, sort=False).groups.items():
        # A worst-case row's cells are the row's own cells (one set per defense), not an attack setting.
        fields = _differing(flat[idx], lambda k: not k.startswith("attack_params") or k.startswith("attack_params.cells"))
        df.loc[idx, "attack_variant"] = _labels(flat[idx], fields)
    return df


def frame(records: Iterable[dict[str, Any]], filters: dict[str, list[str]] | None = None,
          commits: dict[str, str | None] | None = None) -> pd.DataFrame:
    """One row per stored cell identity (a ``--rerun`` of the same cell: the latest wins)."""
    df = pd.DataFrame(list(records))
    if df.empty:
        return pd.DataFrame(columns=COLUMNS + ["variant", "attack_variant", "git_commit"])
    for col in COLUMNS + ["time", "cell_key", "identity", "run_id"]:
        if col not in df.columns:
            df[col] = None
    df["eps"] = pd.to_numeric(df["eps"], errors="coerce")
    # A record from before cell keys existed is keyed by what it showed: its row and n.
    missing = df["cell_key"].isna()
    df.loc[missing, "cell_key"] = df[missing].apply(
        lambda r: "legacy-" + digest([str(r[k]) for k in ROW_KEY] + [_identity_of(r)]), axis=1)
    df = df.sort_values("time", kind="stable", na_position="first")
    df = df.drop_duplicates(subset=["cell_key"], keep="last").reset_index(drop=True)
    if "iterative" in df.columns:  # over every stored cell, before filters hide an FGSM twin
        df["checks"] = with_fgsm_checks(df.to_dict("records"))
    for col, allowed in (filters or {}).items():
        if allowed:
            df = df[df[col].isin(allowed)].reset_index(drop=True)
    df["git_commit"] = df["run_id"].map(lambda r: (commits or {}).get(r))
    df = with_variants(df)
    return df.sort_values(ROW_KEY + ["variant", "attack_variant"], kind="stable",
                          na_position="first").reset_index(drop=True)


def run_commits(results_dir: Path) -> dict[str, str | None]:
    """run id → the git commit its env.json recorded."""
    out = {}
    for env in Path(results_dir).glob("runs/*/env.json"):
        try:
            out[env.parent.name] = json.loads(env.read_text()).get("git_commit")
        except (OSError, json.JSONDecodeError):
            out[env.parent.name] = None
    return out


def provenance_note(df: pd.DataFrame) -> str:
    """A line under a table whose rows come from several code states or a dirty tree."""
    commits = sorted({c if isinstance(c, str) else "unknown" for c in df["git_commit"]})
    dirty = [c for c in commits if c.endswith("-dirty")]
    if len(commits) <= 1 and not dirty:
        return ""
    shown = ", ".join(c[:7] + ("-dirty" if c.endswith("-dirty") else "") for c in commits)
    return (f"_Note: these rows come from {len(commits)} code state(s) ({shown})"
            + (", including uncommitted changes" if dirty else "") + "; see each run's env.json._")


def table(df: pd.DataFrame) -> pd.DataFrame:
    cols = COLUMNS + ["variant", "attack_variant", "attack_labels", "cell_key", "run_id", "git_commit"]
    cols = [c for c in cols if c in df.columns]
    cols += [f"{a}_ci_{s}" for a in ACCS for s in ("low", "high") if f"{a}_ci_{s}" in df.columns]
    extra = [c for c in ("checks", "adequacy") if c in df.columns]
    return df[cols + extra].copy()


def _fmt_eps(e: Any) -> str:
    return "—" if pd.isna(e) else f"{e:.4g}"


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


def display(df: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({k: df[k] for k in ROW_KEY + ["n"]})
    shown["eps"] = df["eps"].map(_fmt_eps)
    shown["variant"] = [", ".join(x for x in (v, a) if x) for v, a in zip(df["variant"], df["attack_variant"])]
    names = {"clean_acc": "clean", "adv_acc": "attacked (undefended)",
             "defended_clean_acc": "defended clean", "defended_adv_acc": "defended attacked"}
    for acc, name in names.items():
        shown[name] = _with_ci(df, acc)
    shown["defense ms/sample"] = df["defense_ms_per_sample"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    shown["device"] = df["device"]
    if "checks" in df.columns:
        shown["warnings"] = df["checks"].map(lambda c: "; ".join(c) if isinstance(c, list) else "")
    if "adequacy" in df.columns and (df["adequacy"] != "").any():  # bench.adequacy's flag
        shown["adequacy"] = df["adequacy"]
    return shown


def paper_view(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Rows defenses, columns attack × eps (defended accuracy under attack), as counterGAN's table."""
    out = []
    order = lambda k: (k[0], k[1], THREAT_ORDER.index(k[2]) if k[2] in THREAT_ORDER else len(THREAT_ORDER), k[2])
    groups = sorted(df.groupby(["dataset", "classifier", "threat"]), key=lambda kv: order(kv[0]))
    for (dataset, clf, threat), g in groups:
        g = g.assign(col=g["attack"] + " " + g["eps"].map(_fmt_eps)
                     + g["attack_variant"].map(lambda v: f" [{v}]" if v else ""),
                     row=g["defense"] + g["variant"].map(lambda v: f" [{v}]" if v else ""))
        # Each (row, col) holds exactly one cell: rows and columns carry every differing field;
        # should two cells still meet, both rows get their cell key rather than one being dropped.
        clash = g.duplicated(["row", "col"], keep=False)
        g.loc[clash, "row"] = g.loc[clash, "row"] + " {" + g.loc[clash, "cell_key"].str[:8] + "}"
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


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_no records_\n"
    return display(df).to_markdown(index=False) + "\n"


def write_report(results_dir: Path, formats: Iterable[str] = ("md", "csv"),
                 filters: dict[str, list[str]] | None = None, plots: bool = True,
                 readme: Path | None = None, runs: list[str] | None = None, html: bool = False,
                 readme_block: str = "results") -> list[Path]:
    from bench import adequacy, paired
    results_dir = Path(results_dir)
    df = frame(iter_records(results_dir, runs), filters, run_commits(results_dir))
    curves = adequacy.curves(df)
    df["adequacy"] = adequacy.annotate(df, curves)
    notes = adequacy.paper_notes(df, df["adequacy"])
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "md" in formats:
        parts = ["# defense-bench results\n", "Generated by `python -m bench report` from "
                 "`runs/*/records.jsonl`; do not edit. Accuracies with a Wilson 95% interval "
                 "where stored.\n", "## Paper view: defended accuracy under attack\n"]
        for title, pv in paper_view(df):
            parts += [f"### {title}\n", pv.to_markdown(index=False, floatfmt=".4g", missingval="—") + "\n"]
            if pv.attrs.get("note"):
                parts.append(pv.attrs["note"] + "\n")
            if notes.get(title):
                parts.append(notes[title] + "\n")
        parts += ["## All cells\n", markdown(df)]
        if provenance_note(df):
            parts.append(provenance_note(df) + "\n")
        parts += [s for s in (adequacy.markdown(df, curves), paired.markdown(df)) if s]
        write_atomic(results_dir / "results.md", "\n".join(parts))
        written.append(results_dir / "results.md")
    if "csv" in formats:
        write_atomic(results_dir / "results.csv", table(df).to_csv(index=False, float_format="%.17g"))
        written.append(results_dir / "results.csv")
    if "latex" in formats:
        blocks = [pv.to_latex(index=False, float_format="%.3f", na_rep="--", caption=title.replace("·", "/"))
                  for title, pv in paper_view(df)]
        write_atomic(results_dir / "results.tex", "\n".join(blocks))
        written.append(results_dir / "results.tex")
    if plots and not df.empty:
        written += write_plots(df, results_dir)
        written += adequacy.write_plots(df, results_dir / "plots", curves)
    if html:
        from bench import site
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


def markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:start -->", f"<!-- {block}:end -->"


def update_readme(readme: Path, results_dir: Path, df: pd.DataFrame, block: str = "results") -> Path:
    """Replace the block between ``<!-- block:start -->`` and ``<!-- block:end -->`` with the
    paper view (one table per dataset · classifier · threat) and one plot."""
    start, end = markers(block)
    text = readme.read_text()
    if start not in text or end not in text:
        from bench.errors import BenchError
        raise BenchError(f"{readme} has no '{start}' … '{end}' block to fill")
    parts = [start, "", f"_Generated by `python -m bench report --results-dir {results_dir} --readme "
             f"{readme.as_posix()} --readme-block {block}` from `{results_dir}/runs/*/records.jsonl`; "
             "do not edit by hand._", ""]
    for title, pv in paper_view(df):
        parts += [f"**{title}** (defended accuracy; device: {pv.attrs['devices']})", "",
                  pv.to_markdown(index=False, floatfmt=".3f", missingval="—"), ""]
        if pv.attrs.get("note"):
            parts += [pv.attrs["note"], ""]
    pareto = sorted((results_dir / "plots").glob("pareto_*.png"))
    if pareto:
        # Relative to the page, so that a page under docs/ shows it too.
        link = Path(os.path.relpath(pareto[0].resolve(), readme.resolve().parent)).as_posix()
        parts += [f"![accuracy vs latency]({link})", ""]
    parts.append(end)
    head, rest = text.split(start, 1)
    write_atomic(readme, head + "\n".join(parts) + rest.split(end, 1)[1])
    return readme


def write_plots(df: pd.DataFrame, results_dir: Path) -> list[Path]:
    from bench import plots
    out = results_dir / "plots"
    paths = plots.accuracy_vs_eps(df, out) + plots.accuracy_vs_latency(df, out) + plots.accuracy_vs_iterations(df, out)
    if "samples" in df.columns:
        for _, row in df[df["samples"].notna()].iterrows():
            path = results_dir / row["samples"]
            if not path.is_file():
                continue
            with np.load(path, allow_pickle=False) as z:
                samples = {k: z[k] for k in z.files}
            name = "_".join(str(row[k]) for k in ("dataset", "classifier", "threat", "attack")) + f"_{_fmt_eps(row['eps'])}"
            title = (f"{row['defense']} — {row['dataset']}, {row['attack']} eps={_fmt_eps(row['eps'])}, "
                     f"{THREAT_NAMES.get(row['threat'], row['threat'])}")
            safe = str(row["defense"]).replace(":", "_").replace("/", "_") + f"_{row['cell_key']}"
            paths.append(plots.image_grid(samples, title, out / "samples" / f"{name}_{safe}.png"))
    return paths
