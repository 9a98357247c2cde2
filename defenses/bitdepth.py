"""Bit-depth reduction (feature squeezing, Xu, Evans & Qi, NDSS 2018)."""

from __future__ import annotations

import torch

from bench.core.registry import register_defense
from defenses.base import Defense


@register_defense("bitdepth")
class BitDepth(Defense):
    """Bit-depth reduction: round every pixel to one of 2**bits evenly spaced levels.

    Args (keyword-only): bits: int = 1 (1 to 8). The default is Xu et al.'s setting for MNIST:
    the digits are nearly binary already, so 1 bit (a threshold at 0.5) costs almost no clean
    accuracy and erases any perturbation that does not push a pixel across 0.5 — which an
    L∞ attack at eps < 0.5 must do pixel by pixel. For natural images (CIFAR-10) Xu et al.
    use 5 bits: ``[defenses.bitdepth] bits = 5``.

    Contract: NCHW float in [0,1] → same shape in [0,1]; a new tensor, the input is never written.
    ``round`` has a zero gradient almost everywhere, so attacking straight through it is gradient
    masking, not robustness: ``differentiable = False`` makes the white-box threat attack it
    through BPDA (recorded as ``threat_effective = "bpda"``).
    Example: ``python -m bench --defenses none,bitdepth --attack fgsm,pgd --eps 0.3 --threat gray,white``
    """

    differentiable = False

    def __init__(self, *, bits: int = 1) -> None:
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be in 1..8, not {bits}")
        self.bits = bits
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # round() sends 0.5 to 0 (half to even): 1 bit is exactly the threshold x > 0.5.
        return torch.round(x * self.levels) / self.levels
