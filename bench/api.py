"""The library entry point: ``bench.evaluate(...)`` runs a grid from Python exactly as
``python -m bench`` runs it from the command line (the CLI is a thin wrapper over ``run``).

    import bench
    records = bench.evaluate(defenses=["none", "bitdepth"], attack=["fgsm"], eps=[0.3], limit=200,
                             offline=True)
    print(bench.table(records)[["defense", "defended_adv_acc"]])

Settings are the keys of ``bench.toml``'s ``[run]`` table (``python -m bench --help`` lists them as
flags), validated by the same code as the file and the flags; parameter tables (``defense_params``,
``attack_params``, ``classifier_recipe``, ``classifier_recipes``) override the file's tables.
Precedence: class defaults < the config file < these arguments.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from bench.analysis.frame import frame
from bench.builtin.classifiers import check_recipe, get_classifier, make_classifier
from bench.builtin.data import MNIST
from bench.builtin.userdata import UserDataset, from_tensors
from bench.core import identity, shipped
from bench.core.config import TABLE_KEYS, Config, resolve, resolve_device, validate
from bench.core.errors import BenchError, ContractError, PluginFailed
from bench.core.record import Record, accuracies, decode, decode_tensor, encode
from bench.core.registry import ATTACKS, DATASETS, DEFENSES, build
from bench.core.shipped import sha256_file
from bench.core.threats import attack_model
from bench.render.blocks import fill
from bench.render.report import write_report
from bench.run.driver import Runner, Summary
from bench.run.executors import LocalExecutor, RayExecutor, make_executor
from bench.run.timing import BatchTimer
from bench.store.provenance import device_name, make_env
from bench.store.runs import RunWriter, iter_records
from defenses.base import Defense

# The toolkit: what a script beside the library uses (tools/, a user's benchmark script or
# notebook), from this one module, so that the layers behind it may move without breaking them
# (tests/test_layers.py holds tools/ to bench, bench.api and bench.plugin). The runner and its
# executors; configuration (resolve = flags and file merged and checked by the one path); the
# registries and the built-in data and classifiers; shipped, the weights zoo (its folder, the
# layout of a provenance file), and sha256_file, the hash shipped weights are checked by; the record, its codec and the one reader and
# writer of a results folder; provenance (device_name, make_env); BatchTimer, the runner's clock;
# fill, which writes a generated block into a Markdown file.
__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "MNIST",
    "BatchTimer",
    "BenchError",
    "Config",
    "ContractError",
    "Defense",
    "Interrupted",
    "LocalExecutor",
    "PluginFailed",
    "RayExecutor",
    "Record",
    "RunWriter",
    "Runner",
    "Summary",
    "accuracies",
    "attacked_model",
    "build",
    "check_recipe",
    "decode",
    "decode_tensor",
    "device_name",
    "encode",
    "evaluate",
    "fill",
    "get_classifier",
    "identity",
    "iter_records",
    "make_classifier",
    "make_env",
    "resolve",
    "resolve_device",
    "run",
    "sha256_file",
    "shipped",
    "table",
    "validate",
]


class Interrupted(Exception):
    """A run stopped by Ctrl-C; the cells stored so far are kept (a rerun resumes)."""

    def __init__(self, stored: int, where: Path) -> None:
        super().__init__(f"{stored} new cell(s) stored in {where}; rerun the same command to resume")
        self.stored, self.where = stored, where


def run(
    cfg: Config, command: list[str], report: bool = False, **objects: Any
) -> tuple[list[Record], Summary, list[Path]]:
    """Run a validated configuration; returns its records (computed and taken from the store), the
    summary of what was computed and what was reused (and left), and, with ``report``, the files of
    the regenerated report (written while the results folder is still locked, so no other run
    appends while its tables are drawn). ``objects``: a model, datasets, defenses handed over as
    objects (``Runner``'s keyword arguments)."""
    executor = make_executor(cfg.executor, cfg.ray_address) if cfg.executor != "local" else None
    with Runner(cfg, command, **objects) as runner:
        try:
            records = runner.run(executor)
        except KeyboardInterrupt:
            raise Interrupted(runner.writer.count, runner.writer.dir) from None
        except (ContractError, PluginFailed) as exc:
            # A broken plugin loses nothing: its error says where the cells finished before it are.
            exc.stored_in(runner.writer.count, runner.writer.dir)
            raise
        # Tables, plots and the leaderboard page: what a run leaves for its user to open.
        written = write_report(Path(cfg.results_dir), html=True) if report else []
        return records, runner.summary(), written


def object_name(obj: Any) -> str:
    """How a handed-over object is named in records: the name the registry built it under, else
    its class as the command line names an external plugin (``module:Class``), so the same
    class with the same weights is the same cell whichever way it was given."""
    return obj.__dict__.get("registered_name") or f"{type(obj).__module__}:{type(obj).__qualname__}"


def _objects(settings: dict[str, Any], data: Any) -> dict[str, Any]:
    """Move the objects among ``settings`` (a model, Defense objects) and ``data`` into Runner's
    keyword arguments, leaving the names they run under in ``settings``."""
    objects: dict[str, Any] = {}
    model = settings.get("classifier")
    if isinstance(model, nn.Module):
        settings["classifier"] = object_name(model)
        objects["classifier"] = model
    elif model is not None and not isinstance(model, str):
        raise BenchError(
            f"classifier must be a registered name, 'module:Class' or a torch.nn.Module, not {type(model).__name__}"
        )
    defenses = settings.get("defenses")
    if isinstance(defenses, (list, tuple)) and any(isinstance(d, nn.Module) for d in defenses):
        given = {}
        for d in defenses:
            if isinstance(d, nn.Module):
                if not isinstance(d, Defense):
                    raise BenchError(f"defense objects must be defenses.base.Defense, not {type(d).__name__}")
                given[object_name(d)] = d
        settings["defenses"] = [d if isinstance(d, str) else object_name(d) for d in defenses]
        objects["defenses"] = given
    if data is not None:
        if "dataset" in settings:
            raise BenchError("give data or dataset, not both")
        spec = data if isinstance(data, UserDataset) else None
        if isinstance(data, str):
            settings["dataset"] = [data]
        else:
            spec = spec or from_tensors(data)
            settings["dataset"] = [spec.name]
            objects["datasets"] = {spec.name: spec}
    return objects


def evaluate(
    *,
    config: str | Path | None = None,
    results_dir: str | Path | None = None,
    report: bool = False,
    verbose: bool = False,
    data: Any = None,
    **settings: Any,
) -> list[Record]:
    """Evaluate a grid and return its records (``bench.core.record.Record`` dicts: accuracies with
    Wilson 95% intervals, per-sample bitmaps, identity, provenance).

    Args (keyword-only): config = None (a ``bench.toml``-style file; None: ./bench.toml when present),
    results_dir = None (None: a temporary folder, nothing kept; a path: stored exactly as the CLI
    stores, and cells already stored there are reused), report = False (also regenerate the
    folder's tables and plots, as the CLI does), verbose = False (print the summary line),
    data = None (a dataset name such as ``"folder:PATH"``; ``(x, y)`` or ``(x_train, y_train, x_test,
    y_test)`` tensors, images N×C×H×W in [0,1]; or a torch Dataset of (image, label); instead of
    ``dataset``), **settings: any ``[run]`` key (``defenses``, ``attack``, ``eps``, ``threat``,
    ``dataset``, ``limit``, ``offline`` …) or a parameter table (``defense_params`` …).
    ``classifier`` may also be a ``torch.nn.Module`` (used as it is; named ``module:Class``,
    identified by its weights hash) and ``defenses`` may hold ``Defense`` objects. Tensors are
    identified by their content's fingerprint.
    Example: ``bench.evaluate(classifier=net, data=(x, y), defenses=["none", "bitdepth"], eps=[0.1])``
    """
    tables = {k: settings.pop(k) for k in TABLE_KEYS if k in settings}
    objects = _objects(settings, data)
    command = ["bench.evaluate", json.dumps({**settings, **tables}, sort_keys=True, default=str)]
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        settings["results_dir"] = str(results_dir) if results_dir is not None else tmp
        cfg = resolve(settings, str(config) if config is not None else None, tables)
        records, summary, _ = run(cfg, command, report=report and results_dir is not None, **objects)
        if verbose:
            print(summary)
        elif summary.budget:  # stopped by time_budget: the records are not the whole grid
            print(summary.budget, file=sys.stderr)
    return records


def table(records: list[Record]) -> pd.DataFrame:
    """Records as the report's frame: one row per cell identity, with variant labels."""
    return frame(records)


def attacked_model(
    defense: str, *, threat: str = "white", config: str | Path | None = None, **settings: Any
) -> tuple[nn.Module, Any, Any]:
    """The model an attack meets in a cell, and the test images and labels the run scores: for
    another attack library to run on exactly what the harness attacks (tools/aa_versus_original.py).

    Args (keyword-only besides ``defense``): threat = "white" (gray: the bare classifier; white: the
    classifier behind the defense, end to end; bpda: the defense's Jacobian taken as the identity),
    config = None, **settings: any ``[run]`` key (``dataset``, ``classifier``, ``limit``, ``offline`` …).
    Returns (model in eval mode, images N×C×H×W in [0,1], labels); the weights come through the same
    ladder as a run's (the shipped zoo, the cache, training).
    Example: ``model, x, y = bench.api.attacked_model("countergan", limit=64, offline=True)``
    """
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        settings = {**settings, "defenses": [defense], "threat": [threat], "results_dir": tmp}
        cfg = resolve(settings, str(config) if config is not None else None)
        with Runner(cfg, ["bench.api.attacked_model", defense]) as runner:
            prep, _ = runner.prepare(runner.specs[0])
    model = attack_model(cfg.threat[0], prep.classifier.eval(), prep.defenses[defense].eval())
    return model, prep.test.x, prep.test.y
