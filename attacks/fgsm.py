"""FGSM (Goodfellow et al. 2015), L∞, one signed-gradient step of size eps."""

from __future__ import annotations

import torchattacks

from attacks.base import AttackPlugin
from bench.core.registry import register_attack


@register_attack("fgsm")
class FGSM(AttackPlugin):
    """Fast Gradient Sign Method, L∞ (torchattacks.FGSM); no parameters besides eps.

    Input NCHW in [0,1]; output stays within eps and [0,1].
    Example: ``python -m bench --attack fgsm --eps 0.3``
    """

    supports_eot = True

    def build(self, model, eps, spec):
        return torchattacks.FGSM(model, eps=eps)

    def build_eot(self, model, eps, spec, draws):
        # One step of size eps from x with the gradient averaged over draws: FGSM under EOT.
        return torchattacks.EOTPGD(model, eps=eps, alpha=eps, steps=1, eot_iter=draws, random_start=False)
