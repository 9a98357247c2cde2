"""``python -m bench report``: tables, plots, the page and README blocks from stored records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.frame import frame, run_commits
from bench.cli.parser import Parser
from bench.core.config import parse_eps, split_list
from bench.core.errors import BenchError
from bench.render import devices as dv
from bench.render import headline as hl
from bench.render.paired import compare as paired_compare
from bench.render.report import FORMATS, write_report
from bench.render.site import write_combined_site
from bench.store.runs import iter_records


def main(argv: list[str]) -> int:
    p = Parser(prog="python -m bench report", description="Regenerate tables and plots from stored records.")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--format", default="md,csv", help="comma list of md, csv, latex (default md,csv)")
    p.add_argument("--dataset", help="only these datasets (comma list)")
    p.add_argument("--defenses", help="only these defenses (comma list)")
    p.add_argument("--attack", help="only these attacks (comma list)")
    p.add_argument("--threat", help="only these threat models (comma list)")
    p.add_argument("--run", help="only these runs (comma list of run ids, the folder names under runs/)")
    p.add_argument("--latest", action="store_true", help="only the most recent run")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--readme", help="also fill a generated block of this README")
    p.add_argument(
        "--readme-block",
        default="results",
        help="which block: the text between <!-- NAME:start --> and <!-- NAME:end --> (default results)",
    )
    p.add_argument("--html", action="store_true", help="also write the leaderboard page <results-dir>/site/index.html")
    p.add_argument(
        "--site-from",
        metavar="DIR[,DIR]",
        help="write one leaderboard page over these results dirs into <results-dir>/site/index.html "
        "(every reference grid on one page) instead of a report",
    )
    p.add_argument(
        "--headline",
        metavar="DIR[,DIR]",
        help="fill the README's headline block from these results dirs (each defense's worst case over "
        "every attack and threat model) instead of a paper-view block; needs --readme",
    )
    p.add_argument(
        "--headline-eps",
        help="only these eps in the headline (comma list, an item DATASET=EPS for one "
        "dataset: 0.3,fashion-mnist=0.1; default all)",
    )
    p.add_argument(
        "--devices",
        metavar="DIR,DIR",
        help="fill the README's devices block instead of a report: the cells two results dirs (one per "
        "device, e.g. a CPU grid and the same grid on a GPU) both hold, defense ms/sample side by side; "
        "needs --readme",
    )
    p.add_argument(
        "--devices-from",
        metavar="DIR[,DIR]",
        help="with --devices: more results dirs, for DefenseGAN against the counterGAN preset on each "
        "device, and dirs holding tools.gpu's step4-reconstruction.jsonl",
    )
    p.add_argument(
        "--compare",
        metavar="A,B",
        help="print the paired comparison of two defenses (2×2 table, exact "
        "McNemar p, difference with CI) and write nothing",
    )
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    formats = split_list(args.format)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise BenchError(f"unknown report format(s) {', '.join(bad)}; available: {', '.join(FORMATS)}")
    if not Path(args.results_dir).is_dir():
        raise BenchError(f"results dir {args.results_dir} does not exist")
    filters = {"dataset": args.dataset, "defense": args.defenses, "attack": args.attack, "threat": args.threat}
    filters = {k: split_list(v) for k, v in filters.items() if v}
    runs = select_runs(Path(args.results_dir), split_list(args.run) if args.run else None, args.latest)
    if args.site_from:
        dirs = split_list(args.site_from)
        missing = [d for d in dirs if not Path(d).is_dir()]
        if missing:
            raise BenchError(f"results dir {missing[0]} does not exist")
        written = write_combined_site([Path(d) for d in dirs], Path(args.results_dir))
        print(f"wrote {written[0]}")
        return 0
    if args.compare:
        return compare(args.results_dir, args.compare, filters, runs)
    if args.devices:
        return devices(
            split_list(args.devices), split_list(args.devices_from) if args.devices_from else [], args.readme
        )
    if args.devices_from:
        raise BenchError("--devices-from goes with --devices")
    if args.headline:
        eps = headline_eps(split_list(args.headline_eps)) if args.headline_eps else None
        return headline(split_list(args.headline), args.readme, filters, eps)
    written = write_report(
        args.results_dir,
        formats,
        filters,
        plots=not args.no_plots,
        readme=args.readme,
        readme_block=args.readme_block,
        runs=runs,
        html=args.html,
    )
    for path in written:
        if path.suffix != ".png":
            print(f"wrote {path}")
    print(f"wrote {sum(p.suffix == '.png' for p in written)} plot(s) under {Path(args.results_dir) / 'plots'}")
    return 0


def compare(results_dir: str, names: str, filters: dict[str, list[str]], runs: list[str] | None) -> int:
    pair = split_list(names)
    if len(pair) != 2:
        raise BenchError(f"--compare takes two different defenses, A,B (got {names!r})")
    # Holm's family is every defense on the shared cells, so --defenses does not narrow it.
    filters = {k: v for k, v in filters.items() if k != "defense"}
    df = frame(iter_records(Path(results_dir), runs), filters, run_commits(Path(results_dir)))
    print(paired_compare(df, *pair))
    return 0


def headline_eps(items: list[str]) -> dict[str | None, list[float]]:
    """``0.3,fashion-mnist=0.1`` → {None: [0.3], "fashion-mnist": [0.1]} (None: every other dataset)."""
    out: dict[str | None, list[float]] = {}
    for item in items:
        dataset, sep, value = item.rpartition("=")
        out.setdefault(dataset if sep else None, []).append(parse_eps(value))
    return out


def _eps_kept(eps: dict[str | None, list[float]], dataset: str, e: Any) -> bool:
    wanted = eps.get(dataset, eps.get(None))
    return wanted is not None and e == e and e is not None and any(abs(e - x) < 1e-9 for x in wanted)


def headline(
    dirs: list[str], readme: str | None, filters: dict[str, list[str]], eps: dict[str | None, list[float]] | None
) -> int:
    if not readme:
        raise BenchError("--headline fills a README block: give --readme FILE")
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        raise BenchError(f"results dir {missing[0]} does not exist")
    records = [r for d in dirs for r in iter_records(Path(d))]
    commits = {k: v for d in dirs for k, v in run_commits(Path(d)).items()}
    df = frame(records, filters, commits)
    if eps is not None and not df.empty:
        kept = [_eps_kept(eps, d, e) for d, e in zip(df["dataset"], df["eps"])]
        df = df[pd.Series(kept, index=df.index) | (df["kind"] != "worst")]
    print(f"wrote {hl.update(Path(readme), dirs, df)}")
    return 0


def devices(pair: list[str], more: list[str], readme: str | None) -> int:
    """README's devices block: CPU beside GPU, from the records of ``pair`` (one folder per device)
    and ``more`` (further records, and tools.gpu's reconstruction measurements)."""
    if not readme:
        raise BenchError("--devices fills a README block: give --readme FILE")
    if len(pair) != 2 or pair[0] == pair[1]:
        raise BenchError(f"--devices takes two different results dirs, one per device (got {','.join(pair)})")
    missing = [d for d in [*pair, *more] if not Path(d).is_dir()]
    if missing:
        raise BenchError(f"results dir {missing[0]} does not exist")
    load = lambda d: frame(iter_records(Path(d)), None, run_commits(Path(d)))
    sources = {d: load(d) for d in dict.fromkeys([*pair, *more])}
    recon = [p for d in more if (p := Path(d) / dv.RECONSTRUCTION).is_file()]
    command = f"python -m bench report --readme {Path(readme).as_posix()} --devices {','.join(pair)}" + (
        f" --devices-from {','.join(more)}" if more else ""
    )
    print(
        f"wrote {dv.update(Path(readme), command, sources[pair[0]], sources[pair[1]], (pair[0], pair[1]), sources, recon)}"
    )
    return 0


def select_runs(results_dir: Path, runs: list[str] | None, latest: bool) -> list[str] | None:
    """The run ids a report is restricted to (None: all), checked against what is stored."""
    stored = sorted(p.name for p in results_dir.glob("runs/*") if (p / "records.jsonl").is_file())
    if runs and latest:
        raise BenchError("--run and --latest are exclusive")
    if latest:
        if not stored:
            raise BenchError(f"no stored runs under {results_dir}")
        return stored[-1:]  # run ids start with a UTC timestamp: the last sorts latest
    if runs:
        unknown = [r for r in runs if r not in stored]
        if unknown:
            raise BenchError(f"unknown run(s) {', '.join(unknown)}; stored: {', '.join(stored) or '(none)'}")
    return runs
