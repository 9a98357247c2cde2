"""Carlini–Wagner L2 (2017): unbounded, minimises the perturbation; eps does not apply."""

from __future__ import annotations

import torchattacks

from attacks.base import AttackPlugin
from bench.core.registry import register_attack


@register_attack("cw")
class CW(AttackPlugin):
    """Carlini & Wagner L2 attack (torchattacks.CW); runs once per grid with eps = None.

    Args (keyword-only): c = 1.0 (loss trade-off), kappa = 0.0 (confidence),
    steps = 100, lr = 0.01.
    Example: ``python -m bench --attack cw``
    """

    uses_eps = False
    iterative = True
    norm = "L2"

    def __init__(self, *, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01) -> None:
        if c <= 0 or steps <= 0 or lr <= 0:
            raise ValueError("c, steps and lr must be > 0")
        self.c, self.kappa, self.steps, self.lr = c, kappa, steps, lr

    def effective_params(self, eps, spec):
        return {"c": self.c, "kappa": self.kappa, "steps": self.steps, "lr": self.lr}

    def build(self, model, eps, spec):
        return torchattacks.CW(model, **self.effective_params(eps, spec))
