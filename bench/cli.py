"""Command line: ``python -m bench [run|list|report|adequacy] …`` (bare form = run)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
import traceback

from bench.errors import BenchError

SUBCOMMANDS = ("run", "list", "report", "adequacy", "weights", "verify")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise BenchError(message)


def run_parser() -> Parser:
    p = Parser(prog="python -m bench", description="Benchmark adversarial defenses side by side.")
    a = p.add_argument
    a("--defenses", help="comma list of defense names or module:Class (default: none)")
    a("--attack", help="comma list: fgsm, pgd, bim, cw, deepfool, autoattack, torchattacks:Name")
    a("--eps", help="comma list of L∞ budgets in (0,1]; fractions like 8/255 allowed "
                    "(default per dataset: 0.3 MNIST/F-MNIST, 8/255 CIFAR-10)")
    a("--dataset", help="comma list: mnist, fashion-mnist, cifar10 (default mnist)")
    a("--threat", help="comma list: gray (default), white, bpda, bpda-eot")
    a("--eot-samples", type=_int, help="draws of a randomized defense averaged per gradient in bpda-eot (default 8)")
    a("--attack-labels", help="craft attacks with the true labels (default, as AutoAttack) or the "
                              "classifier's predictions (predicted: no label leaking)")
    a("--limit", type=_int, help="test images to evaluate (default: the whole test split)")
    a("--batch-size", type=_int, help="batch size (default 256)")
    a("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    a("--seed", type=_int, help="random seed (default 0)")
    a("--results-dir", help="where runs and reports are stored (default results)")
    a("--config", help="TOML config (default: ./bench.toml when present)")
    a("--data-root", help="dataset folder (default data)")
    a("--cache-dir", help="trained classifiers/defenses cache (default ~/.cache/defense-bench)")
    a("--classifier", help="classifier architecture (default per dataset)")
    a("--classifier-weights", help="a state dict for --classifier to evaluate instead of training one")
    a("--warmup", type=_int, help="timed batches excluded as warm-up (default 1)")
    a("--offline", action=argparse.BooleanOptionalAction, default=None,
      help="never try to download datasets (--no-offline overrides the config file)")
    a("--rerun", action=argparse.BooleanOptionalAction, default=None,
      help="recompute cells already stored (--no-rerun overrides the config file)")
    a("--retrain", action=argparse.BooleanOptionalAction, default=None,
      help="train classifiers and defenses anew instead of using the shipped zoo (bench/zoo) or the cache "
           "(the result is cached; DefenseGAN's own shipped generator is kept: pretrained = \"\" trains "
           "one; --no-retrain overrides the config file)")
    a("--executor", help="local (default) or ray")
    a("--ray-address", help="Ray cluster address (else RAY_ADDRESS, else a local Ray for the run)")
    a("--wandb", help="Weights & Biases logging: disabled (default), offline, online")
    a("--debug", action="store_true", help="show tracebacks")
    return p


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def cmd_run(argv: list[str]) -> int:
    from bench.config import resolve
    from bench.report import frame, markdown, write_report
    from bench.driver import Runner
    args = vars(run_parser().parse_args(argv))
    config = args.pop("config")
    args.pop("debug")
    cfg = resolve(args, config)
    runner = Runner(cfg, argv)
    executor = None
    try:
        if cfg.executor != "local":
            from bench.executors import make_executor
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
        from bench.wandb_log import log_run
        run_dir = log_run(cfg.wandb, cfg.wandb_project, cfg.to_dict(), records,
                          [p for p in written if p.suffix == ".png"], Path(cfg.results_dir))
        print(f"wandb ({cfg.wandb}): {run_dir}")
    return 0


def cmd_list(argv: list[str]) -> int:
    import attacks  # noqa: F401
    import defenses  # noqa: F401
    from bench import classifiers, data  # noqa: F401
    from dataclasses import asdict
    from bench.classifiers import resolve_recipe
    from bench.registry import ATTACKS, CLASSIFIERS, DATASETS, DEFENSES, doc_line, hyperparameters
    Parser(prog="python -m bench list").parse_args(argv)
    for title, reg in (("datasets", DATASETS), ("classifiers", CLASSIFIERS),
                       ("defenses", DEFENSES), ("attacks", ATTACKS)):
        print(f"{title}:")
        for name, cls in reg:
            params = ", ".join(f"{k}={v!r}" for k, v in hyperparameters(cls).items())
            print(f"  {name:28s} {doc_line(cls)}" + (f"\n  {'':28s} params: {params}" if params else ""))
            if reg is CLASSIFIERS:  # a classifier's knobs are its training recipe
                recipe = ", ".join(f"{k}={v!r}" for k, v in asdict(resolve_recipe(name, {}, {})).items())
                print(f"  {'':28s} recipe: {recipe}")
    print("  torchattacks:<ClassName>     any torchattacks attack, e.g. torchattacks:MIFGSM")
    return 0


def cmd_report(argv: list[str]) -> int:
    from bench.config import parse_eps, split_list
    from bench.report import FORMATS, write_report
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
    p.add_argument("--readme-block", default="results",
                   help="which block: the text between <!-- NAME:start --> and <!-- NAME:end --> (default results)")
    p.add_argument("--html", action="store_true", help="also write the leaderboard page <results-dir>/site/index.html")
    p.add_argument("--headline", metavar="DIR[,DIR]",
                   help="fill the README's headline block from these results dirs (each defense's worst case over "
                        "every attack and threat model) instead of a paper-view block; needs --readme")
    p.add_argument("--headline-eps", help="only these eps in the headline (comma list; default all)")
    p.add_argument("--compare", metavar="A,B", help="print the paired comparison of two defenses (2×2 table, exact "
                                                    "McNemar p, difference with CI) and write nothing")
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
    if args.compare:
        return compare(args.results_dir, args.compare, filters, runs)
    if args.headline:
        eps = [parse_eps(e) for e in split_list(args.headline_eps)] if args.headline_eps else None
        return headline(split_list(args.headline), args.readme, filters, eps)
    written = write_report(args.results_dir, formats, filters, plots=not args.no_plots, readme=args.readme,
                           readme_block=args.readme_block,
                           runs=runs, html=args.html)
    for path in written:
        if path.suffix != ".png":
            print(f"wrote {path}")
    print(f"wrote {sum(p.suffix == '.png' for p in written)} plot(s) under {Path(args.results_dir) / 'plots'}")
    return 0


def compare(results_dir: str, names: str, filters: dict[str, list[str]], runs: list[str] | None) -> int:
    from bench.config import split_list
    from bench.paired import compare as paired_compare
    from bench.report import frame, run_commits
    from bench.store import iter_records
    pair = split_list(names)
    if len(pair) != 2:
        raise BenchError(f"--compare takes two different defenses, A,B (got {names!r})")
    # Holm's family is every defense on the shared cells, so --defenses does not narrow it.
    filters = {k: v for k, v in filters.items() if k != "defense"}
    df = frame(iter_records(Path(results_dir), runs), filters, run_commits(Path(results_dir)))
    print(paired_compare(df, *pair))
    return 0


def headline(dirs: list[str], readme: str | None, filters: dict[str, list[str]], eps: list[float] | None) -> int:
    from bench import headline as hl
    from bench.report import frame, run_commits
    from bench.store import iter_records
    if not readme:
        raise BenchError("--headline fills a README block: give --readme FILE")
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        raise BenchError(f"results dir {missing[0]} does not exist")
    records = [r for d in dirs for r in iter_records(Path(d))]
    commits = {k: v for d in dirs for k, v in run_commits(Path(d)).items()}
    df = frame(records, filters, commits)
    if eps is not None and not df.empty:
        df = df[df["eps"].map(lambda e: any(abs(e - x) < 1e-9 for x in eps) if e == e and e is not None else False)
                | (df["attack"] != "worst")]
    print(f"wrote {hl.update(Path(readme), dirs, df)}")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    cmd = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "run"
    try:
        from bench.adequacy import cmd_adequacy
        from bench.verify import cmd_verify
        from bench.weights import cmd_weights
        return {"run": cmd_run, "list": cmd_list, "report": cmd_report, "adequacy": cmd_adequacy,
                "weights": cmd_weights, "verify": cmd_verify}[cmd](argv)
    except BenchError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
