"""``python -m bench adequacy``: sweep an attack's budget and flag curves that have not converged."""

from __future__ import annotations

import time
from pathlib import Path

from bench.analysis.adequacy import curves
from bench.analysis.frame import frame, run_commits
from bench.cli.parser import run_parser
from bench.core.config import resolve, split_list
from bench.core.errors import BenchError
from bench.core.labels import fmt_eps
from bench.core.registry import hyperparameters
from bench.render.adequacy import markdown
from bench.render.report import write_report
from bench.run.executors import make_executor
from bench.run.plan import make_attack, make_defense
from bench.run.sweep import DEFAULT_EOT, DEFAULT_RESTARTS, DEFAULT_STEPS, Sweep, converged_steps, later_points
from bench.store.runs import iter_records


def _int_list(text: str | None, default: tuple[int, ...], flag: str) -> list[int]:
    if text is None:
        return list(default)
    try:
        values = sorted({int(v) for v in split_list(text)})
    except ValueError:
        raise BenchError(f"invalid {flag} {text!r}: a comma list of positive integers") from None
    if not values or values[0] < 1:
        raise BenchError(f"invalid {flag} {text!r}: values must be ≥ 1")
    return values


def sweep_parser():
    p = run_parser()
    p.prog = "python -m bench adequacy"
    p.description = (
        "Sweep an attack's budget (steps, random restarts, EOT draws), store the cells as "
        "ordinary records, plot accuracy vs budget and flag curves that have not converged."
    )
    p.add_argument("--steps", help="attack steps swept (default 10,20,40,100,200)")
    p.add_argument(
        "--restarts",
        help="random restarts swept at the converged steps (default 1,5; attacks with a restarts parameter: pgd)",
    )
    p.add_argument(
        "--eot", help="EOT draws swept at the converged steps for randomised defenses under bpda-eot (default 1,4,16)"
    )
    return p


def main(argv: list[str]) -> int:
    args = vars(sweep_parser().parse_args(argv))
    asked_restarts = args["restarts"] is not None
    steps = _int_list(args.pop("steps"), DEFAULT_STEPS, "--steps")
    restarts = _int_list(args.pop("restarts"), DEFAULT_RESTARTS, "--restarts")
    eot = _int_list(args.pop("eot"), DEFAULT_EOT, "--eot")
    config = args.pop("config")
    args.pop("debug")
    if args.get("attack") is None:
        args["attack"] = "pgd"
    cfg = resolve(args, config)
    randomized = {n for n in cfg.defenses if make_defense(n, cfg.defense_params.get(n)).randomized}
    hps = {}
    for attack in cfg.attack:
        hp = hyperparameters(type(make_attack(attack, cfg.attack_params.get(attack))))
        if "steps" not in hp:
            raise BenchError(f"attack {attack!r} has no steps parameter to sweep (use pgd or bim)")
        if asked_restarts and max(restarts) > 1 and "restarts" not in hp:
            raise BenchError(f"attack {attack!r} has no restarts parameter (pgd has)")
        hps[attack] = hp
    if cfg.wandb != "disabled":
        raise BenchError("adequacy does not log to Weights & Biases; run it with --wandb disabled")
    executor = None
    if cfg.executor != "local":
        executor = make_executor(cfg.executor, cfg.ray_address)
    sweep = Sweep(cfg, argv, executor)
    t0 = time.perf_counter()
    try:
        for attack in cfg.attack:
            done = []
            for i, s in enumerate(steps, 1):
                done += sweep.point(
                    attack,
                    f"steps {i}/{len(steps)}",
                    steps=s,
                    restarts=1,
                    eot_samples=cfg.eot_samples,
                    threat=cfg.threat,
                )
            eps_of = {fmt_eps(r["eps"]): r["eps"] for r in done}
            later = later_points(
                converged_steps(done, steps),
                eps_of,
                "restarts" in hps[attack],
                randomized,
                restarts,
                eot,
                cfg.eot_samples,
            )
            for i, pt in enumerate(later, 1):
                sweep.point(attack, f"restarts/EOT {i}/{len(later)}", **pt)
    except KeyboardInterrupt:
        return 130
    written = write_report(Path(cfg.results_dir))
    df = frame(
        iter_records(Path(cfg.results_dir)),
        {"attack": cfg.attack, "defense": cfg.defenses},
        run_commits(Path(cfg.results_dir)),
    )
    found = [c for c in curves(df) if c.row["threat"] in cfg.threat]
    print(markdown(df, found) or "[adequacy] no curve (fewer than two budgets stored)")
    for p in written:
        if p.name.startswith("adequacy_"):
            print(f"[adequacy] plot {p}")
    print(f"[adequacy] done in {time.perf_counter() - t0:.1f} s; records under {cfg.results_dir}/runs/")
    return 0
