"""Defenses and attacks planted by the trust and contract tests (named as external plugins, module:Class)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.base import AttackPlugin
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


# --- contract breakers (tests/test_contract.py): a new user's four first plugins, and attacks ---


class NaNs(Defense):
    """Returns NaN everywhere. Example: --defenses trust_plugins:NaNs"""

    def forward(self, x):
        return x * float("nan")


class Crop(Defense):
    """Returns a 14×14 centre crop of a 28×28 image. Example: --defenses trust_plugins:Crop"""

    def forward(self, x):
        return x[:, :, 7:21, 7:21]


class Stretch(Defense):
    """Returns 5x − 2: far outside [0,1]. Example: --defenses trust_plugins:Stretch"""

    def forward(self, x):
        return 5 * x - 2


class Raises(Defense):
    """Raises inside forward. Example: --defenses trust_plugins:Raises"""

    def forward(self, x):
        raise RuntimeError("boom inside the plugin")


class LateNaN(Defense):
    """Fine on the first call (the harness's first check), NaN from the third on: caught on a scored
    batch. Example: --defenses trust_plugins:LateNaN"""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * float("nan") if self.calls > 2 else x.clone()


class LateRaise(Defense):
    """Fine on the first two calls, raises from the third on. Example: --defenses trust_plugins:LateRaise"""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 2:
            raise ValueError("boom on a later batch")
        return x.clone()


class NaNAttack(AttackPlugin):
    """Returns NaN images. Example: --attack trust_plugins:NaNAttack"""

    def perturb(self, model, x, y, eps, spec):
        return x * float("nan")


class CropAttack(AttackPlugin):
    """Returns a crop. Example: --attack trust_plugins:CropAttack"""

    def perturb(self, model, x, y, eps, spec):
        return x[:, :, 7:21, 7:21]


class RaisingAttack(AttackPlugin):
    """Raises. Example: --attack trust_plugins:RaisingAttack"""

    def perturb(self, model, x, y, eps, spec):
        raise RuntimeError("attack boom")


class L2TooFar(AttackPlugin):
    """An L2 attack that moves every image by 2·eps in L2 (but little in L∞).
    Example: --attack trust_plugins:L2TooFar"""

    norm = "L2"

    def perturb(self, model, x, y, eps, spec):
        step = torch.full_like(x, 1.0)
        step = step / step.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return x + 2 * eps * step * torch.where(x > 0.5, -1.0, 1.0)
