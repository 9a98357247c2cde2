"""Provenance: what every stored result says about where it came from — package versions, the
device (CPU model, GPU name, threads, BLAS), the git commit and which files differed from it,
the command line."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.core import numerics

ROOT = Path(__file__).resolve().parents[2]  # the repository holding this code
PACKAGES = ("torch", "torchvision", "torchattacks", "numpy", "pandas", "matplotlib", "wandb")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
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
    name = next(
        (part.split("=", 1)[1] for part in show.replace(",", " ").split() if part.startswith("BLAS_INFO=")), "unknown"
    )
    mkl = next((line.strip(" -") for line in show.splitlines() if "Math Kernel Library Version" in line), None)
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
    return f"{name}" + (f" ({mkl})" if mkl else "") + f"; cpu kernels {capability}"


def machine(device: torch.device) -> dict[str, Any]:
    """What tells two machines' numbers apart: CPU model and vendor or GPU name, torch threads, BLAS,
    the instruction set ATen runs at, the numerics mode in force (and on CUDA its determinism)."""
    out = {
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "blas": blas(),
        **numerics.state(device.type),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


# Outputs under results/ (records, tables, plots, pages, resumable training state) grow while runs
# append to them: a changed output is not a changed code state. Inputs there (grid.toml) still count.
OUTPUTS = ("runs", "plots", "site", "resume", "partial", "results.md", "results.csv")


def git_state(root: Path | None = None) -> tuple[str | None, list[str]]:
    """(HEAD's sha, with "-dirty" when tracked files other than outputs differ from it; their paths)
    of the repository at ``root`` (default: the one this code is in)."""
    here = root or ROOT
    exclude = [f":(exclude,glob)results/**/{name}" + ("/**" if "." not in name else "") for name in OUTPUTS]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        # Untracked files count too (a new plugin module is code no commit holds); ignored ones do not.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--untracked-files=all", "--", ".", *exclude],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
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


def cli_command(argv: list[str]) -> list[str]:
    """The command line of ``python -m bench ARGV`` as a run records it."""
    return [Path(sys.executable).name, "-m", "bench", *argv]


def make_env(command: list[str], device: torch.device, seed: int) -> dict[str, Any]:
    # Which tracked files were uncommitted: a "-dirty" commit says what it differed in.
    commit, dirty = git_state()
    return {
        "command": list(command),
        "cwd": os.getcwd(),
        "versions": versions(),
        "device": device_name(device),
        "device_type": device.type,
        **machine(device),
        "cuda": torch.version.cuda,
        "git_commit": commit,
        "git_dirty_files": dirty,
        "seed": seed,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": dt.datetime.now(dt.UTC).isoformat(),
    }
