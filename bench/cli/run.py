"""``python -m bench [run]``: evaluate a grid and print its table (the bare form); a thin wrapper
over ``bench.api.run``."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.analysis.frame import frame
from bench.api import Interrupted, run
from bench.cli.parser import run_parser
from bench.core.config import resolve
from bench.render.report import markdown
from bench.render.wandb_log import log_run
from bench.store.provenance import cli_command


def main(argv: list[str]) -> int:
    args = vars(run_parser().parse_args(argv))
    config = args.pop("config")
    args.pop("debug")
    cfg = resolve(args, config)
    try:
        records, summary, written = run(cfg, cli_command(argv), report=True)
    except Interrupted as stop:
        print(f"\ninterrupted: {stop}", file=sys.stderr)
        return 130
    print(markdown(frame(records)))
    print(summary)
    pages = [p for p in written if p.suffix in (".md", ".html")]
    if pages:
        print(
            "[report] " + ", ".join(str(p) for p in pages) + f" and {sum(p.suffix == '.png' for p in written)} plot(s)"
        )
    if cfg.wandb != "disabled":
        run_dir = log_run(
            cfg.wandb,
            cfg.wandb_project,
            cfg.to_dict(),
            records,
            [p for p in written if p.suffix == ".png"],
            Path(cfg.results_dir),
        )
        print(f"wandb ({cfg.wandb}): {run_dir}")
    return 0
