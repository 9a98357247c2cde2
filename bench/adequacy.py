"""Attack adequacy: was the attack strong enough? (``python -m bench adequacy``)

Carlini et al.'s checklist asks for accuracy-vs-budget curves; purification defenses were
repeatedly overturned because the attack had not converged. The sweep runs the same cells at
growing attack budgets, one axis at a time, and stores them as ordinary records:

* **steps**: 10, 20, 40, 100, 200 (``--steps``), one restart;
* **restarts**: 1, 5 (``--restarts``) — PGD's ``restarts`` parameter (``attacks/pgd.py``): each
  image keeps the first restart that fools the attacked model;
* **EOT draws**: 1, 4, 16 (``--eot``), for randomised defenses under ``bpda-eot`` only.

Restarts and EOT draws are swept at the step count where that cell's steps sweep converged (the
largest swept when it did not): they ask whether more randomness or more draws still lower
accuracy once more steps no longer do — and cost a fraction of a sweep at the largest steps.

Analysis (from stored records only, so ``report`` redoes it): cells that differ only in the
budget (steps, the automatic step size that follows them, restarts, EOT draws) form a curve,
one per (dataset, classifier, defense, threat, attack, eps, n, …). Along each swept axis the
*last step* compares the largest value with the largest one at most half of it (a doubling or
more): when accuracy still drops by more than the half-width of the Wilson 95% interval of the
larger budget, the curve is **not converged**. Otherwise the *converged value* is the smallest
one that no larger value undercuts by more than that half-width. Every stored cell of the
same (dataset, classifier, defense, threat, attack, eps) — whatever its n — whose budget is
below the converged value, or any of whose curves did not converge, gets a flag in the report.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.identity import group_key
from bench.threats import table_title

AXES = ("steps", "restarts", "eot")
DEFAULT_STEPS = (10, 20, 40, 100, 200)
DEFAULT_RESTARTS = (1, 5)
DEFAULT_EOT = (1, 4, 16)




def _params(row: pd.Series) -> dict[str, Any]:
    p = row.get("attack_params")
    return p if isinstance(p, dict) else {}


def coords(row: pd.Series) -> tuple[int | None, int, int]:
    """(steps, restarts, EOT draws) of a cell; steps None for an attack without steps."""
    p = _params(row)
    steps = p.get("steps")
    eot = row.get("eot_samples")
    eot = 1 if eot is None or (isinstance(eot, float) and math.isnan(eot)) else int(eot)
    return (int(steps) if isinstance(steps, (int, float)) else None, int(p.get("restarts", 1) or 1), eot)


def match_key(row: pd.Series) -> str:
    """Everything but the budget and n: the cells one curve speaks for."""
    return group_key(row, vary=("budget", "n"))


@dataclass
class Axis:
    name: str
    fixed: dict[str, int]                       # the other two coordinates
    points: list[tuple[int, float, float, float, int]]  # (value, acc, ci_low, ci_high, df index)
    converged: bool = True
    converged_at: int | None = None             # None when not converged
    drop: float = 0.0                           # accuracy lost over the last step
    half_width: float = 0.0                     # CI half-width at the largest value
    last: tuple[int, int] = (0, 0)              # (previous value, largest value)

    def verdict(self) -> str:
        prev, top = self.last
        if not self.converged:
            return (f"NOT converged: {self.name} {prev}→{top} still lowers accuracy by {self.drop:.3f} "
                    f"> CI half-width {self.half_width:.3f}")
        return (f"converged at {self.name} = {self.converged_at} ({self.name} {prev}→{top}: "
                f"{-self.drop:+.3f}, CI half-width {self.half_width:.3f})")


@dataclass
class Curve:
    key: str
    n: int
    row: pd.Series                              # one of its cells, for names
    axes: list[Axis] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return all(a.converged for a in self.axes)


def _half_width(row: pd.Series) -> float:
    lo, hi = row.get("defended_adv_acc_ci_low"), row.get("defended_adv_acc_ci_high")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        from bench.stats import wilson
        lo, hi = wilson(round(row["defended_adv_acc"] * row["n"]), int(row["n"]))
    return (hi - lo) / 2


def analyse_axis(name: str, fixed: dict[str, int], rows: list[tuple[int, pd.Series, Any]]) -> Axis:
    rows = sorted(rows, key=lambda t: t[0])
    pts = [(v, float(r["defended_adv_acc"]), float(r.get("defended_adv_acc_ci_low", math.nan)),
            float(r.get("defended_adv_acc_ci_high", math.nan)), idx) for v, r, idx in rows]
    hws = {v: _half_width(r) for v, r, _ in rows}
    acc = {p[0]: p[1] for p in pts}
    values = [p[0] for p in pts]
    top = values[-1]
    halves = [v for v in values[:-1] if v <= top / 2]
    prev = halves[-1] if halves else values[-2]
    axis = Axis(name, fixed, pts, last=(prev, top), drop=acc[prev] - acc[top], half_width=hws[top])
    axis.converged = axis.drop <= axis.half_width
    if axis.converged:
        axis.converged_at = next(v for i, v in enumerate(values)
                                 if all(acc[v] - acc[w] <= hws[w] for w in values[i + 1:]))
    return axis


def curves(df: pd.DataFrame) -> list[Curve]:
    """Every group of stored cells that differ only in the attack budget, with its swept axes."""
    if df.empty or "attack_params" not in df.columns:
        return []
    out = []
    data = df[df["defended_adv_acc"].notna() & df["n"].notna()]
    keys = data.apply(match_key, axis=1) if len(data) else pd.Series(dtype=str)
    for (key, n), g in data.groupby([keys, data["n"]], sort=True):
        pts: dict[tuple, tuple[pd.Series, Any]] = {}
        for idx, row in g.iterrows():
            c = coords(row)
            if c[0] is None:
                continue
            # Two cells at one budget (e.g. another batch size): the latest stored wins.
            if c not in pts or (row.get("time") or 0) >= (pts[c][0].get("time") or 0):
                pts[c] = (row, idx)
        if len(pts) < 2:
            continue
        curve = Curve(key, int(n), next(iter(pts.values()))[0])
        for i, name in enumerate(AXES):
            others = [j for j in range(3) if j != i]
            lines: dict[tuple, list] = {}
            for c, (row, idx) in pts.items():
                lines.setdefault(tuple(c[j] for j in others), []).append((c[i], row, idx))
            best = max(lines.items(), key=lambda kv: (len(kv[1]), kv[0]))
            if len(best[1]) < 2:
                continue
            fixed = {AXES[j]: v for j, v in zip(others, best[0])}
            curve.axes.append(analyse_axis(name, fixed, best[1]))
        if curve.axes:
            out.append(curve)
    return out


def annotate(df: pd.DataFrame, found: list[Curve] | None = None) -> pd.Series:
    """The report's flag per row: "" or why the cell's attack budget is below the converged one."""
    flags = pd.Series("", index=df.index, dtype=object)
    found = curves(df) if found is None else found
    if not found:
        return flags
    by_key: dict[str, Curve] = {}
    for c in found:  # the curve with the most images speaks for its cells
        if c.key not in by_key or c.n > by_key[c.key].n:
            by_key[c.key] = c
    for idx, row in df.iterrows():
        curve = by_key.get(match_key(row))
        if curve is None:
            continue
        c = dict(zip(AXES, coords(row)))
        if c["steps"] is None:
            continue
        why = []
        for axis in curve.axes:
            if not axis.converged and c[axis.name] <= axis.last[1]:  # beyond the sweep: unknown, no flag
                why.append(f"not converged ({axis.name} {axis.last[0]}→{axis.last[1]}: "
                           f"−{axis.drop:.3f} > ±{axis.half_width:.3f}, n={curve.n})")
            elif axis.converged_at is not None and c[axis.name] < axis.converged_at:
                why.append(f"{axis.name} {c[axis.name]} < {axis.converged_at} needed (n={curve.n})")
        if why:
            flags[idx] = "under-budget: " + "; ".join(why)
    return flags


def _name(row: pd.Series, width: int = 0) -> str:
    """A defense with the variant label the report gives its row (when there is one)."""
    variant = row.get("variant") or ""
    if width and len(variant) > width:
        variant = variant[:width - 1] + "…"
    return f"{row['defense']} [{variant}]" if variant else str(row["defense"])


def _eps(e: Any) -> str:
    return "—" if e is None or pd.isna(e) else f"{e:.4g}"


def markdown(df: pd.DataFrame, found: list[Curve] | None = None) -> str:
    found = curves(df) if found is None else found
    if not found:
        return ""
    rows = []
    for c in found:
        r = c.row
        for a in c.axes:
            fixed = ", ".join(f"{k}={v}" for k, v in a.fixed.items())
            rows.append({"dataset · classifier": f"{r['dataset']} · {r['classifier']}", "defense": _name(r),
                         "threat": r["threat"], "attack": r["attack"], "eps": _eps(r["eps"]), "n": c.n,
                         "axis": f"{a.name} ({fixed})",
                         "accuracy by budget": ", ".join(f"{v}: {acc:.3f}" for v, acc, *_ in a.points),
                         "verdict": a.verdict()})
    return "\n".join(["## Attack adequacy (accuracy vs attack budget)\n",
                      "Cells that differ only in the attack's budget, one axis at a time. A curve is *not "
                      "converged* when its last step (at least a doubling) still lowers defended accuracy "
                      "under attack by more than the Wilson 95% half-width; cells whose budget is below the "
                      "converged one are flagged in the tables (`adequacy` column; listed under each paper-view "
                      "table).\n",
                      pd.DataFrame(rows).to_markdown(index=False) + "\n"])


def paper_notes(df: pd.DataFrame, flags: pd.Series) -> dict[str, str]:
    """Paper-view title (``threats.table_title``) → a note listing its flagged cells."""
    out: dict[str, dict[str, list[str]]] = {}
    for idx in flags[flags != ""].index:
        r = df.loc[idx]
        variant = ", ".join(x for x in (r.get("variant"), r.get("attack_variant")) if x)
        cell = f"{r['defense']} · {r['attack']} {_eps(r['eps'])}" + (f" [{variant}]" if variant else "")
        title = table_title(r["dataset"], r["classifier"], r["threat"])
        out.setdefault(title, {}).setdefault(flags[idx], []).append(cell)
    return {t: "† Attack budget below the converged one (see *Attack adequacy*): "
            + "; ".join(f"{', '.join(cells)} — {why}" for why, cells in by_why.items())
            for t, by_why in out.items()}


def _budgets(a: Axis) -> list[int]:
    """Gradient evaluations per image at each point of an axis: steps × restarts × EOT draws."""
    out = []
    for v, *_ in a.points:
        coord = {**a.fixed, a.name: v}
        out.append(coord["steps"] * coord["restarts"] * coord["eot"])
    return out


def write_plots(df: pd.DataFrame, out: Path, found: list[Curve] | None = None) -> list[Path]:
    """Accuracy vs attack budget (gradient evaluations per image, log x), one figure per
    (dataset, classifier, threat, attack, eps, n), one line per defense and swept axis."""
    import matplotlib.ticker

    from bench.plots import _save, plt
    found = curves(df) if found is None else found
    figs: dict[tuple, list[Curve]] = {}
    for c in found:
        r = c.row
        figs.setdefault((r["dataset"], r["classifier"], r["threat"], r["attack"], _eps(r["eps"]), c.n), []).append(c)
    paths = []
    styles = {"steps": "o-", "restarts": "s--", "eot": "^:"}
    for (dataset, clf, threat, attack, eps, n), cs in sorted(figs.items(), key=str):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, c in enumerate(sorted(cs, key=lambda c: str(c.row["defense"]))):
            color = f"C{i % 10}"
            for a in c.axes:
                budget = _budgets(a)
                acc = [p[1] for p in a.points]
                err = [[max(0.0, p[1] - p[2]) if not math.isnan(p[2]) else 0 for p in a.points],
                       [max(0.0, p[3] - p[1]) if not math.isnan(p[3]) else 0 for p in a.points]]
                label = f"{_name(c.row, 40)} · {a.name}" + ("" if a.converged else " (NOT converged)")
                ax.errorbar(budget, acc, yerr=err, fmt=styles[a.name], color=color, capsize=2, label=label,
                            alpha=0.9)
        ax.set_xscale("log")
        ticks = sorted({b for c in cs for a in c.axes for b in _budgets(a)})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("attack budget: gradient evaluations per image (steps × restarts × EOT draws, log)")
        ax.set_ylabel("defended accuracy under attack")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"attack adequacy — {dataset}, {clf}, {attack} eps={eps}, {threat}-box, n={n}", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"adequacy_{dataset}_{clf}_{threat}_{attack}_{eps}_n{n}.png"))
    return paths


# --- the sweep ---------------------------------------------------------------------------------

def _int_list(text: str | None, default: tuple[int, ...], flag: str) -> list[int]:
    if text is None:
        return list(default)
    from bench.config import split_list
    try:
        values = sorted({int(v) for v in split_list(text)})
    except ValueError:
        raise BenchError(f"invalid {flag} {text!r}: a comma list of positive integers") from None
    if not values or values[0] < 1:
        raise BenchError(f"invalid {flag} {text!r}: values must be ≥ 1")
    return values


def converged_steps(records: list[dict[str, Any]], steps: list[int]) -> dict[tuple, int]:
    """(dataset, defense, threat, eps) → the step count the steps sweep converged at (the largest
    swept when it did not converge or could not tell)."""
    from bench.report import frame
    out: dict[tuple, int] = {}
    df = frame(records)
    for _, r in df.iterrows():
        out[(r["dataset"], r["defense"], r["threat"], _eps(r["eps"]))] = max(steps)
    for c in curves(df):
        axis = next((a for a in c.axes if a.name == "steps"), None)
        if axis is not None and axis.converged and axis.converged_at is not None:
            out[(c.row["dataset"], c.row["defense"], c.row["threat"], _eps(c.row["eps"]))] = axis.converged_at
    return out


def later_points(conv: dict[tuple, int], eps_of: dict[str, float | None], has_restarts: bool,
                 randomized: set[str], restarts: list[int], eot: list[int], base_eot: int) -> list[dict[str, Any]]:
    """The restarts and EOT points, each at the step count where its cells' steps sweep
    converged: one run per (dataset, threat, eps, steps, restarts, EOT draws) with its defenses."""
    groups: dict[tuple, list[str]] = {}
    for (dataset, defense, threat, eps), s in sorted(conv.items(), key=str):
        if has_restarts:
            for r in restarts:
                if r != 1:
                    groups.setdefault((dataset, threat, eps, s, r, base_eot), []).append(defense)
        if threat == "bpda-eot" and defense in randomized:
            for e in eot:
                if e != base_eot:
                    groups.setdefault((dataset, threat, eps, s, 1, e), []).append(defense)
    return [{"dataset": d, "threat": [t], "eps": eps_of[eps], "steps": s, "restarts": r, "eot_samples": e,
             "defenses": names} for (d, t, eps, s, r, e), names in groups.items()]


def sweep_parser():
    from bench.cli import run_parser
    p = run_parser()
    p.prog = "python -m bench adequacy"
    p.description = ("Sweep an attack's budget (steps, random restarts, EOT draws), store the cells as "
                     "ordinary records, plot accuracy vs budget and flag curves that have not converged.")
    p.add_argument("--steps", help="attack steps swept (default 10,20,40,100,200)")
    p.add_argument("--restarts", help="random restarts swept at the converged steps (default 1,5; attacks with "
                                      "a restarts parameter: pgd)")
    p.add_argument("--eot", help="EOT draws swept at the converged steps for randomised defenses under "
                                 "bpda-eot (default 1,4,16)")
    return p


class Sweep:
    """Runs the points of a sweep one after the other, each an ordinary run (``Runner``)."""

    def __init__(self, cfg: Any, argv: list[str], executor: Any) -> None:
        self.cfg, self.argv, self.executor = cfg, argv, executor

    def point(self, attack: str, label: str, *, steps: int, restarts: int, eot_samples: int,
              threat: list[str], defenses: list[str] | None = None, dataset: str | None = None,
              eps: float | None = None) -> list[dict[str, Any]]:
        import copy

        from bench.driver import Runner
        cfg = copy.deepcopy(self.cfg)
        self.cfg.retrain = False  # --retrain trains at the first point; later points load what it cached
        base = dict(cfg.attack_params.get(attack, {}))
        params = {**base, "steps": steps}
        if "restarts" in base or restarts != 1:
            params["restarts"] = restarts
        cfg.attack, cfg.attack_params = [attack], {**cfg.attack_params, attack: params}
        cfg.threat, cfg.eot_samples = threat, eot_samples
        if defenses:
            cfg.defenses = defenses
        if dataset:
            cfg.dataset = [dataset]
        if eps is not None:
            cfg.eps = [eps]
        text = (f"{attack} steps={steps} restarts={restarts}" + (f" eot={eot_samples}" if "bpda-eot" in threat else "")
                + f" · {','.join(threat)}" + (f" · {','.join(defenses)}" if defenses else ""))
        print(f"[adequacy] {label}: {text}", flush=True)
        t = time.perf_counter()
        with Runner(cfg, ["adequacy", *self.argv]) as runner:
            try:
                records = runner.run(self.executor)
            except KeyboardInterrupt:
                print(f"\ninterrupted: the cells stored so far are kept ({runner.writer.count} new in this "
                      "point); rerun the same command to resume", file=sys.stderr)
                raise
            print(runner.summary())
        print(f"[adequacy] {text}: {time.perf_counter() - t:.1f} s", flush=True)
        return [r for r in records if r.get("attack") == attack]


def cmd_adequacy(argv: list[str]) -> int:
    from bench.config import resolve
    from bench.plan import make_attack, make_defense
    from bench.registry import hyperparameters
    from bench.report import frame, run_commits, write_report
    from bench.store import iter_records
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
        from bench.executors import make_executor
        executor = make_executor(cfg.executor, cfg.ray_address)
    sweep = Sweep(cfg, argv, executor)
    t0 = time.perf_counter()
    try:
        for attack in cfg.attack:
            done = []
            for i, s in enumerate(steps, 1):
                done += sweep.point(attack, f"steps {i}/{len(steps)}", steps=s, restarts=1,
                                    eot_samples=cfg.eot_samples, threat=cfg.threat)
            eps_of = {_eps(r["eps"]): r["eps"] for r in done}
            later = later_points(converged_steps(done, steps), eps_of, "restarts" in hps[attack], randomized,
                                 restarts, eot, cfg.eot_samples)
            for i, pt in enumerate(later, 1):
                sweep.point(attack, f"restarts/EOT {i}/{len(later)}", **pt)
    except KeyboardInterrupt:
        return 130
    written = write_report(cfg.results_dir)
    df = frame(iter_records(Path(cfg.results_dir)), {"attack": cfg.attack, "defense": cfg.defenses},
               run_commits(Path(cfg.results_dir)))
    found = [c for c in curves(df) if c.row["threat"] in cfg.threat]
    print(markdown(df, found) or "[adequacy] no curve (fewer than two budgets stored)")
    for p in written:
        if p.name.startswith("adequacy_"):
            print(f"[adequacy] plot {p}")
    print(f"[adequacy] done in {time.perf_counter() - t0:.1f} s; records under {cfg.results_dir}/runs/")
    return 0
