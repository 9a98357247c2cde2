"""PGD (Madry et al. 2018), L∞, random start, steps and step size scaled to eps."""

from __future__ import annotations

import torch
import torchattacks

from attacks.base import AttackPlugin
from bench.core.registry import register_attack


@register_attack("pgd")
class PGD(AttackPlugin):
    """Projected Gradient Descent, L∞ (torchattacks.PGD) with a random start.

    Args (keyword-only):
        steps: iterations; 0 = per dataset (40 for 28×28 images as in Madry et al., 10 otherwise).
        alpha: step size; 0 = 2.5·eps/steps (Madry et al.'s rule, so any eps is reachable).
        random_start: start from a uniform point in the eps-ball (default True).
        restarts: random restarts (default 1); each image keeps the first restart that fools
            the attacked model, later restarts only re-attack the images still classified right.
    Example: ``python -m bench --attack pgd --eps 0.3`` or ``[attacks.pgd] steps = 100``.
    """

    iterative = True
    supports_eot = True

    def __init__(self, *, steps: int = 0, alpha: float = 0.0, random_start: bool = True, restarts: int = 1) -> None:
        if steps < 0 or alpha < 0:
            raise ValueError("steps and alpha must be ≥ 0 (0 = automatic)")
        if restarts < 1:
            raise ValueError("restarts must be ≥ 1")
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start = true (restarts from x itself are identical)")
        self.steps, self.alpha, self.random_start, self.restarts = steps, alpha, random_start, restarts

    def effective_params(self, eps, spec):
        steps = self.steps or (40 if spec.shape[1] <= 28 else 10)
        params = {"steps": steps, "alpha": self.alpha or 2.5 * eps / steps, "random_start": self.random_start}
        if self.restarts > 1:  # absent at 1, so cells stored before restarts existed keep their keys
            params["restarts"] = self.restarts
        return params

    def _params(self, eps, spec):
        params = self.effective_params(eps, spec)
        params.pop("restarts", None)
        return params

    def build(self, model, eps, spec):
        return torchattacks.PGD(model, eps=eps, **self._params(eps, spec))

    def build_eot(self, model, eps, spec, draws):
        return torchattacks.EOTPGD(model, eps=eps, eot_iter=draws, **self._params(eps, spec))

    def perturb(self, model, x, y, eps, spec):
        return self._restarted(self.build(model, eps, spec), model, x, y)

    def perturb_eot(self, model, x, y, eps, spec, draws):
        return self._restarted(self.build_eot(model, eps, spec, draws), model, x, y)

    def _restarted(self, attack, model, x, y):
        adv = attack(x, y).detach()
        for _ in range(self.restarts - 1):
            with torch.no_grad():
                left = (model(adv).argmax(1) == y).nonzero().flatten()
            if len(left) == 0:
                break
            new = attack(x[left], y[left]).detach()
            with torch.no_grad():
                fooled = model(new).argmax(1) != y[left]
            adv[left[fooled]] = new[fooled]
        return adv
