"""PGD (Madry et al. 2018), L∞, random start, steps and step size scaled to eps."""
from __future__ import annotations

import torchattacks

from attacks.base import AttackPlugin
from bench.registry import register_attack


@register_attack("pgd")
class PGD(AttackPlugin):
    """Projected Gradient Descent, L∞ (torchattacks.PGD) with a random start.

    Args (keyword-only):
        steps: iterations; 0 = per dataset (40 for 28×28 images as in Madry et al., 10 otherwise).
        alpha: step size; 0 = 2.5·eps/steps (Madry et al.'s rule, so any eps is reachable).
        random_start: start from a uniform point in the eps-ball (default True).
    Example: ``python -m bench --attack pgd --eps 0.3`` or ``[attacks.pgd] steps = 100``.
    """

    iterative = True

    def __init__(self, *, steps: int = 0, alpha: float = 0.0, random_start: bool = True) -> None:
        if steps < 0 or alpha < 0:
            raise ValueError("steps and alpha must be ≥ 0 (0 = automatic)")
        self.steps, self.alpha, self.random_start = steps, alpha, random_start

    def effective_params(self, eps, spec):
        steps = self.steps or (40 if spec.shape[1] <= 28 else 10)
        return {"steps": steps, "alpha": self.alpha or 2.5 * eps / steps,
                "random_start": self.random_start}

    def build(self, model, eps, spec):
        return torchattacks.PGD(model, eps=eps, **self.effective_params(eps, spec))
