"""``python -m bench grid DIR``: run a reference grid from its ``DIR/grid.toml``.

A grid file's ``[grid]`` table holds the grid's ``steps``: each a ``python -m bench`` argument
list (a run, an ``adequacy`` sweep, a ``report``), run in order in this process, stopping at the
first that fails. The same file may also be a configuration (``[run]``, ``[defenses.*]`` …) that
its steps name with ``--config``; the runner ignores ``[grid]``. Which commands produced a grid
is then data beside its records, not a Makefile recipe.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from bench.cli import main as bench_main  # the dispatcher: it imports subcommands only when they run
from bench.cli.parser import Parser
from bench.core.config import load_grid
from bench.core.errors import BenchError


def main(argv: list[str]) -> int:
    p = Parser(prog="python -m bench grid", description="Run a grid's steps from its grid.toml.")
    p.add_argument("grid", help="a folder holding grid.toml (e.g. results/reference/adaptive) or the file itself")
    p.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.grid)
    path = path / "grid.toml" if path.is_dir() else path
    if not path.is_file():
        raise BenchError(f"no grid file {path}: give a folder holding grid.toml, or the file")
    steps = load_grid(path)
    for i, step in enumerate(steps, 1):
        line = "python -m bench " + shlex.join(step)
        print(f"[grid] {path.parent.name} step {i}/{len(steps)}: {line}", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        rc = bench_main(list(step))
        if rc != 0:
            print(f"[grid] step {i} failed (exit {rc}); the steps before it are stored, rerun resumes")
            return rc
        print(f"[grid] step {i} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0
