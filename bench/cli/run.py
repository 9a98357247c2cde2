"""``python -m bench [run]``: evaluate a grid and print its table (the bare form)."""
from __future__ import annotations

import sys
from pathlib import Path

from bench.analysis.frame import frame
from bench.cli.parser import run_parser
from bench.core.config import resolve
from bench.render.report import markdown, write_report
from bench.render.wandb_log import log_run
from bench.run.driver import Runner
from bench.run.executors import make_executor


def main(argv: list[str]) -> int:
    args = vars(run_parser().parse_args(argv))
    config = args.pop("config")
    args.pop("debug")
    cfg = resolve(args, config)
    runner = Runner(cfg, argv)
    executor = None
    try:
        if cfg.executor != "local":
            executor = make_executor(cfg.executor, cfg.ray_address)
        try:
            records = runner.run(executor)
        except KeyboardInterrupt:
            print(f"\ninterrupted: {runner.writer.count} new cell(s) stored in {runner.writer.dir}; "
                  "rerun the same command to resume", file=sys.stderr)
            return 130
        print(markdown(frame(records)))
        print(runner.summary())
        written = write_report(cfg.results_dir)
    finally:
        runner.close()
    if cfg.wandb != "disabled":
        run_dir = log_run(cfg.wandb, cfg.wandb_project, cfg.to_dict(), records,
                          [p for p in written if p.suffix == ".png"], Path(cfg.results_dir))
        print(f"wandb ({cfg.wandb}): {run_dir}")
    return 0
