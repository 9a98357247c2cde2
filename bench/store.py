"""Results store: ``<results>/runs/<run-id>/{config.json, env.json, records.jsonl}``.

Records are appended one JSON object a line and fsync'ed as each cell finishes (the run
folder too), so a run killed at any moment loses at most the cell in flight. Readers skip a
torn last line. A run holds ``<results>/.lock`` for its whole life: a second run on the same
folder gets a clear error instead of duplicating work and interleaving reports.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench.errors import BenchError

PACKAGES = ("torch", "torchvision", "torchattacks", "numpy", "pandas", "matplotlib", "wandb")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas() -> str:
    """Which BLAS torch uses and the CPU kernels it dispatches to (the same weights can give other
    low bits under another BLAS or instruction set)."""
    show = torch.__config__.show()
    name = next((part.split("=", 1)[1] for part in show.replace(",", " ").split() if part.startswith("BLAS_INFO=")),
                "unknown")
    mkl = next((line.strip(" -") for line in show.splitlines() if "Math Kernel Library Version" in line), None)
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
    return f"{name}" + (f" ({mkl})" if mkl else "") + f"; cpu kernels {capability}"


def machine(device: torch.device) -> dict[str, Any]:
    """What tells two machines' numbers apart: CPU model or GPU name, torch threads, BLAS."""
    out = {"cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(), "blas": blas()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


# Outputs under results/ (records, tables, plots, pages, resumable training state) grow while runs
# append to them: a changed output is not a changed code state. Inputs there (grid.toml) still count.
OUTPUTS = ("runs", "plots", "site", "resume", "results.md", "results.csv")


def git_state() -> tuple[str | None, list[str]]:
    """(HEAD's sha, with "-dirty" when tracked files other than outputs differ from it; their paths)."""
    here = Path(__file__).resolve().parent.parent
    exclude = [f":(exclude,glob)results/**/{name}" + ("/**" if "." not in name else "") for name in OUTPUTS]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        # Untracked files count too (a new plugin module is code no commit holds); ignored ones do not.
        dirty = subprocess.run(["git", "status", "--porcelain", "-z", "--untracked-files=all", "--", ".", *exclude],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None, []
    # -z: "XY path\0", a rename adds "orig\0" after it; paths are never quoted
    entries, files = dirty.split("\0"), []
    i = 0
    while i < len(entries):
        e = entries[i]
        if len(e) > 3:
            files.append(e[3:])
            i += 1 + (e[0] in "RC")
        else:
            i += 1
    return ((sha + ("-dirty" if files else "")) if sha else None), sorted(files)


def iter_records(results_dir: Path, runs: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every stored record (of ``runs`` only, when given), oldest run first; torn or malformed
    lines are skipped."""
    for path in sorted(Path(results_dir).glob("runs/*/records.jsonl")):
        if runs is not None and path.parent.name not in runs:
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing
                if isinstance(rec, dict):
                    yield rec


def fsync_dir(path: Path) -> None:
    """Make a folder's new entries durable (a file's fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultsLock:
    """An exclusive lock on a results folder (released by the OS if the process dies)."""

    def __init__(self, results_dir: Path) -> None:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        self.path = results_dir / ".lock"
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise BenchError(f"results dir {results_dir} is in use by another run ({holder}); wait for it "
                             "to finish or use another --results-dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


class RunWriter:
    """One run's folder, created on the first record so an all-cached rerun leaves no trace."""

    def __init__(self, results_dir: Path, config: dict[str, Any], env: dict[str, Any]) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        self.dir = Path(results_dir) / "runs" / self.run_id
        self.config, self.env = config, env
        self.count = 0

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=False)
        fsync_dir(self.dir.parent)
        for name, obj in (("config.json", self.config), ("env.json", self.env)):
            write_atomic(self.dir / name, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def save_samples(self, cell_key: str, arrays: dict[str, Any]) -> str:
        """A few images of a cell as .npz (no pickles), for the report's image grid."""
        if not self.dir.exists():
            self._open()
        folder = self.dir / "samples"
        folder.mkdir(exist_ok=True)
        np.savez_compressed(folder / f"{cell_key}.npz", **{k: v.cpu().numpy() for k, v in arrays.items()})
        return f"runs/{self.run_id}/samples/{cell_key}.npz"

    def append(self, record: dict[str, Any]) -> None:
        if not self.dir.exists():
            self._open()
        line = json.dumps(record, sort_keys=True, default=str, allow_nan=True)
        path = self.dir / "records.jsonl"
        first = not path.exists()
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        if first:
            fsync_dir(self.dir)
        self.count += 1


def refuse_dirty_reference(results_dir: Path) -> None:
    """Reference records (under results/reference/) come from a clean commit only: a dirty tree's
    numbers cannot be reproduced by anyone (no commit holds the code that computed them)."""
    root = Path(__file__).resolve().parent.parent
    try:
        Path(results_dir).resolve().relative_to(root / "results" / "reference")
    except ValueError:
        return
    commit, dirty = git_state()
    if commit is None:
        raise BenchError(f"refusing to write reference records to {results_dir}: no git commit to name")
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" (+{len(dirty) - 5} more)" if len(dirty) > 5 else "")
        raise BenchError(f"refusing to write reference records to {results_dir} from a dirty tree "
                         f"(uncommitted: {shown}); commit first")


def make_env(argv: list[str], device: torch.device, seed: int) -> dict[str, Any]:
    # Which tracked files were uncommitted: a "-dirty" commit says what it differed in.
    commit, dirty = git_state()
    return {"command": [Path(sys.executable).name, "-m", "bench", *argv], "cwd": os.getcwd(),
            "versions": versions(), "device": device_name(device), "device_type": device.type,
            **machine(device),
            "cuda": torch.version.cuda, "git_commit": commit, "git_dirty_files": dirty, "seed": seed,
            "host": socket.gethostname(), "platform": platform.platform(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat()}
