"""DeepFool (Moosavi-Dezfooli et al. 2016): minimal L2 step to the nearest boundary."""

from __future__ import annotations

import torchattacks

from attacks.base import AttackPlugin
from bench.core.registry import register_attack


@register_attack("deepfool")
class DeepFool(AttackPlugin):
    """DeepFool, L2, unbounded (torchattacks.DeepFool); runs once per grid with eps = None.

    Args (keyword-only): steps = 50, overshoot = 0.02.
    Example: ``python -m bench --attack deepfool --limit 100``
    """

    uses_eps = False
    iterative = True
    norm = "L2"

    def __init__(self, *, steps: int = 50, overshoot: float = 0.02) -> None:
        if steps <= 0 or overshoot < 0:
            raise ValueError("steps must be > 0 and overshoot ≥ 0")
        self.steps, self.overshoot = steps, overshoot

    def effective_params(self, eps, spec):
        return {"steps": self.steps, "overshoot": self.overshoot}

    def build(self, model, eps, spec):
        return torchattacks.DeepFool(model, **self.effective_params(eps, spec))
