"""``python -m bench verify``: recompute stored cells from their identity; exit 1 on any difference."""

from __future__ import annotations

from pathlib import Path

from bench.cli.parser import Parser
from bench.core.config import split_list
from bench.core.errors import BenchError
from bench.run.verify import verify


def main(argv: list[str]) -> int:
    p = Parser(
        prog="python -m bench verify",
        description="Recompute stored cells from their stored identity and grade each: identical, "
        "equivalent (another machine, noise-sized), not comparable (another device), differs. "
        "Exit 0: all identical or equivalent; 3: some not comparable; 1: some differ.",
    )
    p.add_argument("--results-dir", default="results")
    p.add_argument("--sample", type=int, help="only the K cheapest cells (by their stored timings)")
    p.add_argument("--cells", help="comma list of cell keys (unique prefixes)")
    p.add_argument("--cache-dir", help="trained classifiers/defenses cache (default ~/.cache/defense-bench)")
    p.add_argument(
        "--numerics",
        choices=("portable", "native"),
        help="recompute under this numerics mode (default: the one the stored runs name; it is "
        "applied before torch loads, by bench.cli.numerics)",
    )
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        raise BenchError(f"--sample must be ≥ 1, got {args.sample}")
    if args.sample is not None and args.cells:
        raise BenchError("--sample and --cells are exclusive")
    if not Path(args.results_dir).is_dir():
        raise BenchError(f"results dir {args.results_dir} does not exist")
    return verify(Path(args.results_dir), args.sample, split_list(args.cells) if args.cells else None, args.cache_dir)
