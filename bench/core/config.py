"""Effective configuration: class defaults < bench.toml < command line.

``bench.toml`` has five tables, all optional; an unknown table or key is an error, and so
is a value of the wrong type (``rerun = "false"`` is not a boolean)::

    [run]          # the same names as the CLI flags (underscores), e.g. limit = 1000
    [classifier]   # training recipe for every classifier trained on demand
    [classifiers.<name>]  # recipe overrides for one classifier (e.g. adversarial training)
    [defenses.<name>]  # keyword hyperparameters of that defense
    [attacks.<name>]   # keyword hyperparameters of that attack
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from bench.core.errors import BenchError
from bench.core.numerics import MODES as NUMERICS_MODES
from bench.core.threats import THREATS, Threat

LIST_KEYS = ("dataset", "defenses", "attack", "eps", "threat")
WANDB_MODES = ("disabled", "offline", "online")  # Weights & Biases logging (bench.render.wandb_log)
EXECUTORS = ("local", "ray")
TABLES = ("run", "classifier", "classifiers", "defenses", "attacks")
GRID_TABLE = "grid"  # a grid file's steps (bench.cli.grid); not part of a configuration
BOOL_KEYS = ("offline", "rerun", "retrain")
STR_KEYS = (
    "device",
    "numerics",
    "results_dir",
    "data_root",
    "cache_dir",
    "classifier",
    "classifier_weights",
    "executor",
    "ray_address",
    "wandb",
    "wandb_project",
    "attack_labels",
)
POSITIVE_INT_KEYS = ("limit", "batch_size", "eot_samples", "image_size", "resubmit", "time_budget")
NON_NEGATIVE_INT_KEYS = ("seed", "warmup")
OPTIONAL_KEYS = ("limit", "image_size", "time_budget")  # None: the whole test split / as stored / no deadline


@dataclass
class Config:
    dataset: list[str] = field(default_factory=lambda: ["mnist"])
    defenses: list[str] = field(default_factory=lambda: ["none"])
    attack: list[str] = field(default_factory=lambda: ["fgsm"])
    eps: list[float] | None = None  # None: the dataset's default
    threat: list[Threat] = field(default_factory=lambda: [Threat("gray")])
    limit: int | None = None  # None: the whole test split
    image_size: int | None = None  # folder: datasets: resize every image to N×N (None: as stored)
    batch_size: int = 256
    device: str = "auto"
    numerics: str = "portable"  # bench.core.numerics: portable (same bits on any x86) or native
    seed: int = 0
    results_dir: str = "results"
    data_root: str = "data"
    cache_dir: str = str(Path.home() / ".cache" / "defense-bench")
    classifier: str | None = None  # None: the dataset's default
    classifier_weights: str | None = None
    offline: bool = False
    rerun: bool = False
    retrain: bool = False  # train classifiers and defenses anew (not shipped, not cached)
    warmup: int = 1
    eot_samples: int = 8
    resubmit: int = 1  # classify each input N times through a randomised defense
    attack_labels: str = "true"  # craft with the true labels, or the classifier's predictions
    executor: str = "local"
    # Seconds this run may compute; then it stores what finished (cells, and the finished batches of
    # the cell in progress) and stops, saying what is left (bench.run.worker.OutOfTime).
    time_budget: int | None = None
    ray_address: str | None = None
    wandb: str = "disabled"
    wandb_project: str = "defense-bench"
    classifier_recipe: dict[str, Any] = field(default_factory=dict)
    classifier_recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    defense_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Threats are values wherever a Config is built (a library caller, a Ray worker); text that
        # does not parse is left for validate() to refuse in one line.
        parsed: list[Any] = []
        for t in self.threat:
            try:
                parsed.append(Threat(t))
            except ValueError:
                parsed.append(t)
        self.threat = parsed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RUN_KEYS = {f.name for f in fields(Config)} - {
    "classifier_recipe",
    "classifier_recipes",
    "defense_params",
    "attack_params",
}


def parse_eps(value: Any) -> float:
    """A number in (0, 1]; strings may be fractions such as ``8/255``."""
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            eps = float(num) / float(den)
        elif isinstance(value, bool):
            raise ValueError
        else:
            eps = float(value)
    except (ValueError, ZeroDivisionError):
        raise BenchError(f"invalid eps {value!r}: not a number") from None
    if not 0 < eps <= 1:
        raise BenchError(f"invalid eps {value!r}: must be in (0, 1] (images are in [0,1])")
    return eps


def split_list(value: Any) -> list:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        items = [value]
    items = [v for v in items if v != ""]
    if not items:
        raise BenchError(f"empty list {value!r}")
    return list(dict.fromkeys(items))  # drop duplicates, keep order


def load_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BenchError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(TABLES) - {GRID_TABLE})
    if unknown:
        raise BenchError(f"unknown table(s) {', '.join(unknown)} in {path}; valid: {', '.join(TABLES)}")
    for table in TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise BenchError(f"[{table}] in {path} must be a table")
    bad = sorted(set(data.get("run", {})) - RUN_KEYS)
    if bad:
        raise BenchError(f"unknown key(s) {', '.join(bad)} in [run] of {path}; valid: {', '.join(sorted(RUN_KEYS))}")
    for table in ("classifiers", "defenses", "attacks"):
        for name, params in data.get(table, {}).items():
            if not isinstance(params, dict):
                raise BenchError(f"[{table}.{name}] in {path} must be a table of parameters")
    return data


TABLE_KEYS = {
    "classifier_recipe": "classifier",
    "classifier_recipes": "classifiers",
    "defense_params": "defenses",
    "attack_params": "attacks",
}  # Config field → the bench.toml table it comes from


def load_grid(path: Path) -> list[list[str]]:
    """The ``steps`` of a grid file's ``[grid]`` table: lists of ``python -m bench`` arguments."""
    data = load_toml(Path(path))
    steps = data.get(GRID_TABLE, {}).get("steps") if isinstance(data.get(GRID_TABLE), dict) else None
    if (
        not steps
        or not isinstance(steps, list)
        or not all(isinstance(s, list) and s and all(isinstance(a, str) for a in s) for s in steps)
    ):
        raise BenchError(
            f"{path} has no [grid] steps: a list of argument lists, e.g. "
            'steps = [["--defenses", "none", "--attack", "fgsm"]]'
        )
    bad = sorted(set(data[GRID_TABLE]) - {"steps"})
    if bad:
        raise BenchError(f"unknown key(s) {', '.join(bad)} in [grid] of {path}; valid: steps")
    return steps


def resolve(cli: dict[str, Any], config_path: str | None, tables: dict[str, Any] | None = None) -> Config:
    """Merge defaults, the config file (``bench.toml`` in the cwd if present) and the caller's values
    (command-line flags, or ``bench.evaluate``'s arguments), all checked by one path: unknown keys
    and wrong types are errors wherever they come from. ``tables`` override the file's parameter
    tables by name (``{"defense_params": {"countergan": {"iterations": 10}}}``)."""
    cfg = Config()
    path = Path(config_path) if config_path else Path("bench.toml")
    file = load_toml(path) if (config_path or path.is_file()) else {}
    given = {k: v for k, v in cli.items() if v is not None}
    bad = sorted(set(given) - RUN_KEYS)
    if bad:
        raise BenchError(f"unknown setting(s) {', '.join(bad)}; valid: {', '.join(sorted(RUN_KEYS | set(TABLE_KEYS)))}")
    for key, value in file.get("run", {}).items():
        check_type(key, value, f"[run] {key} in {path}")
    for key, value in given.items():
        check_type(key, value, key)
    merged = {**file.get("run", {}), **given}
    for key, value in merged.items():
        setattr(cfg, key, split_list(value) if key in LIST_KEYS else value)
    tables = dict(tables or {})
    bad = sorted(set(tables) - set(TABLE_KEYS))
    if bad:
        raise BenchError(f"unknown parameter table(s) {', '.join(bad)}; valid: {', '.join(TABLE_KEYS)}")
    for field_name, table in TABLE_KEYS.items():
        given_table = tables.get(field_name, {})
        nested = field_name != "classifier_recipe"  # the others map a plugin name to its parameters
        if not isinstance(given_table, dict) or (nested and not all(isinstance(v, dict) for v in given_table.values())):
            raise BenchError(
                f"{field_name} must be a table "
                + ("of parameter tables (name → {key: value})" if nested else "of recipe parameters")
            )
        value = {**file.get(table, {}), **given_table}
        setattr(cfg, field_name, {k: dict(v) for k, v in value.items()} if nested else dict(value))
    validate(cfg)
    return cfg


def check_type(key: str, value: Any, where: str) -> None:
    """The one rule for a run setting's type and sign, wherever it comes from (bench.toml's [run],
    a flag, a library keyword, the merged configuration): TOML booleans for switches, strings,
    positive or non-negative integers, lists (or comma strings) for the grid axes. (A plugin's
    hyperparameters follow their defaults' types: ``bench.core.registry.typed``.)"""
    if key in BOOL_KEYS:
        ok, want = isinstance(value, bool), "a boolean (true or false, unquoted)"
    elif key in STR_KEYS:
        ok, want = isinstance(value, str), "a string"
    elif key in POSITIVE_INT_KEYS:
        ok, want = isinstance(value, int) and not isinstance(value, bool) and value > 0, "a positive integer"
    elif key in NON_NEGATIVE_INT_KEYS:
        ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= 0, "a non-negative integer"
    elif key == "eps":
        ok = isinstance(value, (list, str, int, float)) and not isinstance(value, bool)
        want = 'a list of numbers (or fractions such as "8/255")'
    elif key in LIST_KEYS:
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        want = "a list of strings (or one comma-separated string)"
    else:
        return
    if not ok:
        raise BenchError(f"invalid {where} = {value!r}: must be {want}")


def validate(cfg: Config) -> None:
    if cfg.eps is not None:  # de-duplicated as numbers: 0.3 and 0.30 are one eps
        cfg.eps = list(dict.fromkeys(parse_eps(e) for e in cfg.eps))
    # The same rule as a value read from a file or a flag (check_type), on the merged result.
    for key in (*POSITIVE_INT_KEYS, *NON_NEGATIVE_INT_KEYS):
        value = getattr(cfg, key)
        if value is not None or key not in OPTIONAL_KEYS:
            check_type(key, value, key.replace("_", "-"))
    if cfg.numerics not in NUMERICS_MODES:
        raise BenchError(f"invalid numerics mode {cfg.numerics!r}; use {', '.join(NUMERICS_MODES)}")
    if cfg.wandb not in WANDB_MODES:
        raise BenchError(f"invalid wandb mode {cfg.wandb!r}; use {', '.join(WANDB_MODES)}")
    if cfg.executor not in EXECUTORS:
        raise BenchError(f"unknown executor {cfg.executor!r}; available: {', '.join(EXECUTORS)}")
    if cfg.time_budget is not None and cfg.executor != "local":
        raise BenchError(
            "--time-budget works with the local executor only (a Ray task cannot be stopped between batches)"
        )
    if cfg.attack_labels not in ("true", "predicted"):
        raise BenchError(f"invalid attack-labels {cfg.attack_labels!r}; use true or predicted")
    # Threats enter here and leave as values (bench.core.threats.Threat): parsed once.
    cfg.threat = [requested_threat(t) for t in cfg.threat]
    resolve_device(cfg.device)


def requested_threat(text: Any) -> Threat:
    """A threat a run may ask for (``all`` names stored worst rows only)."""
    try:
        t = Threat(text)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if t.is_all:
        raise BenchError(f"unknown threat {text!r}; available: {', '.join(THREATS)}, transfer:<classifier>[@seed=N]")
    return t


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise BenchError(f"invalid device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"device {name!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BenchError(f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type != "cpu":
        raise BenchError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev
