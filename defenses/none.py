"""The no-defense baseline."""

from __future__ import annotations

import torch

from bench.core.registry import register_defense
from defenses.base import Defense


@register_defense("none")
class NoDefense(Defense):
    """No defense: returns its input unchanged (the undefended baseline).

    Input/output NCHW float in [0,1], same tensor. Example: ``--defenses none,countergan``
    """

    identity = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
