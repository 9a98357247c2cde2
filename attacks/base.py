"""Attack plugin base: a named, parameterised factory for a torchattacks attack."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.core.threats import MeanOverDraws


class AttackPlugin:
    """Base for attack plugins.

    ``build(model, eps, spec)`` returns a ready torchattacks attack on ``model`` (which
    takes NCHW images in [0,1]). ``uses_eps = False`` marks unbounded attacks (CW,
    DeepFool): the grid runs them once with ``eps = None``. ``iterative`` tells the
    evaluation checks which attacks should be at least as strong as FGSM.
    """

    uses_eps = True
    iterative = False
    norm = "Linf"
    # True when ``build_eot`` gives the attack's own form that averages the loss gradient over
    # draws of a randomized model (Athalye et al.'s EOT); without one, bpda-eot on a randomized
    # defense attacks the mean of the draws' logits.
    supports_eot = False
    # True for an attack that never reads a gradient (Square): masked gradients cannot mislead it,
    # so it doing clearly better than the gradient attacks flags the cell (analysis.checks).
    gradient_free = False

    def build(self, model: nn.Module, eps: float | None, spec: Any) -> Any:
        raise NotImplementedError

    def effective_params(self, eps: float | None, spec: Any) -> dict[str, Any]:
        """The parameters actually used for ``eps`` on ``spec`` (stored in every record)."""
        return dict(getattr(self, "hparams", {}))

    def build_eot(self, model: nn.Module, eps: float | None, spec: Any, draws: int) -> Any:
        """The attack with each gradient averaged over ``draws`` forward passes of ``model``. An
        attack without a form of its own (``supports_eot = False``) attacks the mean of ``draws``
        draws' logits (``bench.core.threats.MeanOverDraws``)."""
        return self.build(MeanOverDraws(model, draws), eps, spec)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None, spec: Any) -> torch.Tensor:
        return self.build(model, eps, spec)(x, y).detach()

    def perturb_eot(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None, spec: Any, draws: int
    ) -> torch.Tensor:
        return self.build_eot(model, eps, spec, draws)(x, y).detach()
