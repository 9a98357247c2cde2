"""Command line: ``python -m bench [run|list|report|adequacy|weights|verify|grid] …`` (bare form = run).

One module per subcommand, each a thin wrapper over the library (``bench.run``, ``bench.render``).
"""

from __future__ import annotations

import importlib
import sys
import traceback

from bench.cli import numerics
from bench.core import numerics as core_numerics
from bench.core.errors import BenchError, PluginFailed

# subcommand → its module under bench/cli/ (``list`` would shadow the builtin in this package)
SUBCOMMANDS = {
    "run": "run",
    "list": "plugins",
    "report": "report",
    "adequacy": "adequacy",
    "weights": "weights",
    "verify": "verify",
    "grid": "grid",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    cmd = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "run"
    try:
        # The numerics mode first: its settings only count if set before torch loads its kernels.
        mode = numerics.mode_for(cmd, argv)
        if mode in core_numerics.MODES and not core_numerics.apply(mode):
            if cmd == "verify":  # recomputed under the settings that made the records, or not at all
                return numerics.rerun_in_child(cmd, argv, mode)
            numerics.not_applied(cmd, mode)
        # Each subcommand's module is imported when it runs: `list` need not load matplotlib.
        return importlib.import_module(f"bench.cli.{SUBCOMMANDS[cmd]}").main(argv)
    except BenchError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PluginFailed as exc:
        # A plugin that raised: its traceback is the user's code, shown; the last line names the
        # plugin, the cell and where the finished cells are.
        traceback.print_exception(exc.__cause__ if exc.__cause__ is not None and not debug else exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
