"""``python -m bench weights``: retrain the reference zoo; compare with it, or ship to it.

Each model of ``bench/zoo/zoo.toml`` is trained anew (``retrain``) in a fresh cache, with the
settings of ``bench.toml`` and one torch thread by default (a single-threaded CPU training does
not depend on how many cores the machine has, so two machines of one CPU class agree bit for
bit). Then, per model, one line says whether the new weights equal the shipped ones. With
``--ship`` (refused from a dirty tree) the new weights and their provenance replace the shipped.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from bench.core import identity, shipped
from bench.core.checkpoint import save_state, state_hash
from bench.core.config import resolve
from bench.core.errors import BenchError
from bench.core.registry import DATASETS
from bench.run.driver import Runner
from bench.run.plan import fit_ident
from bench.store.provenance import cli_command, device_name, git_state, machine, versions
from bench.store.runs import write_atomic

PLAN = shipped.ZOO_DIR / "zoo.toml"


def plan(path: Path | None = None) -> list[dict[str, Any]]:
    """The zoo's entries: (dataset, classifier, defenses trained against it)."""
    path = Path(path or PLAN)
    data = tomllib.loads(path.read_text())
    out = []
    for i, m in enumerate(data.get("model", [])):
        unknown = set(m) - {"dataset", "classifier", "defenses"}
        if unknown or not isinstance(m.get("dataset"), str) or not isinstance(m.get("classifier"), str):
            raise BenchError(
                f"{path} model {i + 1}: needs dataset and classifier (strings), optional defenses; "
                f"unknown: {', '.join(sorted(unknown)) or 'none'}"
            )
        out.append({"dataset": m["dataset"], "classifier": m["classifier"], "defenses": list(m.get("defenses", []))})
    return out


def names(entries: list[dict[str, Any]]) -> list[str]:
    """Every model as ``dataset/name`` (what ``--only`` and ``--skip`` take)."""
    return [f"{e['dataset']}/{n}" for e in entries for n in [e["classifier"], *e["defenses"]]]


def provenance(
    kind: str,
    name: str,
    data: Any,
    ident: dict[str, Any],
    weights_hash: str,
    path: Path,
    seconds: float,
    device: torch.device,
    commit: str | None,
    argv: list[str],
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "dataset": data.name,
        "file": path.name,
        "sha256": shipped.sha256_file(path),
        "weights_hash": weights_hash,
        "size_bytes": path.stat().st_size,
        "key": identity.key(ident),
        "identity": ident,
        "data_fingerprint": data.fingerprint,
        "data_source": {"train": data.train.source, "test": data.test.source},
        "command": cli_command(["weights", *argv]),
        "git_commit": commit,
        "train_seconds": round(seconds, 1),
        "device": device_name(device),
        **machine(device),
        "versions": versions(),
        "trained": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def classifier_mismatch(dataset: str, clf: str, trained_hash: str, shipping_it: bool) -> str | None:
    """A defense is shipped only against the classifier users get: the shipped one (or the one
    shipped in the same run). Two trainings of it that differ in a bit would leave the defense's
    identity naming a classifier no one has."""
    if shipping_it:
        return None
    meta = shipped.ZOO_DIR / f"{shipped.stem('classifier', dataset, clf)}.json"
    if not meta.is_file():
        return f"refusing to ship defenses against {dataset}/{clf}: that classifier is not shipped (ship it too)"
    have = json.loads(meta.read_text()).get("weights_hash")
    if have != trained_hash:
        return (
            f"refusing to ship defenses against {dataset}/{clf}: retrained here it has weights {trained_hash}, "
            f"the shipped one {have} (retrain and ship the classifier too)"
        )
    return None


def report(kind: str, name: str, dataset: str, weights_hash: str, seconds: float) -> str:
    """One line: the new weights against the shipped ones."""
    meta_path = shipped.ZOO_DIR / f"{shipped.stem(kind, dataset, name)}.json"
    if not meta_path.is_file():
        verdict = "nothing shipped to compare with"
    else:
        old = json.loads(meta_path.read_text()).get("weights_hash")
        verdict = "identical to the shipped weights" if old == weights_hash else f"DIFFERS from the shipped {old}"
    return f"[weights] {dataset}/{name}: trained in {seconds:.0f} s, weights {weights_hash}: {verdict}"


def run(argv: list[str], only: list[str] | None, skip: list[str], ship: bool, threads: int, config: str | None) -> int:
    entries = plan()
    known = names(entries)
    for n in [*(only or []), *skip]:
        if n not in known:
            raise BenchError(f"unknown zoo model {n!r}; available: {', '.join(known)}")
    commit, dirty = git_state()
    if ship and (commit is None or dirty):
        raise BenchError(
            "refusing to ship weights from a dirty tree (uncommitted: "
            f"{', '.join(dirty[:5]) or 'no git commit'}); commit first"
        )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(entries, argv, only, skip, ship, commit, config)
    finally:
        torch.set_num_threads(before)


def _train(
    entries: list[dict[str, Any]],
    argv: list[str],
    only: list[str] | None,
    skip: list[str],
    ship: bool,
    commit: str | None,
    config: str | None,
) -> int:
    """Train every wanted model of ``entries`` (one thread count set by ``run``)."""
    wanted = lambda n: (only is None or n in only) and n not in skip
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as tmp:
        for e in entries:
            ds, clf = e["dataset"], e["classifier"]
            defenses = [d for d in e["defenses"] if wanted(f"{ds}/{d}")]
            if not wanted(f"{ds}/{clf}") and not defenses:
                continue
            cfg = resolve(
                {
                    "dataset": ds,
                    "classifier": clf,
                    "defenses": ",".join(defenses) or "none",
                    "offline": True,
                    "retrain": True,
                    "cache_dir": f"{tmp}/cache",
                    "device": "cpu",
                    "results_dir": f"{tmp}/results-{ds}-{clf}",
                },
                config,
            )
            with Runner(cfg, cli_command(["weights", *argv])) as runner:
                spec = DATASETS.get(ds)()
                data = spec.load(Path(cfg.data_root), True)
                t0 = time.perf_counter()
                model, info = runner.models.classifier_for(spec, data)
                seconds = time.perf_counter() - t0
                todo: list[tuple[str, str, torch.nn.Module, dict[str, Any] | None, float, tuple[str, ...]]] = (
                    [("classifier", clf, model, info["classifier_identity"], seconds, ())]
                    if wanted(f"{ds}/{clf}")
                    else []
                )
                for name in defenses:
                    d = runner.models.build_defense(name, spec)
                    ident = fit_ident(d, info["classifier_hash"], data.fingerprint, cfg.seed)
                    t0 = time.perf_counter()
                    runner.models.ensure_fitted(d, name, model, data, spec, ident)
                    todo.append(("defense", name, d, ident, time.perf_counter() - t0, d.training_only))
                for kind, name, module, ident, seconds, ignore in todo:
                    h = state_hash(module, ignore)
                    line = report(kind, name, ds, h, seconds)
                    print(line, flush=True)
                    lines.append(line)
                    if ship and kind == "defense":
                        mismatch = classifier_mismatch(ds, clf, info["classifier_hash"], wanted(f"{ds}/{clf}"))
                        if mismatch:
                            raise BenchError(mismatch)
                    if ship:
                        stem = shipped.stem(kind, ds, name)
                        path = shipped.ZOO_DIR / f"{stem}.pt"
                        save_state(module, path, ignore=ignore)
                        assert ident is not None  # only what trains is shipped
                        meta = provenance(kind, name, data, ident, h, path, seconds, runner.device, commit, argv)
                        write_atomic(shipped.ZOO_DIR / f"{stem}.json", shipped.text(meta))
                        print(
                            f"[weights] shipped {path.relative_to(shipped.ZOO_DIR.parent.parent)} "
                            f"({path.stat().st_size / 2**20:.1f} MiB)",
                            flush=True,
                        )
    same = sum("identical" in ln for ln in lines)
    print(f"[weights] {len(lines)} model(s) trained; {same} identical to the shipped weights")
    return 0


def upgrade(zoo_dir: Path | None = None) -> list[Path]:
    """Rewrite the provenance files written in an older layout in today's (``shipped.read``): only
    the identity's layout changes, never its key (checked before the file is written) nor any other
    field. Returns the files rewritten."""
    changed = []
    for path in sorted(Path(zoo_dir or shipped.ZOO_DIR).glob("*.json")):
        before = json.loads(path.read_text())
        after = shipped.read(path)
        if after == before:
            continue
        if identity.key(after["identity"]) != before.get("key"):
            raise BenchError(f"{path.name}: its upgraded identity would not hash to its key {before.get('key')}")
        write_atomic(path, shipped.text(after))
        changed.append(path)
    return changed
