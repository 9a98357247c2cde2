"""Checks over stored records (AutoAttack-style warnings): an iterative attack weaker than FGSM on
the same cell. The checks a worker computes while it runs (``bench.run.probes``) need tensors.
"""
from __future__ import annotations

import math
from typing import Any

from bench.core import identity


WEAKER = "is weaker than FGSM"


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def twin_key(rec: dict[str, Any]) -> str:
    """What an attack's cell shares with its FGSM twin: its identity without the attack."""
    return identity.group_key(rec, vary=("attack",))


def versus_fgsm(rec: dict[str, Any], stored: list[dict[str, Any]]) -> None:
    """Flag an iterative attack that does worse than FGSM on the same cell otherwise, on the model
    both attacked: under gray-box that is the bare classifier (the defended figure is a transfer,
    where PGD may well do worse), under the other threats the defended pipeline.

    The driver runs it as each cell is stored (so the run's log says it); an executor may deliver
    the iterative cell before its FGSM twin, so the report runs it again over all stored records
    (``with_fgsm_checks``) — a warning never depends on the order cells finished in."""
    # FGSM and worst-case rows are not iterative; `!= True` also skips a frame's NaN (no such field)
    if rec.get("iterative") != True or _number(rec.get("eps")) is None:  # noqa: E712
        return
    metric = "adv_acc" if rec.get("threat") == "gray" else "defended_adv_acc"
    key = twin_key(rec)
    for r in stored:
        if r.get("attack") == "fgsm" and twin_key(r) == key:
            value, twin = _number(rec.get(metric)), _number(r.get(metric))
            high = _number(r.get(f"{metric}_ci_high"))
            high = twin if high is None else high
            if value is not None and high is not None and value > high:
                model = "the bare classifier" if metric == "adv_acc" else "the defended model"
                rec["checks"].append(f"{rec['attack']} {WEAKER} at the same eps on {model} "
                                     f"({value:.3f} > {twin:.3f}): "
                                     "a sign of a broken evaluation (masked gradients?)")


def with_fgsm_checks(records: list[dict[str, Any]]) -> list[list[str]]:
    """Every record's checks, with ``versus_fgsm`` redone for iterative cells against all the other
    records (a stored verdict of an older rule, or one made before the FGSM twin was stored, is
    replaced); other rows keep what they stored."""
    fgsm: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("attack") == "fgsm":
            fgsm.setdefault(twin_key(r), []).append(r)
    out = []
    for rec in records:
        stored = rec.get("checks") if isinstance(rec.get("checks"), list) else []
        if rec.get("iterative") != True:  # noqa: E712
            out.append(list(stored))
            continue
        probe = {**rec, "checks": []}
        versus_fgsm(probe, fgsm.get(twin_key(rec), []))
        out.append([c for c in stored if WEAKER not in c] + probe["checks"])
    return out
