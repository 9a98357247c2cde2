"""Results store: ``<results>/runs/<run-id>/{config.json, env.json, records.jsonl}``.

Records are appended one JSON object a line and fsync'ed as each cell finishes, so a run
killed at any moment loses at most the cell in flight. Readers skip a torn last line.
"""
from __future__ import annotations

import datetime as dt
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


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    """Every stored record, oldest run first; torn or malformed lines are skipped."""
    for path in sorted(Path(results_dir).glob("runs/*/records.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing
                if isinstance(rec, dict):
                    yield rec


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
        for name, obj in (("config.json", self.config), ("env.json", self.env)):
            (self.dir / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def save_samples(self, cell_key: str, arrays: dict[str, Any]) -> str:
        """A few images of a cell as .npz (no pickles), for the report's image grid."""
        if not self.dir.exists():
            self._open()
        folder = self.dir / "samples"
        folder.mkdir(exist_ok=True)
        np.savez_compressed(folder / f"{cell_key}.npz", **{k: v.numpy() for k, v in arrays.items()})
        return f"runs/{self.run_id}/samples/{cell_key}.npz"

    def append(self, record: dict[str, Any]) -> None:
        if not self.dir.exists():
            self._open()
        line = json.dumps(record, sort_keys=True, default=str, allow_nan=True)
        with open(self.dir / "records.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.count += 1


def make_env(argv: list[str], device: torch.device, seed: int) -> dict[str, Any]:
    return {"command": [Path(sys.executable).name, "-m", "bench", *argv], "cwd": os.getcwd(),
            "versions": versions(), "device": device_name(device), "device_type": device.type,
            "cuda": torch.version.cuda, "git_commit": git_commit(), "seed": seed,
            "host": socket.gethostname(), "platform": platform.platform(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat()}
