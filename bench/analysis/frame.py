"""Stored records as one pandas frame: a row per cell identity (the latest of a rerun), with the
labels that tell a defense's variants and an attack's settings apart, and each FGSM check redone
over every stored cell."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.checks import with_record_checks
from bench.core import record
from bench.core.identity import aspect_of, digest, flatten, of_record
from bench.core.labels import short

ROW_KEY = ["dataset", "classifier", "defense", "threat", "attack", "eps"]
ACCS = ["clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc"]
COLUMNS = [*ROW_KEY, "n", *ACCS, "defense_ms_per_sample", "attack_ms_per_sample", "device"]


def _differing(flat: pd.Series, skip) -> list[str]:
    """The identity fields whose values differ among these records."""
    keys = sorted({k for d in flat for k in d if not skip(k)})
    return [k for k in keys if len({json.dumps(d.get(k), default=str) for d in flat}) > 1]


def _label(key: str, value: Any) -> str:
    if key == "attack_params.mode":  # a suite row of AutoAttack: how its components ran (issue 31)
        return "cascade" if value == "cascade" else "individual"
    return f"{key}={short(value)}"


def _labels(flat: pd.Series, fields: list[str]) -> pd.Series:
    return flat.map(lambda d: ", ".join(_label(k, d.get(k)) for k in fields))


def _identity_of(row: pd.Series) -> dict[str, Any]:
    return flatten(of_record(row))


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
                df.loc[jdx, "variant"] = [
                    ", ".join(x for x in (v, a) if x) for v, a in zip(df.loc[jdx, "variant"], _labels(flat[jdx], own))
                ]
    for _, idx in df.groupby([*table, "attack", "eps"], dropna=False, sort=False).groups.items():
        # A worst-case row's cells are the row's own cells (one set per defense), not an attack setting.
        fields = _differing(
            flat[idx], lambda k: not k.startswith("attack_params") or k.startswith("attack_params.cells")
        )
        df.loc[idx, "attack_variant"] = _labels(flat[idx], fields)
    return df


def frame(
    records: Iterable[Mapping[str, Any]],
    filters: dict[str, list[str]] | None = None,
    commits: dict[str, str | None] | None = None,
    versions: dict[str, str | None] | None = None,
) -> pd.DataFrame:
    """One row per stored cell identity (a ``--rerun`` of the same cell: the latest wins).
    ``commits`` and ``versions`` (run id → git commit / the versions that set the numbers, from
    each run's env.json) become the ``git_commit`` and ``versions`` columns."""
    df = pd.DataFrame(record.rows(records))
    if df.empty:
        return pd.DataFrame(columns=[*COLUMNS, "variant", "attack_variant", "git_commit", "versions"])
    for col in [*COLUMNS, "time", "cell_key", "identity", "run_id"]:
        if col not in df.columns:
            df[col] = None
    df["eps"] = pd.to_numeric(df["eps"], errors="coerce")
    # A record from before cell keys existed is keyed by what it showed: its row and n.
    missing = df["cell_key"].isna()
    df.loc[missing, "cell_key"] = df[missing].apply(
        lambda r: "legacy-" + digest([str(r[k]) for k in ROW_KEY] + [_identity_of(r)]), axis=1
    )
    df = df.sort_values("time", kind="stable", na_position="first")
    df = df.drop_duplicates(subset=["cell_key"], keep="last").reset_index(drop=True)
    if "iterative" in df.columns:  # over every stored cell, before filters hide an FGSM twin
        found = with_record_checks(df.to_dict("records"))
        df["checks"] = [[c.message for c in cs] for cs in found]
        df["check_codes"] = [[c.code for c in cs] for cs in found]
    for col, allowed in (filters or {}).items():
        if allowed:
            df = df[df[col].isin(allowed)].reset_index(drop=True)
    df["git_commit"] = df["run_id"].map(lambda r: (commits or {}).get(r))
    df["versions"] = df["run_id"].map(lambda r: (versions or {}).get(r))
    df = with_variants(df)
    return df.sort_values([*ROW_KEY, "variant", "attack_variant"], kind="stable", na_position="first").reset_index(
        drop=True
    )


def run_commits(results_dir: Path) -> dict[str, str | None]:
    """run id → the git commit its env.json recorded."""
    out = {}
    for env in Path(results_dir).glob("runs/*/env.json"):
        try:
            out[env.parent.name] = json.loads(env.read_text()).get("git_commit")
        except (OSError, json.JSONDecodeError):
            out[env.parent.name] = None
    return out


# The packages whose versions change a cell's numbers (kernels, attacks, data decoding), as a table's
# provenance note names them; plotting and tabulating packages do not.
NUMERIC_PACKAGES = ("python", "torch", "torchvision", "torchattacks", "numpy")


def run_package_versions(results_dir: Path) -> dict[str, dict[str, Any]]:
    """run id → the package versions its env.json names ({} where unreadable)."""
    out: dict[str, dict[str, Any]] = {}
    for env in Path(results_dir).glob("runs/*/env.json"):
        try:
            out[env.parent.name] = json.loads(env.read_text()).get("versions") or {}
        except (OSError, json.JSONDecodeError):
            out[env.parent.name] = {}
    return out


def run_versions(results_dir: Path) -> dict[str, str | None]:
    """run id → "python 3.11.7, torch 2.14.1, …", the packages that set the numbers (None if none named)."""
    return {
        run: ", ".join(f"{k} {v[k]}" for k in NUMERIC_PACKAGES if v.get(k)) or None
        for run, v in run_package_versions(results_dir).items()
    }
