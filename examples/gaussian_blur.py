"""An external defense in one file: a Gaussian blur (no registration, no edit to the repo).

Run it next to the built-ins by its ``module:Class`` path:

    python -m bench --defenses none,median,examples.gaussian_blur:GaussianBlur --attack fgsm --eps 0.3
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.plugin import Defense


class GaussianBlur(Defense):
    """Gaussian blur, per channel: a low-pass filter that averages high-frequency noise away.

    Args (keyword-only): sigma: float = 1.0 (pixels); the window spans ±3·sigma.
    Contract: NCHW float in [0,1] → same shape in [0,1] (each output is a weighted mean of its
    inputs, weights ≥ 0 summing to 1); a new tensor, the input is never written. Differentiable.
    Example: ``python -m bench --defenses none,examples.gaussian_blur:GaussianBlur``
    """

    def __init__(self, *, sigma: float = 1.0) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, not {sigma}")
        radius = math.ceil(3 * sigma)
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(t**2) / (2 * sigma**2))
        self.register_buffer("kernel", kernel / kernel.sum())  # 1-D: the 2-D blur is separable
        self.sigma, self.radius = sigma, radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = self.kernel.to(x.dtype)
        # Replicated edges keep the border's mean right (zero padding would darken it).
        out = F.pad(x, [self.radius] * 4, mode="replicate")
        out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
        out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H
        return out.clamp(0, 1)  # float rounding only: a convex combination stays in [0,1]
