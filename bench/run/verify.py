"""``python -m bench verify``: recompute stored cells from their stored identity and grade them.

Each stored cell is recomputed with its run's effective configuration (``config.json``),
narrowed to that cell, into a temporary folder (nothing is written to the results folder); the
per-sample outcome bitmaps (clean, attacked, defended clean, defended attacked) must be
identical. A worst-case row is checked by recombining its recomputed parts. Each cell is
recomputed with the torch thread count its record names, under the numerics mode its runs name
(``bench.cli.numerics``). Where the bitmaps differ, the cell is graded
(``bench.analysis.grading``): equivalent when this machine differs from the record's (device, CPU
vendor, instruction set, BLAS, numerics mode, torch) and the difference is noise-sized; not
comparable when the record comes from another kind of device and it is not; else it differs.
Exit 0 when every cell is identical or equivalent, 3 when the worst is "not comparable", 1 when a
cell differs or cannot be recomputed under its stored identity (the code, data or weights it
names are not what this checkout has).

    python -m bench verify --results-dir results/reference/default            # every cell
    python -m bench verify --results-dir results/reference/default --sample 3 # the 3 cheapest
    python -m bench verify --results-dir R --cells cade2dee,1f0c               # by key prefix
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from bench.analysis.frame import run_package_versions
from bench.analysis.grading import Grade, grade, machine_of, summary
from bench.analysis.worst import worst_case
from bench.core.config import Config, validate
from bench.core.errors import BenchError
from bench.core.record import OUTCOMES, Record, encode
from bench.core.registry import ATTACKS
from bench.core.shipped import differences
from bench.run.driver import Runner
from bench.store.provenance import cli_command
from bench.store.provenance import versions as provenance_versions
from bench.store.runs import iter_records


def stored_cells(results_dir: Path) -> tuple[list[Record], dict[str, dict[str, Any]]]:
    """(every stored record with a cell key, each run's config by run id)."""
    configs = {}
    for path in sorted(Path(results_dir).glob("runs/*/config.json")):
        try:
            configs[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    return [r for r in iter_records(results_dir) if r.get("cell_key") and r.get("correct")], configs


def cost(rec: Mapping[str, Any]) -> float:
    """What recomputing a cell costs, from its stored timings (ms per sample × n)."""
    ms = sum(rec.get(k) or 0 for k in ("attack_ms_per_sample", "classifier_ms_per_sample"))
    return (ms + 2 * (rec.get("defense_ms_per_sample") or 0)) * rec.get("n", 1)


def select(records: list[Record], sample: int | None, cells: list[str] | None) -> list[Record]:
    """The records to verify: named by key prefix, the ``sample`` cheapest grid cells, or all.
    A worst-case row brings its parts along."""
    by_key = {r["cell_key"]: r for r in records}
    if cells:
        chosen = []
        for prefix in cells:
            hits = [k for k in by_key if k.startswith(prefix)]
            if len(hits) != 1:
                raise BenchError(
                    f"cell {prefix!r} matches {len(hits)} stored cells"
                    + (f" ({', '.join(sorted(hits)[:5])})" if hits else "")
                    + "; give a unique key prefix"
                )
            chosen.append(by_key[hits[0]])
    elif sample is not None:
        grid = sorted((r for r in records if not combined(r)), key=lambda r: (cost(r), r["cell_key"]))
        chosen = grid[:sample]
    else:
        chosen = list(records)
    out = {r["cell_key"]: r for r in chosen}
    for r in chosen:
        for part in parts(r):
            if part not in by_key:
                raise BenchError(f"worst-case row {r['cell_key']} names a part {part} that is not stored")
            out[part] = by_key[part]
    return list(out.values())


def combined(rec: Mapping[str, Any]) -> bool:
    """A per-sample combination of other cells (a worst row, or a suite row such as ``aa``): checked
    by recombining its recomputed parts, never recomputed under its own name (``aa`` now plans the
    cascade, so a stored individual-mode ``aa`` row could not be)."""
    return rec.get("kind") == "worst"


def parts(rec: Mapping[str, Any]) -> list[str]:
    if not combined(rec):
        return []
    return list(rec.get("identity", {}).get("attack_params", {}).get("cells", []))


def narrowed(config: dict[str, Any], rec: Mapping[str, Any], tmp: Path, cache_dir: str | None = None) -> Any:
    """The run's configuration restricted to one (dataset, classifier, attack, eps, threat) group.
    The stored run's cache and data folders name another machine's paths: this machine's are used."""
    local = ("cache_dir", "results_dir")
    cfg = Config(
        **{f.name: copy.deepcopy(config[f.name]) for f in fields(Config) if f.name in config and f.name not in local}
    )
    if cache_dir:
        cfg.cache_dir = cache_dir
    cfg.dataset, cfg.defenses, cfg.attack = [rec["dataset"]], [rec["defense"]], [cascade_suite(rec) or rec["attack"]]
    cfg.eps = None if rec.get("eps") is None else [rec["eps"]]
    cfg.threat, cfg.attack_labels = [rec["threat"]], rec.get("attack_labels", cfg.attack_labels)
    params = rec.get("attack_params") or {}
    if params.get("component") == "square" and "rescale_schedule" not in params:
        # Stored before AutoAttack's standard schedule was Square's default (and named in its
        # identity): it ran torchattacks' stretched schedule, and is recomputed as it ran.
        cfg.attack_params[rec["attack"]] = {**cfg.attack_params.get(rec["attack"], {}), "rescale_schedule": True}
    cfg.results_dir, cfg.rerun, cfg.retrain = str(tmp), True, False
    # The device the record was computed on where this machine has it (a stored "auto" would move
    # a CPU record onto a GPU here); a CUDA record on a machine without one is recomputed on the CPU
    # and graded as such.
    cfg.device = "cuda" if rec.get("device_type") == "cuda" and torch.cuda.is_available() else "cpu"
    cfg.executor, cfg.wandb, cfg.offline = "local", "disabled", True
    cfg.time_budget = None  # a recomputation runs to its end, whatever budget the stored run had
    validate(cfg)
    return cfg


def cascade_suite(rec: Mapping[str, Any]) -> str | None:
    """The cascade suite a cascade stage's record was computed in (its earlier stages are
    recomputed with it: they choose its images); None for any other record."""
    stages = (rec.get("identity") or {}).get("cascade")
    if stages is None:
        return None
    path = [*(s["attack"] for s in stages), rec["attack"]]
    for name, members in ATTACKS.cascades().items():
        if list(members[: len(path)]) == path:
            return name
    raise BenchError(f"cell {rec['cell_key']}: no cascade of this checkout runs {' → '.join(path)}")


def other_device(rec: Mapping[str, Any], recomputed: Any) -> Mapping[str, Any] | None:
    """The recomputed cell whose identity is ``rec``'s but for the device type, if any."""
    mine = {k: v for k, v in (rec.get("identity") or {}).items() if k != "device_type"}
    if not mine or (rec.get("identity") or {}).get("device_type") in (None, "cpu"):
        return None
    return next(
        (
            x
            for x in recomputed
            if x.get("identity", {}).get("device_type") != rec["identity"]["device_type"]
            and {k: v for k, v in x.get("identity", {}).items() if k != "device_type"} == mine
        ),
        None,
    )


def recombine(rec: Mapping[str, Any], recomputed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """A worst-case row's bitmaps from its recomputed parts (robust only where every part is)."""
    got = [recomputed.get(k) for k in parts(rec)]
    if not got or any(g is None for g in got):
        return None
    n = int(rec["n"])
    w = worst_case([dict(g, n=n) for g in got if g is not None], n, OUTCOMES)
    if w is None or w.outcomes is None:
        raise BenchError(f"worst-case row {rec['cell_key']}: a recomputed part has no outcomes on {n} images")
    return {"correct": {k: encode(v) for k, v in w.outcomes.items()}}


def recorded_threads(rec: Mapping[str, Any]) -> int | None:
    """The torch thread count a record was computed with (older records name it in ``device``)."""
    if rec.get("torch_threads"):
        return int(rec["torch_threads"])
    m = re.search(r"(\d+) threads\)", str(rec.get("device", "")))
    return int(m.group(1)) if m else None


def label(rec: Mapping[str, Any]) -> str:
    eps = "" if rec.get("eps") is None else f" eps {rec['eps']:g}"
    return (
        f"{rec['cell_key']} {rec.get('dataset')} {rec.get('classifier')} {rec.get('defense')} "
        f"{rec.get('attack')}{eps} {rec.get('threat')}"
    )


def _line(rec: Mapping[str, Any], g: Grade) -> str:
    shown = {
        "identical": "identical",
        "equivalent": "equivalent (machine differs; noise-sized): ",
        "not comparable": "NOT COMPARABLE (another device, not bit-comparable): ",
        "differs": "DIFFERS: ",
    }[g.grade]
    return f"[verify] {label(rec)}: {shown}{g.why}" if g.grade != "identical" else f"[verify] {label(rec)}: identical"


def verify(
    results_dir: Path, sample: int | None = None, cells: list[str] | None = None, cache_dir: str | None = None
) -> int:
    """Recompute the selected cells; print one graded line per cell (``bench.analysis.grading``) and
    a summary; return the exit status (0 identical or equivalent, 3 not comparable, 1 differs)."""
    records, configs = stored_cells(results_dir)
    if not records:
        raise BenchError(f"no stored cells under {results_dir}")
    chosen = select(records, sample, cells)
    grid = [r for r in chosen if not combined(r)]  # worst and suite rows: recombined below
    groups: dict[tuple, list[Record]] = {}
    for r in grid:
        if r.get("run_id") not in configs:
            raise BenchError(f"cell {r['cell_key']}: its run {r.get('run_id')} has no readable config.json")
        # A cascade stage is recomputed with its cascade, an individual cell alone: never one group.
        g = (
            r["run_id"],
            r["dataset"],
            r.get("attack"),
            r.get("eps"),
            r.get("threat"),
            r.get("attack_labels"),
            cascade_suite(r),
        )
        groups.setdefault(g, []).append(r)
    versions, here_versions = run_package_versions(results_dir), provenance_versions()
    recomputed: dict[str, Mapping[str, Any]] = {}
    grades: list[Grade] = []
    here: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        for i, (g, recs) in enumerate(sorted(groups.items(), key=str)):
            cfg = narrowed(configs[g[0]], recs[0], Path(tmp) / f"g{i}", cache_dir)
            cfg.defenses = sorted({r["defense"] for r in recs})
            # Recomputed with the thread count it was computed with: a reduction split over
            # another number of threads may round differently in the last bit.
            threads, before = recorded_threads(recs[0]), torch.get_num_threads()
            if threads:
                torch.set_num_threads(int(threads))
            try:
                with Runner(cfg, cli_command(["verify", "--results-dir", str(results_dir)])) as runner:
                    new: dict[str, Mapping[str, Any]] = {r["cell_key"]: r for r in runner.run() if not combined(r)}
                    here = machine_of(
                        runner.worker.machine
                        | {"device": runner.worker.device_label, "device_type": runner.worker.device.type},
                        here_versions,
                    )
            finally:
                torch.set_num_threads(before)
            recomputed.update(new)
            for r in recs:
                there = machine_of(r, versions.get(r.get("run_id") or ""))
                # A record from another kind of device (a GPU cell recomputed on this CPU): the same
                # cell but for its device_type, an identity field, so its key differs; graded as such.
                other = r["cell_key"] not in new and other_device(r, new.values())
                if other:
                    new[r["cell_key"]] = other
                if r["cell_key"] not in new:
                    twin = next((x for x in new.values() if x.get("defense") == r["defense"]), None)
                    got = Grade(
                        "differs",
                        "cannot be recomputed under its stored identity"
                        + (
                            f": this checkout computes {differences(r.get('identity', {}), twin['identity'])}"
                            if twin
                            else ""
                        ),
                    )
                else:
                    got = grade(r, new[r["cell_key"]], here, there)
                grades.append(got)
                print(_line(r, got), flush=True)
    by_key = {x["cell_key"]: x for x in records}
    for r in chosen:
        if combined(r):
            # Its parts may come from several machines (GPU cells beside CPU ones): graded against the
            # part whose device is not this one's, if any, else its first part's.
            machines = [machine_of(by_key[k], versions.get(by_key[k].get("run_id") or "")) for k in parts(r)] or [
                machine_of(r, versions.get(r.get("run_id") or ""))
            ]
            there = next((m for m in machines if here and m.get("device") != here.get("device")), machines[0])
            got = grade(r, recombine(r, recomputed), here or there, there)
            grades.append(got)
            print(_line(r, got), flush=True)
    line, status = summary(grades)
    print(line)
    return status
