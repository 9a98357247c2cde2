"""An external defense in one file: a k×k median filter (Xu et al.'s "feature squeezing").

Run it without touching the built-in packages:

    python -m bench --defenses none,examples.median_filter:MedianFilter --attack fgsm --eps 0.3
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from defenses.base import Defense


class MedianFilter(Defense):
    """Median filter over k×k windows, per channel (feature squeezing).

    Args (keyword-only): k: int = 3 (odd window size).
    Contract: NCHW float in [0,1] → same shape in [0,1] (a median of values in [0,1]).
    Example: ``python -m bench --defenses examples.median_filter:MedianFilter``
    """

    def __init__(self, *, k: int = 3) -> None:
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"k must be a positive odd integer, not {k}")
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x, [self.k // 2] * 4, mode="reflect")
        patches = F.unfold(padded, self.k)  # [N, C·k·k, H·W]
        return patches.view(n, c, self.k * self.k, h * w).median(dim=2).values.view(n, c, h, w)
