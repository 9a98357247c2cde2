"""Finished batches of a cell in progress: ``<results>/partial/<craft>/<start>-<end>.pt``.

A cell is stored whole when it finishes (``runs.RunWriter``); a long one (AutoAttack on 500
images) would otherwise start over after a kill or a deadline. Every batch of an attack is seeded
by the test index of its first image (``bench.run.worker.Worker.craft``), so a batch's adversarial
examples do not depend on the batches before it: a batch saved here and read back gives the
outcomes an uninterrupted run gives, bit for bit (tests/test_partial.py kills a run halfway).

A batch is saved as tensors only (``torch.save`` of a dict of tensors, read back with
``weights_only=True``), each file written atomically, beside what it was computed under
(``ENV_KEYS``: the torch version, the numerics mode, the thread count, the device, and the code:
``code_version``): a batch computed under other settings or by other code could carry other
examples or other last bits, so it is recomputed, never mixed in. A batch's
name is a digest of everything that determines it (the cell's key, the images crafted, the batch's
bounds); the folder of a craft is removed once every cell that used it is stored.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.store.provenance import ROOT, git_state
from bench.store.runs import fsync_dir, write_atomic

FOLDER = "partial"
ENV_KEYS = ("torch", "numerics", "threads", "device", "code")


# What computes a batch: Python source and shipped weights. A change to anything else (README, a
# grid file, a test) leaves a killed cell's batches valid; tests/ never computes a cell.
CODE_SUFFIXES = (".py", ".pt")
NOT_CODE = ("tests/", "docs/")


def is_code(path: str) -> bool:
    return path.endswith(CODE_SUFFIXES) and not path.startswith(NOT_CODE)


def code_version(root: Path | None = None) -> str:
    """The code a batch is computed by: the git blob of every tracked source file and shipped
    weight at HEAD (``is_code``), and the content of every such file that differs from it (a new,
    untracked plugin module included; outputs such as these batches excluded). A commit that
    changes no code keeps the batches; an edit to a plugin between a kill and the rerun does not."""
    here = root or ROOT
    commit, dirty = git_state(here)
    try:
        tree = subprocess.run(
            ["git", "ls-tree", "-r", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        tree = ""
    h = hashlib.sha256()
    # "<mode> blob <sha>\t<path>" per line; without git (or a commit), the commit string stands in.
    h.update(
        "\n".join(line for line in tree.splitlines() if is_code(line.split("\t", 1)[-1])).encode()
        or str(commit).encode()
    )
    for name in dirty:
        if is_code(name):
            path = here / name
            h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest()[:16]


@dataclass
class Batch:
    """One finished batch: its adversarial examples, passes through the attacked model, and the
    milliseconds per image it took (what the cell's timing and pass counts add up)."""

    adv: torch.Tensor
    forward: int
    backward: int
    ms_per_sample: float


class BatchStore:
    """The finished batches under ``<results_dir>/partial``; ``env`` is what this process computes
    under (``ENV_KEYS``); ``read=False`` saves batches without taking any back (``--rerun``)."""

    def __init__(self, results_dir: Path, env: dict[str, Any], read: bool = True) -> None:
        self.root = Path(results_dir) / FOLDER
        self.read = read  # False under --rerun: batches are saved, none is taken back
        self.env = {k: str(env.get(k)) for k in ENV_KEYS}
        self.stale: list[Path] = []  # batches found under other settings (recomputed)

    def path(self, craft: str, a: int, b: int) -> Path:
        return self.root / craft / f"{a}-{b}.pt"

    def load(self, craft: str, a: int, b: int) -> Batch | None:
        path = self.path(craft, a, b)
        if not self.read or not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            env = {k: blob["env"][k] for k in ENV_KEYS}
            batch = Batch(blob["adv"], int(blob["forward"]), int(blob["backward"]), float(blob["ms_per_sample"]))
        except Exception:  # a file a kill cut short, or not ours: recompute it
            self.stale.append(path)
            return None
        if env != self.env:
            self.stale.append(path)
            return None
        return batch

    def save(self, craft: str, a: int, b: int, batch: Batch) -> None:
        folder = self.root / craft
        new = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        if new:
            fsync_dir(folder.parent)
        blob = {
            "adv": batch.adv.detach().cpu().contiguous(),
            "forward": batch.forward,
            "backward": batch.backward,
            "ms_per_sample": batch.ms_per_sample,
            "env": self.env,
        }
        buf = io.BytesIO()
        torch.save(blob, buf)
        write_atomic(self.path(craft, a, b), buf.getvalue())

    def saved(self, craft: str) -> int:
        """How many batches of ``craft`` are saved."""
        folder = self.root / craft
        return sum(1 for _ in folder.glob("*.pt")) if folder.is_dir() else 0

    def discard(self, craft: str) -> None:
        shutil.rmtree(self.root / craft, ignore_errors=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()
