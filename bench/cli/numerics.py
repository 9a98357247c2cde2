"""The numerics mode a command runs under, decided before torch is imported (``bench.core.numerics``).

Standard library only: this runs before any subcommand module (and so torch) is loaded. A run takes
``--numerics`` from the command line, else ``numerics`` from the config file's ``[run]`` table,
else ``portable``; ``bench verify`` takes the mode the stored runs were computed under (their
env.json), so a cell is recomputed under the settings that made it. The value itself is validated
by the one configuration path (``bench.core.config.validate``); here an unknown one is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from bench.core import numerics

COMPUTING = ("run", "grid", "weights", "adequacy")  # the subcommands that run models


def _flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def from_config(argv: list[str]) -> str | None:
    path = Path(_flag(argv, "--config") or "bench.toml")
    try:
        value = tomllib.loads(path.read_text()).get("run", {}).get("numerics")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError):
        return None  # the config path reports a bad file in its own words
    return value if isinstance(value, str) else None


def recorded(results_dir: Path) -> str:
    """The mode every stored run under ``results_dir`` names (``native`` for runs from before modes
    were recorded); ``portable`` only if all of them were computed under it."""
    modes = set()
    for env in Path(results_dir).glob("runs/*/env.json"):
        try:
            modes.add(json.loads(env.read_text()).get("numerics") or "native")
        except (OSError, ValueError):
            modes.add("native")
    return "portable" if modes == {"portable"} else "native"


def mode_for(cmd: str, argv: list[str]) -> str | None:
    """The mode ``cmd argv`` computes under; None for a command that computes nothing."""
    flag = _flag(argv, "--numerics")
    if cmd == "verify":
        return flag or recorded(Path(_flag(argv, "--results-dir") or "results"))
    if cmd not in COMPUTING:
        return None
    if cmd == "weights":  # the zoo was trained native: its retraining reproduces it under the same
        return "native"
    return flag or from_config(argv) or "portable"


def rerun_in_child(cmd: str, argv: list[str], mode: str) -> int:
    """Run the command again in a fresh interpreter under ``mode`` (this one loaded torch under
    other settings), its output passed through line by line."""
    env = dict(os.environ)
    if mode == "native":
        for k in numerics.PORTABLE_ENV:
            env.pop(k, None)
    numerics.apply(mode, env)
    print(
        f"[numerics] recomputing in a child process under the {mode} numerics mode "
        "(this process loaded torch under other settings)",
        flush=True,
    )
    # stdout passed through (a caller capturing this process's output sees it), stderr inherited
    # (an error stays one line there).
    proc = subprocess.Popen([sys.executable, "-m", "bench", cmd, *argv], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
    rc = proc.wait()
    return 128 - rc if rc < 0 else rc  # killed by a signal: the shell's convention


def not_applied(cmd: str, mode: str) -> None:
    """One line where a command runs under another mode than asked (torch was loaded first)."""
    print(
        f"[numerics] {cmd} asked for the {mode} numerics mode, but this process loaded torch under other "
        "settings: it computes under those, and its records say which",
        flush=True,
    )
