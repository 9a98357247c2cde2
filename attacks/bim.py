"""BIM / I-FGSM (Kurakin et al. 2017), L∞, no random start."""

from __future__ import annotations

import torchattacks

from attacks.base import AttackPlugin
from bench.core.registry import register_attack


@register_attack("bim")
class BIM(AttackPlugin):
    """Basic Iterative Method, L∞ (torchattacks.BIM).

    Args (keyword-only):
        steps: iterations; 0 = Kurakin et al.'s min(255·eps + 4, 1.25·255·eps).
        alpha: step size (default 1/255, Kurakin et al.'s one intensity level).
    Example: ``python -m bench --attack bim --eps 0.1``
    """

    iterative = True
    supports_eot = True

    def __init__(self, *, steps: int = 0, alpha: float = 1 / 255) -> None:
        if steps < 0 or alpha <= 0:
            raise ValueError("steps must be ≥ 0 and alpha > 0")
        self.steps, self.alpha = steps, alpha

    def effective_params(self, eps, spec):
        steps = self.steps or int(min(eps * 255 + 4, 1.25 * eps * 255))
        return {"steps": max(steps, 1), "alpha": self.alpha}

    def build(self, model, eps, spec):
        return torchattacks.BIM(model, eps=eps, **self.effective_params(eps, spec))

    def build_eot(self, model, eps, spec, draws):
        # BIM is PGD from x itself (no random start), projected onto the eps-ball each step.
        return torchattacks.EOTPGD(
            model, eps=eps, eot_iter=draws, random_start=False, **self.effective_params(eps, spec)
        )
