"""The adequacy sweep: the same cells at growing attack budgets, each point an ordinary run."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.analysis.adequacy import curves
from bench.analysis.frame import frame
from bench.core.labels import fmt_eps
from bench.core.record import Record
from bench.core.threats import Threat
from bench.run.driver import Runner
from bench.store.provenance import cli_command

DEFAULT_STEPS = (10, 20, 40, 100, 200)
DEFAULT_RESTARTS = (1, 5)
DEFAULT_EOT = (1, 4, 16)


def converged_steps(records: Sequence[Mapping[str, Any]], steps: list[int]) -> dict[tuple, int]:
    """(dataset, defense, threat, eps) → the step count the steps sweep converged at (the largest
    swept when it did not converge or could not tell)."""
    out: dict[tuple, int] = {}
    df = frame(records)
    for _, r in df.iterrows():
        out[(r["dataset"], r["defense"], r["threat"], fmt_eps(r["eps"]))] = max(steps)
    for c in curves(df):
        axis = next((a for a in c.axes if a.name == "steps"), None)
        if axis is not None and axis.converged and axis.converged_at is not None:
            out[(c.row["dataset"], c.row["defense"], c.row["threat"], fmt_eps(c.row["eps"]))] = axis.converged_at
    return out


def later_points(
    conv: dict[tuple, int],
    eps_of: dict[str, float | None],
    has_restarts: bool,
    randomized: set[str],
    restarts: list[int],
    eot: list[int],
    base_eot: int,
) -> list[dict[str, Any]]:
    """The restarts and EOT points, each at the step count where its cells' steps sweep
    converged: one run per (dataset, threat, eps, steps, restarts, EOT draws) with its defenses."""
    groups: dict[tuple, list[str]] = {}
    for (dataset, defense, threat, eps), s in sorted(conv.items(), key=str):
        if has_restarts:
            for r in restarts:
                if r != 1:
                    groups.setdefault((dataset, threat, eps, s, r, base_eot), []).append(defense)
        if Threat(threat).is_eot and defense in randomized:
            for e in eot:
                if e != base_eot:
                    groups.setdefault((dataset, threat, eps, s, 1, e), []).append(defense)
    return [
        {
            "dataset": d,
            "threat": [t],
            "eps": eps_of[eps],
            "steps": s,
            "restarts": r,
            "eot_samples": e,
            "defenses": names,
        }
        for (d, t, eps, s, r, e), names in groups.items()
    ]


class Sweep:
    """Runs the points of a sweep one after the other, each an ordinary run (``Runner``)."""

    def __init__(self, cfg: Any, argv: list[str], executor: Any) -> None:
        self.cfg, self.argv, self.executor = cfg, argv, executor

    def point(
        self,
        attack: str,
        label: str,
        *,
        steps: int,
        restarts: int,
        eot_samples: int,
        threat: Sequence[str],
        defenses: list[str] | None = None,
        dataset: str | None = None,
        eps: float | None = None,
    ) -> list[Record]:
        cfg = copy.deepcopy(self.cfg)
        self.cfg.retrain = False  # --retrain trains at the first point; later points load what it cached
        base = dict(cfg.attack_params.get(attack, {}))
        params = {**base, "steps": steps}
        if "restarts" in base or restarts != 1:
            params["restarts"] = restarts
        cfg.attack, cfg.attack_params = [attack], {**cfg.attack_params, attack: params}
        # Threats may come from stored records (text): parsed here, where they enter.
        cfg.threat, cfg.eot_samples = [Threat(t) for t in threat], eot_samples
        if defenses:
            cfg.defenses = defenses
        if dataset:
            cfg.dataset = [dataset]
        if eps is not None:
            cfg.eps = [eps]
        text = (
            f"{attack} steps={steps} restarts={restarts}"
            + (f" eot={eot_samples}" if any(t.is_eot for t in cfg.threat) else "")
            + f" · {','.join(threat)}"
            + (f" · {','.join(defenses)}" if defenses else "")
        )
        print(f"[adequacy] {label}: {text}", flush=True)
        t = time.perf_counter()
        with Runner(cfg, cli_command(["adequacy", *self.argv])) as runner:
            try:
                records = runner.run(self.executor)
            except KeyboardInterrupt:
                print(
                    f"\ninterrupted: the cells stored so far are kept ({runner.writer.count} new in this "
                    "point); rerun the same command to resume",
                    file=sys.stderr,
                )
                raise
            print(runner.summary())
        print(f"[adequacy] {text}: {time.perf_counter() - t:.1f} s", flush=True)
        return [r for r in records if r.get("attack") == attack]
