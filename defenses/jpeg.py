"""JPEG compression as an input transformation (Das et al. 2017; Guo et al. 2018)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from bench.core.registry import register_defense
from defenses.base import Defense


@register_defense("jpeg")
class JPEG(Defense):
    """JPEG compression: encode and decode every image with a real JPEG codec (Pillow's libjpeg).

    Args (keyword-only): quality: int = 75 (1 to 100). 75 is Guo et al.'s setting (ICLR 2018)
    and the libjpeg/Pillow default, so the number compares with the literature; lower
    qualities (Das et al. sweep 20–80) remove more perturbation and more of the image.
    Pillow, not ``torchvision.io.encode_jpeg``: torchvision deprecated its codecs in 0.29; the
    two give identical images here (tests/test_baselines.py compares them).

    Contract: NCHW float in [0,1] with 1 or 3 channels → same shape, dtype and device in [0,1]
    (pixels are quantised to 8 bits first, as a JPEG file stores them); a new tensor, the
    input is never written. The codec runs on the CPU, image by image, outside autograd:
    ``differentiable = False``, so the white-box threat attacks it through BPDA
    (``threat_effective = "bpda"`` in the record).
    Example: ``python -m bench --defenses none,jpeg --attack fgsm,pgd --eps 0.3 --threat gray,white``
    """

    differentiable = False

    def __init__(self, *, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, not {quality}")
        self.quality = quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
        pixels = (x.detach() * 255).round().clamp(0, 255).to("cpu", torch.uint8).numpy()
        out = np.empty_like(pixels)
        for i, img in enumerate(pixels):
            buf = io.BytesIO()  # Pillow wants H×W (gray) or H×W×3
            Image.fromarray(img[0] if len(img) == 1 else img.transpose(1, 2, 0)).save(
                buf, format="JPEG", quality=self.quality
            )
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            out[i] = dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1)
        return torch.from_numpy(out).to(x.device, x.dtype) / 255
