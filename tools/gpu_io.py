"""Plumbing of the GPU script (tools/gpu.py): its log, a small table, the child process. Standard
library only: the parent process on the GPU machine imports nothing heavy."""

from __future__ import annotations

import os
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


def kill_child() -> None:
    """SIGKILL the benchmark subprocess running now, if any (the script was told to stop)."""
    if _child is not None:
        _signal(_child, signal.SIGKILL)


def _signal(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
