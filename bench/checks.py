"""Evaluation sanity checks stored in each record's ``checks`` (AutoAttack-style warnings).

A non-empty list means the number should not be trusted as a robustness claim as it stands.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

PROBE = 8  # images used by the probes


def is_randomized(defense: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return not torch.equal(defense(x), defense(x))


def gradient_problem(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> str | None:
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        if not loss.requires_grad:
            return "zero gradients through the attacked model (no graph to the input)"
        grad, = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None or grad.abs().max().item() == 0:
        return "zero gradients through the attacked model"
    if not torch.isfinite(grad).all():
        return "NaN/inf gradients through the attacked model"
    return None


def evaluate(worker: Any, rec: dict[str, Any], defense: torch.nn.Module, model: torch.nn.Module,
             test: Any, adv: torch.Tensor, eps: float | None) -> list[str]:
    """The checks a worker can compute from one cell (probes cached per worker)."""
    cache = worker.check_cache
    out = []
    xb = test.x[:PROBE].to(worker.device)
    yb = test.y[:PROBE].to(worker.device)
    name = rec["defense"]
    if ("random", name) not in cache:
        cache[("random", name)] = is_randomized(defense, xb)
    if cache[("random", name)]:
        out.append("randomized defense: outputs differ between calls (use bpda-eot)")
    gkey = ("grad", name, rec["threat"])
    if gkey not in cache:
        cache[gkey] = gradient_problem(model, xb, yb)
    if cache[gkey]:
        out.append(cache[gkey])
    if eps is not None and rec["max_linf"] > eps + 1e-6:
        out.append(f"perturbation exceeds eps: max |x_adv - x| = {rec['max_linf']:.6g} > {eps:.6g}")
    if adv.min().item() < 0 or adv.max().item() > 1:
        out.append("adversarial images leave [0,1]")
    return out


def versus_fgsm(rec: dict[str, Any], stored: list[dict[str, Any]]) -> None:
    """Flag an iterative attack that does worse than FGSM at the same eps (driver side)."""
    if not rec.get("iterative") or rec.get("eps") is None:  # FGSM and worst-case rows are not iterative
        return
    for r in stored:
        if (r.get("attack") == "fgsm" and r.get("defense") == rec["defense"] and r.get("threat") == rec["threat"]
                and r.get("eps") == rec["eps"] and r.get("dataset") == rec["dataset"]):
            high = r.get("defended_adv_acc_ci_high", r["defended_adv_acc"])
            if rec["defended_adv_acc"] > high:
                rec["checks"].append(f"{rec['attack']} is weaker than FGSM at the same eps "
                                     f"({rec['defended_adv_acc']:.3f} > {r['defended_adv_acc']:.3f}): "
                                     "a sign of a broken evaluation (masked gradients?)")
