"""Checks over stored records (AutoAttack-style warnings): an iterative attack weaker than FGSM on
the same cell. The checks a worker computes while it runs (``bench.run.probes``) need tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.core import identity
from bench.core.checkcodes import COMPARING, Check, Code
from bench.core.record import checks_of, decode
from bench.core.threats import Threat

WEAKER = "is weaker than FGSM"


def _true(v: Any) -> bool:
    """A stored flag that is set (a frame's NaN, None or a missing field is not)."""
    return isinstance(v, (bool, np.bool_)) and bool(v)


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def twin_key(rec: Mapping[str, Any]) -> str:
    """What an attack's cell shares with its FGSM twin: its identity without the attack."""
    return identity.group_key(rec, vary=("attack",))


def free_twin_key(rec: Mapping[str, Any]) -> str:
    """What a cell shares with its gradient-free twin: under white-box, BPDA and BPDA+EOT, the
    gradient-free attack's one white-box cell (it reads only the defended model's outputs, which
    those threats share: ``bench.core.threats.Threat.query``); under the others, its twin_key."""
    if Threat.stored(rec.get("threat")).through_defense:
        return "queried:" + identity.group_key(rec, vary=("attack", "query"))
    return twin_key(rec)


def versus_fgsm(rec: Mapping[str, Any], stored: Sequence[Mapping[str, Any]]) -> list[Check]:
    """Flag an iterative attack that does worse than FGSM on the same cell otherwise, on the model
    both attacked: under gray-box that is the bare classifier (the defended figure is a transfer,
    where PGD may well do worse), under the other threats the defended pipeline.

    The driver runs it as each cell is stored (so the run's log says it); an executor may deliver
    the iterative cell before its FGSM twin, so the report runs it again over all stored records
    (``with_record_checks``) — a warning never depends on the order cells finished in."""
    # FGSM and worst-case rows are not iterative; `!= True` also skips a frame's NaN (no such field)
    out: list[Check] = []
    if not _true(rec.get("iterative")) or _number(rec.get("eps")) is None:
        return out
    metric = "adv_acc" if Threat.stored(rec.get("threat")).is_gray else "defended_adv_acc"
    key = twin_key(rec)
    for r in stored:
        if r.get("attack") == "fgsm" and twin_key(r) == key:
            value, twin = _number(rec.get(metric)), _number(r.get(metric))
            high = _number(r.get(f"{metric}_ci_high"))
            high = twin if high is None else high
            if value is not None and high is not None and value > high:
                model = "the bare classifier" if metric == "adv_acc" else "the defended model"
                out.append(
                    Check(
                        Code.WEAKER_THAN_FGSM,
                        f"{rec['attack']} {WEAKER} at the same eps on {model} ({value:.3f} > {twin:.3f}): "
                        "a sign of a broken evaluation (masked gradients?)",
                    )
                )
    return out


MASKED = "may be misled by masked gradients"


def _metric(rec: Mapping[str, Any]) -> str:
    return "adv_acc" if Threat.stored(rec.get("threat")).is_gray else "defended_adv_acc"


def versus_gradient_free(rec: Mapping[str, Any], stored: Sequence[Mapping[str, Any]]) -> list[Check]:
    """AutoAttack's flag: a gradient attack that a gradient-free one (Square) beats on the same cell
    beyond both 95% intervals was misled — the defense's gradients are masked or shattered, and
    the gradient attack's number is no robustness claim. Checked on the gradient attack's record."""
    out: list[Check] = []
    if not _true(rec.get("iterative")) or _true(rec.get("gradient_free")) or _number(rec.get("eps")) is None:
        return out
    metric, key = _metric(rec), free_twin_key(rec)
    low = _number(rec.get(f"{metric}_ci_low"))
    for r in stored:
        if _true(r.get("gradient_free")) and r is not rec and free_twin_key(r) == key:
            high, value = _number(r.get(f"{metric}_ci_high")), _number(r.get(metric))
            if low is not None and high is not None and high < low:
                out.append(
                    Check(
                        Code.MASKED_GRADIENTS,
                        f"{rec['attack']} {MASKED}: the gradient-free {r['attack']} reaches "
                        f"{value:.3f} < {_number(rec.get(metric)):.3f} at the same eps, beyond the 95% intervals",
                    )
                )
    return out


# AutoAttack's tolerance before it flags Square for lowering the white-box attacks' robust accuracy
# (autoattack/checks.py, check_square_sr: 0.2 points).
SQUARE_TOLERANCE = 0.002


def cascade_gradient_free(rec: Mapping[str, Any]) -> list[Check]:
    """AutoAttack's "Square Attack improves the robustness evaluation" flag, inside a cascade
    (``--attack aa``): a gradient-free stage that breaks images every gradient stage before it left
    robust, lowering the robust accuracy by more than ``SQUARE_TOLERANCE``, says the gradient attacks
    were misled (masked or obfuscated gradients). A cascade grid has no Square cell on every image
    to compare with (``versus_gradient_free``): this is its witness. Reads the record alone: the
    images it ran on (``ran_on``) are those the earlier stages left robust."""
    ran_on, n = rec.get("ran_on"), _number(rec.get("n"))
    if not _true(rec.get("gradient_free")) or not rec.get("cascade") or not isinstance(ran_on, str) or not n:
        return []
    after = _number(rec.get("defended_adv_acc"))
    before = float(decode(ran_on, int(n)).mean())
    if after is None or after >= before - SQUARE_TOLERANCE:
        return []
    return [
        Check(
            Code.SQUARE_IMPROVES,
            f"{rec['attack']}, the cascade's gradient-free stage, lowers the robust accuracy its gradient "
            f"stages left ({before:.3f} → {after:.3f}): AutoAttack's sign that the gradient attacks were "
            "misled (masked gradients?)",
        )
    ]


def with_record_checks(records: list[dict[str, Any]]) -> list[list[Check]]:
    """Every record's checks, with the checks that compare cells (``COMPARING``: ``versus_fgsm``,
    ``versus_gradient_free``) redone against all the other records (a stored verdict of an older
    rule, or one made before its twin was stored, is replaced, by code); other checks stay as stored."""
    fgsm: dict[str, list[dict[str, Any]]] = {}
    free: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("attack") == "fgsm":
            fgsm.setdefault(twin_key(r), []).append(r)
        if _true(r.get("gradient_free")):
            free.setdefault(free_twin_key(r), []).append(r)
    out = []
    for rec in records:
        stored = checks_of(rec)
        if not _true(rec.get("iterative")):
            out.append(list(stored))
            continue
        new = (
            versus_fgsm(rec, fgsm.get(twin_key(rec), []))
            + versus_gradient_free(rec, free.get(free_twin_key(rec), []))
            + cascade_gradient_free(rec)
        )
        out.append([c for c in stored if c.code not in COMPARING] + new)
    return out
