"""Sanity checks a worker computes while it runs a cell (AutoAttack-style warnings stored in each
record's ``checks``): gradients through the attacked model, the perturbation within eps, label
leaking. A non-empty list means the number should not be trusted as a robustness claim as it stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from bench.core.checkcodes import Check, Code

PROBE = 8  # images used by the probes
LEAK_P = 0.05  # one-sided level of the label-leaking sign test


def is_randomized(defense: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return not torch.equal(defense(x.clone()), defense(x.clone()))


def gradient_problem(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Check | None:
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        if not loss.requires_grad:
            return Check(Code.ZERO_GRADIENT, "zero gradients through the attacked model (no graph to the input)")
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None or grad.abs().max().item() == 0:
        return Check(Code.ZERO_GRADIENT, "zero gradients through the attacked model")
    if not torch.isfinite(grad).all():
        return Check(Code.NONFINITE_GRADIENT, "NaN/inf gradients through the attacked model")
    return None


def evaluate(
    cache: dict,
    cell: Any,
    defense: torch.nn.Module,
    model: torch.nn.Module,
    probe: tuple[torch.Tensor, torch.Tensor],
    rec: Mapping[str, Any],
) -> list[Check]:
    """The checks a worker can compute from one cell (probes cached per worker in ``cache``)."""
    out: list[Check] = []
    xb, yb = probe
    # One worker may serve several datasets and classifiers: probes are per (defense, data, classifier).
    name, threat = (cell.defense, rec["dataset"], rec.get("classifier_hash")), cell.threat_effective
    if ("random", name) not in cache:
        cache[("random", name)] = is_randomized(defense, xb)
    varies = cache[("random", name)]
    if varies and not defense.randomized:
        out.append(
            Check(
                Code.UNDECLARED_RANDOMNESS,
                "outputs differ between calls but the defense does not declare randomized = True",
            )
        )
    # Only where the threat itself ignores the randomness: gray-box attacks never see the
    # defense, and bpda-eot averages over it (a gradient-free attack has no gradient to average).
    if (varies or defense.randomized) and (threat.is_white or threat.is_bpda) and rec.get("gradient_free") is not True:
        out.append(
            Check(
                Code.RANDOMNESS_NOT_AVERAGED,
                f"randomized defense under {threat}, which does not average over its randomness (use bpda-eot)",
            )
        )
    if cell.threat_effective != cell.identity["threat"]:
        out.append(
            Check(
                Code.GRADIENT_REPLACED,
                f"{cell.identity['threat']} attacked through {cell.threat_effective}: "
                "the defense declares no useful gradients (differentiable = False)",
            )
        )
    gkey = ("grad", name, threat)
    if gkey not in cache:
        cache[gkey] = gradient_problem(model, xb, yb)
    if cache[gkey]:
        out.append(cache[gkey])
    eps = rec["eps"]
    if eps is not None and rec["max_linf"] > eps + 1e-6:
        out.append(
            Check(Code.EXCEEDS_EPS, f"perturbation exceeds eps: max |x_adv - x| = {rec['max_linf']:.6g} > {eps:.6g}")
        )
    return out


def binom_tail(k: int, n: int) -> float:
    """P(X ≥ k) for X ~ Binomial(n, 1/2): the exact one-sided sign test."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n if n else 1.0


def label_leak(rec: Any, clean_ok: torch.Tensor, dc_ok: torch.Tensor, da_ok: torch.Tensor) -> list[Check]:
    """Signs that the attack's perturbation carries the label and the defense reads it
    (Kurakin et al. 2017): a true-label FGSM perturbation is the sign of the gradient at the
    true class, so a purifier trained on it can decode the answer from the noise."""
    out: list[Check] = []
    if rec["defended_adv_acc_ci_low"] > rec["clean_acc_ci_high"]:
        out.append(
            Check(
                Code.LABEL_LEAK,
                f"label leaking? defended accuracy under attack {rec['defended_adv_acc']:.3f} exceeds "
                f"the undefended clean accuracy {rec['clean_acc']:.3f} beyond the 95% CIs "
                "(try --attack-labels predicted)",
            )
        )
    if rec.get("attack_labels", "true") != "true":
        # Crafted against the classifier's (wrong) prediction, an attack pushes a misclassified
        # image away from that class, often onto the true one: that is not leaking.
        return out
    wrong = ~clean_ok
    fixed_attacked = int((wrong & da_ok & ~dc_ok).sum())  # right only when attacked
    fixed_clean = int((wrong & dc_ok & ~da_ok).sum())  # right only when clean
    p = binom_tail(fixed_attacked, fixed_attacked + fixed_clean)
    if fixed_attacked > fixed_clean and p < LEAK_P:
        out.append(
            Check(
                Code.LABEL_LEAK,
                f"label leaking? of the images the classifier gets wrong, the defense fixes "
                f"{int((wrong & da_ok).sum())} when attacked vs {int((wrong & dc_ok).sum())} when clean "
                f"(sign test p = {p:.3g})",
            )
        )
    # The same test over every image: a defense that is right more often on attacked inputs
    # than on the clean ones is reading the attack, not removing it.
    better, worse = int((da_ok & ~dc_ok).sum()), int((dc_ok & ~da_ok).sum())
    p = binom_tail(better, better + worse)
    if better > worse and p < LEAK_P:
        out.append(
            Check(
                Code.LABEL_LEAK,
                f"label leaking? the defense is right under attack on {better} images it gets wrong "
                f"clean, and wrong under attack on only {worse} it gets right clean (sign test p = {p:.3g})",
            )
        )
    return out
