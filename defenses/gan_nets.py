"""Generator and discriminator networks shared by the GAN defenses.

Generators return *pre-activation* maps shaped like the image; the defense applies the
output non-linearity, so one network serves the sigmoid and the tanh forms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _numel(shape) -> int:
    return int(math.prod(shape))


class LinearGenerator(nn.Module):
    """counterGAN's fully connected G: in → 256 → 512 → 1024 → C·H·W, BN + ReLU between."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], hidden=(256, 512, 1024)) -> None:
        super().__init__()
        layers, d = [], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(*layers, nn.Linear(d, _numel(shape)))
        self.shape = tuple(shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)).view(-1, *self.shape)


class ConvSeedGenerator(nn.Module):
    """counterGAN's conv G: seed (B, in_dim) as 1×1 → ConvT k1 → 64 → ConvT k2 → C, BN after each.

    For 32×32 the kernels are the published 16 and 17; other sizes use H/2 and H/2 + 1 (W/2 and
    W/2 + 1 across: any H×W).
    """

    def __init__(self, in_dim: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = shape
        k1 = (h // 2, w // 2)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_dim, 64, k1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, c, (h - k1[0] + 1, w - k1[1] + 1)),
            nn.BatchNorm2d(c),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)[:, :, None, None])


class ConvImageGenerator(nn.Module):
    """An image-to-noise encoder–decoder (our fix: G sees the whole attacked image).

    conv 3×3 (width) → conv 4×4/2 (2·width) → conv 3×3 → convT 4×4/2 (width), skip from the
    first layer, → conv 3×3 to C. Any H, W: an odd side's upsampled map is one pixel short and is
    padded by replication (even sides, MNIST's and CIFAR's, never are).
    """

    def __init__(self, shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        c = shape[0]
        act = lambda: nn.LeakyReLU(0.2)
        self.inp = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), act())
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            act(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            act(),
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), act()
        )
        self.out = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), act(), nn.Conv2d(width, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inp(x)
        u = self.up(self.down(a))
        dh, dw = a.shape[-2] - u.shape[-2], a.shape[-1] - u.shape[-1]
        if dh or dw:
            u = F.pad(u, (0, dw, 0, dh), mode="replicate")
        return self.out(torch.cat([a, u], 1))


class LinearDiscriminator(nn.Module):
    """counterGAN's fully connected D: C·H·W → 1024 → 512 → 128 → 1, BN, LeakyReLU(0.2), Dropout(0.3)."""

    def __init__(self, shape: tuple[int, int, int], sigmoid: bool = True, batch_norm: bool = True) -> None:
        super().__init__()
        layers, d = [], _numel(shape)
        for h in (1024, 512, 128):
            layers += [
                nn.Linear(d, h),
                *([nn.BatchNorm1d(h)] if batch_norm else []),
                nn.LeakyReLU(0.2),
                nn.Dropout(0.3),
            ]
            d = h
        layers.append(nn.Linear(d, 1))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class ConvDiscriminator(nn.Module):
    """counterGAN's conv D: Conv(C→64, 11, /2) BN LReLU → Conv(64→128, 11, /2) BN LReLU → Linear → 1.

    Unpadded as published; images smaller than 32×32 are zero-padded to 32×32 first (28×28
    would otherwise shrink below the kernel), so MNIST gets the published 32 → 11 → 1 geometry.
    """

    def __init__(self, shape: tuple[int, int, int], sigmoid: bool = True, batch_norm: bool = True) -> None:
        super().__init__()
        c, h, w = shape
        self.pad = [
            max(0, 32 - w) // 2,
            max(0, 32 - w) - max(0, 32 - w) // 2,
            max(0, 32 - h) // 2,
            max(0, 32 - h) - max(0, 32 - h) // 2,
        ]
        norm = (lambda n: nn.BatchNorm2d(n)) if batch_norm else (lambda n: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(c, 64, 11, stride=2),
            norm(64),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 11, stride=2),
            norm(128),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(2, c, max(h, 32), max(w, 32))).shape[1]
        self.head = nn.Sequential(nn.Linear(n, 1), *([nn.Sigmoid()] if sigmoid else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = nn.functional.pad(x, self.pad)
        return self.head(self.features(x)).squeeze(1)


class DefenseGANGenerator(nn.Module):
    """DefenseGAN's generator. 28×28: Linear(z → 4·4·256) ReLU → deconv 5×5 → 128 (crop to 7×7)
    ReLU → deconv → 64 ReLU → deconv → C, sigmoid; no batch norm (as the reference).
    32×32 (DCGAN style): 4 → 8 → 16 → 32 with the same layers, no crop. Any other H×W: from
    ⌈H/8⌉×⌈W/8⌉ up three times, the output cropped to H×W.
    """

    def __init__(self, shape: tuple[int, int, int], z_dim: int = 128, width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        self.crop = 7 if (h, w) == (28, 28) else None
        self.start = (4, 4) if (h, w) in ((28, 28), (32, 32)) else (math.ceil(h / 8), math.ceil(w / 8))
        up = lambda i, o: nn.ConvTranspose2d(i, o, 5, stride=2, padding=2, output_padding=1)
        self.fc = nn.Sequential(nn.Linear(z_dim, self.start[0] * self.start[1] * 4 * width), nn.ReLU())
        self.up1 = nn.Sequential(up(4 * width, 2 * width), nn.ReLU())
        self.up2 = nn.Sequential(up(2 * width, width), nn.ReLU(), up(width, c), nn.Sigmoid())
        self.width, self.shape = width, tuple(shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up1(self.fc(z).view(-1, 4 * self.width, *self.start))
        if self.crop:
            h = h[:, :, : self.crop, : self.crop]
        return self.up2(h)[:, :, : self.shape[1], : self.shape[2]]


class DefenseGANCritic(nn.Module):
    """DefenseGAN's WGAN-GP critic: three 5×5 stride-2 convs (64, 128, 256) + LeakyReLU, linear out."""

    def __init__(self, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c = shape[0]
        conv = lambda i, o: nn.Conv2d(i, o, 5, stride=2, padding=2)
        self.features = nn.Sequential(
            conv(c, width),
            nn.LeakyReLU(0.2),
            conv(width, 2 * width),
            nn.LeakyReLU(0.2),
            conv(2 * width, 4 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, *shape)).shape[1]
        self.head = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)
