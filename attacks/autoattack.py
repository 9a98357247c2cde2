"""AutoAttack (Croce & Hein 2020), L∞ standard ensemble, worst case per sample."""

from __future__ import annotations

import torchattacks

from attacks.base import AttackPlugin
from bench.core.registry import register_attack


@register_attack("autoattack")
class AutoAttack(AttackPlugin):
    """AutoAttack (torchattacks.AutoAttack): APGD-CE, APGD-T, FAB-T, Square; worst case per sample.

    Args (keyword-only): version = "standard" ("standard" | "plus" | "rand"), seed = 0.
    Example: ``python -m bench --attack autoattack --limit 200``
    """

    iterative = True

    def __init__(self, *, version: str = "standard", seed: int = 0) -> None:
        if version not in ("standard", "plus", "rand"):
            raise ValueError(f"version must be standard, plus or rand, not {version!r}")
        self.version, self.seed = version, seed

    def effective_params(self, eps, spec):
        return {"version": self.version, "seed": self.seed}

    def build(self, model, eps, spec):
        return torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version=self.version, n_classes=spec.num_classes, seed=self.seed
        )
