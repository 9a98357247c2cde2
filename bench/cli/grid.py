"""``python -m bench grid DIR``: run a reference grid from its ``DIR/grid.toml``.

A grid file's ``[grid]`` table holds the grid's ``steps``: each a ``python -m bench`` argument
list (a run, an ``adequacy`` sweep, a ``report``), run in order in this process, stopping at the
first that fails. The same file may also be a configuration (``[run]``, ``[defenses.*]`` …) that
its steps name with ``--config``; the runner ignores ``[grid]``. Which commands produced a grid
is then data beside its records, not a Makefile recipe.

``--time-budget SECONDS`` is one deadline for the whole grid: each run step gets the seconds left
as its own ``--time-budget`` (it stores what finished and keeps its finished batches), a run or
``adequacy`` step met after the deadline is skipped with a line, and ``report`` steps always run
(they draw what is stored). Arguments after ``--`` are appended to every run step, e.g. ``--
--device cuda --limit 1000`` (a flag given twice: the later wins).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from bench.cli import SUBCOMMANDS
from bench.cli import main as bench_main  # the dispatcher: it imports subcommands only when they run
from bench.cli.parser import Parser
from bench.core.config import load_grid
from bench.core.errors import BenchError


def is_run(step: list[str]) -> bool:
    """A step the runner runs (bare form or ``run``), as opposed to another subcommand."""
    return step[0] == "run" or step[0] not in SUBCOMMANDS


def step_args(step: list[str], extra: list[str], seconds_left: float | None) -> list[str]:
    """A step's arguments as they run: a run step gets ``extra`` and the seconds left appended."""
    if not is_run(step):
        return list(step)
    budget = ["--time-budget", str(max(1, int(seconds_left)))] if seconds_left is not None else []
    return [*step, *extra, *budget]


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    p = Parser(prog="python -m bench grid", description="Run a grid's steps from its grid.toml.")
    p.add_argument("grid", help="a folder holding grid.toml (e.g. results/reference/adaptive) or the file itself")
    p.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for the whole grid: run steps stop in time and store what finished; later ones are skipped",
    )
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.time_budget is not None and args.time_budget <= 0:
        raise BenchError(f"--time-budget must be a positive number of seconds, got {args.time_budget:g}")
    path = Path(args.grid)
    path = path / "grid.toml" if path.is_dir() else path
    if not path.is_file():
        raise BenchError(f"no grid file {path}: give a folder holding grid.toml, or the file")
    steps = load_grid(path)
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    for i, step in enumerate(steps, 1):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < 1 and step[0] != "report":
            print(f"[grid] step {i}/{len(steps)} skipped: --time-budget {args.time_budget:g} s spent", flush=True)
            continue
        run = step_args(step, extra, left)
        print(f"[grid] {path.parent.name} step {i}/{len(steps)}: python -m bench {shlex.join(run)}", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        rc = bench_main(run)
        if rc != 0:
            print(f"[grid] step {i} failed (exit {rc}); the steps before it are stored, rerun resumes")
            return rc
        print(f"[grid] step {i} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0
