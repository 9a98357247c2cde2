"""Plumbing of the GPU script (tools/gpu.py): its log, child processes, TOML writer and record
tables. Standard library only: the parent process on the GPU machine imports nothing heavy."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ---- output -----------------------------------------------------------------------------------
class Log:
    """print() that also appends to log files (flushed per line: a killed run keeps its log)."""

    def __init__(self) -> None:
        self.files: list[Any] = []
        self.lock = threading.Lock()

    def add(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(open(path, "a", encoding="utf-8"))

    def __call__(self, text: str = "") -> None:
        with self.lock:
            print(text, flush=True)
            for f in self.files:
                f.write(text + "\n")
                f.flush()


log = Log()


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A small markdown table (no dependency: the parent process imports nothing heavy)."""

    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    text = [[cell(v) for v in r] for r in rows]
    w = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(v.ljust(w[i]) for i, v in enumerate(r)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (x + 2) for x in w) + "|", *map(line, text)])


# ---- subprocesses -------------------------------------------------------------------------------
_child: subprocess.Popen | None = None


def child_env(site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(site)] if site else []) + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONUNBUFFERED="1",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        MPLBACKEND="Agg",
    )
    return env


def run(cmd: list[str], env: dict[str, str], seconds: float) -> tuple[int, str, bool]:
    """Run ``cmd`` in the repo root, streaming its output into the log; after ``seconds`` it gets
    SIGINT (the benchmark stores what it finished and exits), 20 s later SIGKILL.
    Returns (exit code, output, whether the budget ran out)."""
    global _child
    log("$ " + " ".join(cmd))
    t0, cpu0 = time.perf_counter(), _child_cpu()
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        errors="replace",
        process_group=0,
    )
    _child = p
    out: list[str] = []

    def pump() -> None:
        for line in p.stdout:
            out.append(line)
            log("  " + line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        p.wait(timeout=max(seconds, 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        log(f"[gpu] budget of {seconds:.0f} s reached: interrupting (finished cells stay stored)")
        _signal(p, signal.SIGINT)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait()
    reader.join(timeout=5)
    _child = None
    log(f"[gpu] exit {p.returncode} after {time.perf_counter() - t0:.1f} s ({_child_cpu() - cpu0:.1f} CPU s)")
    return p.returncode, "".join(out), timed_out


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _signal(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- configuration files -------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def dump_toml(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """TOML for a config: nested dicts become [a.b] tables (what bench's config files use)."""
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    blocks = []
    if scalars or (prefix and not tables):
        head = ["[" + ".".join(map(_toml_key, prefix)) + "]"] if prefix else []
        blocks.append("\n".join(head + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]))
    blocks += [dump_toml(v, prefix + (k,)).rstrip("\n") for k, v in tables.items()]
    return "\n\n".join(b for b in blocks if b) + "\n"


# ---- records -------------------------------------------------------------------------------------
def records(results: Path, runs: list[str] | None = None) -> list[Any]:
    """Every stored record of a results folder, through the one reader (bench.core.record; imported
    here: the orchestrator does not load torch before its children set their numerics)."""
    from bench.store.runs import iter_records

    return list(iter_records(results, runs))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run
    return out


def pick(
    results: Path, defenses: list[str], attacks: list[str], eps: float, threats: list[str], limit: int | None
) -> list[dict[str, Any]]:
    """The latest record of each (defense, attack, threat) cell of a step's grid."""
    latest: dict[tuple, dict] = {}
    for r in records(results):
        if (
            r.get("defense") in defenses
            and r.get("attack") in attacks
            and r.get("threat") in threats
            and r.get("eps") is not None
            and abs(float(r["eps"]) - eps) < 1e-9
            and (limit is None or r.get("limit") == limit)
        ):
            key = (r["defense"], r["attack"], r["threat"])
            if key not in latest or r.get("time", 0) >= latest[key].get("time", 0):
                latest[key] = r
    return [latest[k] for k in sorted(latest)]


def record_table(recs: list[dict[str, Any]]) -> str:
    return table(
        [
            "defense",
            "threat",
            "attack",
            "eps",
            "n",
            "defended clean",
            "defended adv",
            "defense ms/sample",
            "attack ms/sample",
            "timed batches",
            "device",
        ],
        [
            [
                r["defense"],
                r["threat"],
                r["attack"],
                r["eps"],
                r.get("n"),
                r.get("defended_clean_acc"),
                r.get("defended_adv_acc"),
                r.get("defense_ms_per_sample"),
                r.get("attack_ms_per_sample"),
                r.get("timing_batches"),
                r.get("device"),
            ]
            for r in recs
        ],
    )
