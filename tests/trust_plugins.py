"""Defenses planted by the trust tests (named as external plugins, module:Class)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from defenses.base import Defense


class InPlace(Defense):
    """Breaks the contract: clamps its input in place and returns it. Example: --defenses trust_plugins:InPlace"""

    def forward(self, x):
        return x.clamp_(0.0, 0.1)


class Blur(Defense):
    """A 3×3 box blur: deterministic, differentiable, not the identity. Example: --defenses trust_plugins:Blur"""

    def forward(self, x):
        return F.avg_pool2d(F.pad(x, [1] * 4, mode="replicate"), 3, stride=1)


class Jitter(Defense):
    """Adds seeded uniform noise of amplitude ``sigma``: a cheap randomized defense.
    Example: --defenses trust_plugins:Jitter"""

    randomized = True

    def __init__(self, *, sigma: float = 0.2) -> None:
        super().__init__()
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(0)

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def forward(self, x):
        noise = (torch.rand(x.shape, generator=self.gen) * 2 - 1).to(x.device)
        return (x + self.sigma * noise).clamp(0, 1)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["gen"] = self.gen.get_state()
        return state

    def __setstate__(self, state):
        gen = state.pop("gen")
        self.__dict__.update(state)
        self.gen = torch.Generator()
        self.gen.set_state(gen)


class _Flip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return -grad


class GradientFlip(Defense):
    """A planted gradient-masking defense: the identity forward, its gradient negated backward, so
    every gradient attack climbs the wrong way while a gradient-free one is not fooled.
    Example: --defenses trust_plugins:GradientFlip"""

    def forward(self, x):
        return _Flip.apply(x)


class CoinBlank(Defense):
    """A toy randomised defense: each image is kept or blanked (all zeros) by a seeded coin.
    Example: --defenses trust_plugins:CoinBlank"""

    randomized = True

    def __init__(self) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def forward(self, x):
        keep = (torch.rand(len(x), generator=self.gen) < 0.5).to(x.device)
        return torch.where(keep[:, None, None, None], x, torch.zeros_like(x))
