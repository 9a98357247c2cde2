"""Results store: ``<results>/runs/<run-id>/{config.json, env.json, records.jsonl}``.

Records are appended one JSON object a line and fsync'ed as each cell finishes (the run
folder too), so a run killed at any moment loses at most the cell in flight. Readers skip a
line they cannot read (a torn last line, a damaged one) and name it on stderr, file and line, once
per process: nothing is skipped in silence. A run holds ``<results>/.lock`` for its whole life: a second run on the same
folder gets a clear error instead of duplicating work and interleaving reports.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.record import Record
from bench.store.provenance import ROOT, git_state

# Lines already named in this process (file, line number, content): a report reads a folder more
# than once (tables, page, the runner's store lookup before it); one warning each is enough.
_named: set[tuple[str, int, int]] = set()


def skipped(path: Path, number: int, line: str, why: str) -> None:
    """Name a line no reader can use, on stderr (the exit status is unchanged: the other records stand)."""
    seen = (str(path), number, hash(line))
    if seen not in _named:
        _named.add(seen)
        print(f"[store] warning: {path}:{number}: {why}; skipped", file=sys.stderr)


def iter_records(results_dir: Path, runs: list[str] | None = None) -> Iterator[Record]:
    """Every stored record (of ``runs`` only, when given), oldest run first, as a ``Record``; a
    line that is no JSON object (a torn last line, the one a killed run was writing) is skipped and
    named on stderr (``skipped``); a record this code cannot read (a newer schema, an undeclared
    field) is an error naming its file and line."""
    for path in sorted(Path(results_dir).glob("runs/*/records.jsonl")):
        if runs is not None and path.parent.name not in runs:
            continue
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue  # an empty line holds no record: nothing is lost
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    torn = not line.endswith("\n")  # only the last line can lack its newline
                    skipped(
                        path,
                        number,
                        line,
                        "a torn last line (a run stopped while writing it)" if torn else f"not JSON ({exc.msg})",
                    )
                    continue
                if not isinstance(raw, dict):
                    skipped(path, number, line, f"a JSON {type(raw).__name__}, not a record")
                    continue
                try:
                    yield Record.from_json(raw)
                except ValueError as exc:
                    raise BenchError(f"{path}:{number}: {exc}") from None


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
            raise BenchError(
                f"results dir {results_dir} is in use by another run ({holder}); wait for it "
                "to finish or use another --results-dir"
            ) from None
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
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
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

    def append(self, rec: Record) -> None:
        if not self.dir.exists():
            self._open()
        line = rec.to_json()
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
    root = ROOT
    try:
        Path(results_dir).resolve().relative_to(root / "results" / "reference")
    except ValueError:
        return
    commit, dirty = git_state()
    if commit is None:
        raise BenchError(f"refusing to write reference records to {results_dir}: no git commit to name")
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" (+{len(dirty) - 5} more)" if len(dirty) > 5 else "")
        raise BenchError(
            f"refusing to write reference records to {results_dir} from a dirty tree "
            f"(uncommitted: {shown}); commit first"
        )
