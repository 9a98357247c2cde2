"""Median smoothing (feature squeezing, Xu, Evans & Qi, NDSS 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.registry import register_defense
from defenses.base import Defense


@register_defense("median")
class MedianFilter(Defense):
    """Median filter over k×k windows, per channel (feature squeezing's local smoothing).

    Args (keyword-only): k: int = 2. Xu et al. use a 2×2 window on MNIST and CIFAR-10 (larger
    windows blur the strokes away). The output equals ``scipy.ndimage.median_filter(x, size=k,
    mode="nearest")`` per channel: edges replicated, and an even window covers the pixel and
    its upper/left neighbours and takes the upper of its two middle values.

    Contract: NCHW float in [0,1] → same shape in [0,1] (each output is one of its inputs); a new
    tensor, the input is never written. Differentiable: the gradient flows to the selected pixel
    of each window (a subgradient), so the white-box threat attacks it end to end.
    Example: ``python -m bench --defenses none,median --attack fgsm,pgd --eps 0.3 --threat gray,white``
    """

    def __init__(self, *, k: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be a positive integer, not {k}")
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.k
        before, after = k // 2, (k - 1) // 2  # scipy's anchor: for k = 2, the pixel and its left/upper neighbour
        padded = F.pad(x, [before, after, before, after], mode="replicate")
        patches = F.unfold(padded, k).view(n, c, k * k, h * w)
        # The (k²//2)-th smallest (0-based) is the median for odd k and scipy's choice for even k.
        return patches.kthvalue(k * k // 2 + 1, dim=2).values.view(n, c, h, w)
