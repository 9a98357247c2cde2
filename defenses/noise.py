"""Gaussian noise injection: the cheap randomized baseline (a subject for EOT)."""

from __future__ import annotations

import torch

from bench.core.registry import register_defense
from defenses.base import Defense


@register_defense("gaussian")
class GaussianNoise(Defense):
    """Gaussian noise injection: add N(0, sigma²) to every pixel, then clip to [0,1].

    Args (keyword-only): sigma: float = 0.3. Randomness is the point: an attack that sees one
    draw is aimed at noise the next call does not repeat, so gray-box and plain white-box numbers
    overstate it; ``--threat bpda-eot`` averages the gradient over draws (Athalye et al. 2018).
    Unseeded it draws fresh noise every call; ``seed(s)`` makes the following calls reproducible.

    Contract: NCHW float in [0,1] → same shape in [0,1]; a new tensor, the input is never written.
    ``randomized = True``; differentiable (the gradient of x + noise is the identity inside [0,1]).
    Noise is drawn on the defense's own CPU generator (``Defense.rng``) and then moved, so a seed gives the same images on
    any device and nothing else's random stream is touched.
    Example: ``python -m bench --defenses none,gaussian --attack pgd --eps 0.3 --threat gray,white,bpda-eot``
    """

    randomized = True

    def __init__(self, *, sigma: float = 0.3) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be ≥ 0, not {sigma}")
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.rng).to(x.device, x.dtype)
        return (x + self.sigma * noise).clamp(0, 1)
