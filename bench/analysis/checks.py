"""Checks over stored records (AutoAttack-style warnings): an iterative attack weaker than FGSM on
the same cell. The checks a worker computes while it runs (``bench.run.probes``) need tensors.
"""
from __future__ import annotations

import math
from typing import Any

from bench.core import identity
from bench.core.threats import SAME_OUTPUTS_AS_WHITE


WEAKER = "is weaker than FGSM"


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def twin_key(rec: dict[str, Any]) -> str:
    """What an attack's cell shares with its FGSM twin: its identity without the attack."""
    return identity.group_key(rec, vary=("attack",))


def free_twin_key(rec: dict[str, Any]) -> str:
    """What a cell shares with its gradient-free twin: under white-box, BPDA and BPDA+EOT, the
    gradient-free attack's one white-box cell (it reads only the defended model's outputs, which
    those threats share: ``bench.run.plan.query_threat``); under the others, its twin_key."""
    if rec.get("threat") == "white" or rec.get("threat") in SAME_OUTPUTS_AS_WHITE:
        return "queried:" + identity.group_key(rec, vary=("attack", "query"))
    return twin_key(rec)


def versus_fgsm(rec: dict[str, Any], stored: list[dict[str, Any]]) -> None:
    """Flag an iterative attack that does worse than FGSM on the same cell otherwise, on the model
    both attacked: under gray-box that is the bare classifier (the defended figure is a transfer,
    where PGD may well do worse), under the other threats the defended pipeline.

    The driver runs it as each cell is stored (so the run's log says it); an executor may deliver
    the iterative cell before its FGSM twin, so the report runs it again over all stored records
    (``with_record_checks``) — a warning never depends on the order cells finished in."""
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


MASKED = "may be misled by masked gradients"


def _metric(rec: dict[str, Any]) -> str:
    return "adv_acc" if rec.get("threat") == "gray" else "defended_adv_acc"


def versus_gradient_free(rec: dict[str, Any], stored: list[dict[str, Any]]) -> None:
    """AutoAttack's flag: a gradient attack that a gradient-free one (Square) beats on the same cell
    beyond both 95% intervals was misled — the defense's gradients are masked or shattered, and
    the gradient attack's number is no robustness claim. Checked on the gradient attack's record."""
    if rec.get("iterative") != True or rec.get("gradient_free") == True or _number(rec.get("eps")) is None:  # noqa: E712
        return
    metric, key = _metric(rec), free_twin_key(rec)
    low = _number(rec.get(f"{metric}_ci_low"))
    for r in stored:
        if r.get("gradient_free") == True and r is not rec and free_twin_key(r) == key:  # noqa: E712
            high, value = _number(r.get(f"{metric}_ci_high")), _number(r.get(metric))
            if low is not None and high is not None and high < low:
                rec["checks"].append(f"{rec['attack']} {MASKED}: the gradient-free {r['attack']} reaches "
                                     f"{value:.3f} < {_number(rec.get(metric)):.3f} at the same eps, beyond the "
                                     "95% intervals")


def with_record_checks(records: list[dict[str, Any]]) -> list[list[str]]:
    """Every record's checks, with the checks that compare cells (``versus_fgsm``,
    ``versus_gradient_free``) redone against all the other records (a stored verdict of an older
    rule, or one made before its twin was stored, is replaced); other rows keep what they stored."""
    fgsm: dict[str, list[dict[str, Any]]] = {}
    free: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("attack") == "fgsm":
            fgsm.setdefault(twin_key(r), []).append(r)
        if r.get("gradient_free") == True:  # noqa: E712
            free.setdefault(free_twin_key(r), []).append(r)
    out = []
    for rec in records:
        stored = rec.get("checks") if isinstance(rec.get("checks"), list) else []
        if rec.get("iterative") != True:  # noqa: E712
            out.append(list(stored))
            continue
        probe = {**rec, "checks": []}
        versus_fgsm(probe, fgsm.get(twin_key(rec), []))
        versus_gradient_free(probe, free.get(free_twin_key(rec), []))
        out.append([c for c in stored if WEAKER not in c and MASKED not in c] + probe["checks"])
    return out
