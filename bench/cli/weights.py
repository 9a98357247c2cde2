"""``python -m bench weights``: retrain the reference weights zoo and compare with the shipped files."""

from __future__ import annotations

from bench.cli.parser import Parser
from bench.core.config import split_list
from bench.core.errors import BenchError
from bench.run.weights import run, upgrade


def main(argv: list[str]) -> int:
    p = Parser(
        prog="python -m bench weights",
        description="Retrain the reference weights zoo (bench/zoo/zoo.toml) and compare with the shipped weights.",
    )
    p.add_argument("--only", help="comma list of dataset/name models to train (default: all)")
    p.add_argument("--skip", help="comma list of dataset/name models not to train")
    p.add_argument(
        "--ship",
        action="store_true",
        help="write the new weights and provenance into bench/zoo (refused from a dirty tree)",
    )
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="rewrite provenance files written in an older layout in today's (same keys, same weights); trains nothing",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: machine-independent results)")
    p.add_argument("--config", help="TOML config (default: ./bench.toml)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.upgrade:
        changed = upgrade()
        for path in changed:
            print(f"[weights] upgraded {path.name} (same key)")
        print(f"[weights] {len(changed)} provenance file(s) upgraded")
        return 0
    if args.threads < 1:
        raise BenchError(f"--threads must be ≥ 1, got {args.threads}")
    return run(
        argv,
        split_list(args.only) if args.only else None,
        split_list(args.skip) if args.skip else [],
        args.ship,
        args.threads,
        args.config,
    )
