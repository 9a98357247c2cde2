"""counterGAN: a generator looks at an (attacked) image and emits a cancelling noise.

Defended image = clamp(x + noise(x), 0, 1), one generator forward pass.

Faithful to the original (github: Rive-001/counterGAN) where it is not a defect:
  * generator input ``conditioning="seed"``: a 100-d seed from the image — threshold at 0.5,
    flatten, nearest-neighbour resize to 100;
  * linear G 100 → 256 → 512 → 1024 → C·H·W (BN, ReLU), sigmoid out; linear D
    C·H·W → 1024 → 512 → 128 → 1 (BN, LeakyReLU 0.2, Dropout 0.3); conv G
    ConvT(100→64, k16) → ConvT(64→C, k17) for 32×32; conv D two 11×11 stride-2 convs;
  * G loss = GAN term + 10·CE(classifier(defended), y) + MSE(defended, x_clean);
    D's real input gets N(0,1) instance noise; D stepped every 10 iterations;
    AdamW(lr 1e-3, betas (0.5, 0.999), wd 4e-3), StepLR(γ 0.93); WGAN-GP λ = 10.
The training budget is counted in iterations, not epochs (the original counted epochs), so a
60,000-image dataset costs what the 4,000 offline digits cost; the epochs it amounts to are printed.
Defects of the original that are *not* copied:
  * clean and adversarial batches are paired here (the original shuffled them independently);
  * the classifier stays frozen in eval mode (the original left it in train mode: BN drift);
  * ``noise="tanh"`` offers a signed noise (the sigmoid makes it non-negative, so it can
    only brighten pixels); the published variants keep the sigmoid.
The WGAN-GP critic has no batch norm (a per-sample gradient penalty is undefined with it).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.progress import progress
from bench.core.registry import ATTACKS, DEFENSES, build
from bench.core.threats import Threat, WhiteBox
from defenses.base import Defense
from defenses.gan_nets import (
    ConvDiscriminator,
    ConvImageGenerator,
    ConvSeedGenerator,
    LinearDiscriminator,
    LinearGenerator,
)

CHOICES = {
    "arch": ("linear", "conv"),
    "train_threat": ("gray", "white"),
    "gan_loss": ("bce", "mse", "wgangp", "none"),
    "discriminator": ("auto", "linear", "conv"),
    "conditioning": ("seed", "image"),
    "noise": ("sigmoid", "tanh"),
}


def image_seed(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The original's generator input: (x > 0.5), flattened, nearest-resized to ``dim``."""
    flat = (x > 0.5).float().flatten(1).unsqueeze(1)
    return F.interpolate(flat, size=dim, mode="nearest").squeeze(1)


class CounterGAN(Defense):
    """counterGAN, configurable (see the registered variants for the published forms).

    Args (keyword-only, defaults as published):
        arch: "linear" | "conv" — generator/discriminator family.
        gan_loss: "bce" | "mse" (least squares) | "wgangp" | "none" (no discriminator).
        conditioning: "seed" (published 100-d seed) | "image" (G sees the attacked image).
        noise: "sigmoid" (published, non-negative) | "tanh" (signed, ±noise_scale).
        noise_scale: tanh noise amplitude; 0 = ± the training eps.
        seed_dim: 100.  ce_weight: 10.0.  mse_weight: 1.0.  gan_weight: 1.0.  gp_weight: 10.0.
        d_every: discriminator stepped every N iterations (10).  instance_noise: std of the
        noise added to D's real input (1.0).
        iterations: 186 (= 6 epochs of the 4,000 offline MNIST digits at batch 128).
        batch_size: 128.  lr: 1e-3.  weight_decay: 4e-3.  lr_step: 93 iterations (3 such epochs).
        lr_gamma: 0.93.
        train_attack: "fgsm" — the attack (a registered name) crafted on the frozen classifier
        during training; its effective parameters are recorded in ``hparams``.
        train_eps: 0 = the dataset's default eps (0.3 for MNIST-like data); each batch is
        attacked at eps ~ U(eps_low·train_eps, train_eps] (eps_low 0.0). Neither depends on
        the grid being evaluated: the same flags always train the same defense.
        clean_fraction: share of each batch left clean (0.0, as published).
        width: channels of the image-conditioned conv generator (32).
        discriminator: "auto" (same family as arch) | "linear" | "conv".
    Contract: NCHW float in [0,1] → same shape in [0,1].
    Example: ``python -m bench --defenses none,countergan-linear-bce,countergan --attack fgsm``
    """

    trainable = True
    training_only = ("D.",)  # the discriminator shapes training only; the zoo ships the generator
    test_params: ClassVar[dict[str, Any]] = {"iterations": 4, "batch_size": 64}

    def __init__(
        self,
        *,
        arch: str = "linear",
        gan_loss: str = "bce",
        conditioning: str = "seed",
        noise: str = "sigmoid",
        noise_scale: float = 1.0,
        seed_dim: int = 100,
        ce_weight: float = 10.0,
        mse_weight: float = 1.0,
        gan_weight: float = 1.0,
        gp_weight: float = 10.0,
        d_every: int = 10,
        instance_noise: float = 1.0,
        iterations: int = 186,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 4e-3,
        lr_step: int = 93,
        lr_gamma: float = 0.93,
        train_attack: str = "fgsm",
        train_steps: int = 0,
        train_threat: str = "gray",
        eps_ramp: int = 0,
        train_eps: float = 0.0,
        clean_fraction: float = 0.0,
        eps_low: float = 0.0,
        width: int = 32,
        discriminator: str = "auto",
    ) -> None:
        super().__init__()
        for key, allowed in CHOICES.items():
            if locals()[key] not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {locals()[key]!r}")
        for key in ("seed_dim", "d_every", "iterations", "batch_size", "lr_step", "width"):
            if locals()[key] <= 0:
                raise ValueError(f"{key} must be > 0")
        if not 0 <= clean_fraction < 1 or not 0 <= eps_low <= 1:
            raise ValueError("clean_fraction must be in [0, 1) and eps_low in [0, 1]")
        if train_steps < 0 or eps_ramp < 0:
            raise ValueError("train_steps and eps_ramp must be ≥ 0")
        if noise_scale < 0 or train_eps < 0 or lr <= 0:
            raise ValueError("noise_scale and train_eps must be ≥ 0 and lr > 0")
        self.arch, self.gan_loss, self.conditioning, self.noise_kind = arch, gan_loss, conditioning, noise
        self.noise_scale, self.seed_dim = noise_scale, seed_dim
        self.ce_weight, self.mse_weight, self.gan_weight, self.gp_weight = ce_weight, mse_weight, gan_weight, gp_weight
        self.d_every, self.instance_noise = d_every, instance_noise
        self.iterations, self.batch_size, self.lr, self.weight_decay = iterations, batch_size, lr, weight_decay
        self.lr_step, self.lr_gamma, self.train_eps, self.clean_fraction = lr_step, lr_gamma, train_eps, clean_fraction
        self.train_attack_name, self.train_steps = train_attack, train_steps
        self.train_threat, self.eps_ramp = train_threat, eps_ramp
        self.eps_low, self.width, self.discriminator = eps_low, width, discriminator
        self.register_buffer("scale", torch.tensor(float(noise_scale)))

    # ---- construction -------------------------------------------------------------------
    def setup(self, spec: Any) -> None:
        super().setup(spec)
        shape = tuple(spec.shape)
        if self.conditioning == "image" and self.arch == "conv":
            self.G = ConvImageGenerator(shape, self.width)
        elif self.arch == "conv":
            self.G = ConvSeedGenerator(self.seed_dim, shape)
        else:
            in_dim = self.seed_dim if self.conditioning == "seed" else int(torch.tensor(shape).prod())
            self.G = LinearGenerator(in_dim, shape)
        if self.gan_loss != "none":
            family = self.arch if self.discriminator == "auto" else self.discriminator
            D = ConvDiscriminator if family == "conv" else LinearDiscriminator
            wgan = self.gan_loss == "wgangp"
            self.D = D(shape, sigmoid=self.gan_loss == "bce" or self.gan_loss == "mse", batch_norm=not wgan)

        # Resolve the training attack and eps now, so the cache key and every record name them.
        self.hparams = getattr(self, "hparams", {})
        self.train_eps = self.train_eps or spec.default_eps
        # An unknown name lists what exists; steps on an attack without them is a clear error.
        self.train_attack = build(
            ATTACKS, self.train_attack_name, {"steps": self.train_steps} if self.train_steps else None
        )
        self.hparams.update(
            train_attack=self.train_attack_name,
            train_eps=self.train_eps,
            train_attack_params=self.train_attack.effective_params(self.train_eps, spec),
        )

    # ---- the defense --------------------------------------------------------------------
    def noise(self, x: torch.Tensor) -> torch.Tensor:
        z = image_seed(x, self.seed_dim) if self.conditioning == "seed" else x
        raw = self.G(z)
        if self.noise_kind == "sigmoid":
            return torch.sigmoid(raw)
        return self.scale * torch.tanh(raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + self.noise(x), 0.0, 1.0)

    # ---- training -----------------------------------------------------------------------
    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real = real + self.instance_noise * torch.randn_like(real)
        d_real, d_fake = self.D(real), self.D(fake)
        if self.gan_loss == "wgangp":
            a = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
            mix = (a * real + (1 - a) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(mix).sum(), mix, create_graph=True)
            gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            return d_fake.mean() - d_real.mean() + self.gp_weight * gp
        crit = F.binary_cross_entropy if self.gan_loss == "bce" else F.mse_loss
        return crit(d_real, torch.ones_like(d_real)) + crit(d_fake, torch.zeros_like(d_fake))

    def _g_gan_loss(self, fake: torch.Tensor) -> torch.Tensor:
        d_fake = self.D(fake)
        if self.gan_loss == "wgangp":
            return -d_fake.mean()
        crit = F.binary_cross_entropy if self.gan_loss == "bce" else F.mse_loss
        return crit(d_fake, torch.ones_like(d_fake))

    def generator_loss(
        self, defended: torch.Tensor, x_clean: torch.Tensor, y: torch.Tensor, classifier: nn.Module
    ) -> torch.Tensor:
        """GAN term + ce_weight·CE(classifier(defended), y) + mse_weight·MSE(defended, x_clean)."""
        loss = self.ce_weight * F.cross_entropy(classifier(defended), y) + self.mse_weight * F.mse_loss(
            defended, x_clean
        )
        if self.gan_loss != "none":
            loss = loss + self.gan_weight * self._g_gan_loss(defended)
        return loss

    def fit(self, train: Any, classifier: nn.Module, *, device: torch.device, seed: int, eps: float) -> dict[str, Any]:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        train_eps, attack = self.train_eps, self.train_attack
        if self.noise_scale == 0:
            self.scale.fill_(train_eps)
        classifier.eval()
        # Adaptive training crafts through the defense being trained, as a white-box attacker would.
        # In eval mode: torchattacks restores the mode it finds, and a wrapper in train mode would
        # switch the classifier's dropout on after every attack.
        target = WhiteBox(classifier, self).eval() if Threat(self.train_threat).is_white else classifier
        opt_g = torch.optim.AdamW(self.G.parameters(), lr=self.lr, betas=(0.5, 0.999), weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt_g, self.lr_step, self.lr_gamma)
        has_d = self.gan_loss != "none"
        if has_d:
            opt_d = torch.optim.AdamW(
                self.D.parameters(), lr=self.lr, betas=(0.5, 0.999), weight_decay=self.weight_decay
            )
        x_all, y_all = train.x, train.y
        n, t0 = len(y_all), time.perf_counter()
        first = last = None
        bar = progress(range(self.iterations), f"{self.registered_name} training", total=self.iterations)
        for it, idx in zip(bar, batches(n, min(self.batch_size, n), g)):
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            n_adv = len(y) - int(self.clean_fraction * len(y))
            # eps ~ U(eps_low·train_eps, train_eps], ramped up over the first eps_ramp iterations
            ramp = min(1.0, (it + 1) / self.eps_ramp) if self.eps_ramp else 1.0
            e = float(ramp * train_eps * (1 - (1 - self.eps_low) * torch.rand(1, generator=g)))
            self.eval()  # crafting must not move BN statistics
            x_in = torch.cat([attack.perturb(target, x[:n_adv], y[:n_adv], e, self.spec), x[n_adv:]])
            self.train()
            defended = self(x_in)
            if has_d and it % self.d_every == 0:
                loss_d = self._d_loss(x, defended.detach())
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            loss_g = self.generator_loss(defended, x, y, classifier)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sched.step()
            first = loss_g.item() if first is None else first
            last = loss_g.item()
            bar.set_postfix(loss_g=f"{last:.3f}")
        self.eval()
        return {
            "train_seconds": time.perf_counter() - t0,
            "train_iterations": self.iterations,
            "train_epochs": self.iterations * self.batch_size / n,
            "first_g_loss": first,
            "last_g_loss": last,
        }

    def train_plan(self, n_train: int) -> str:
        return (
            f"{self.iterations} iterations of {self.batch_size} images "
            f"(≈ {self.iterations * self.batch_size / n_train:.2f} epochs)"
        )


def batches(n: int, size: int, g: torch.Generator):
    """Endless shuffled mini-batches of indices: full batches only, reshuffled every epoch."""
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - size + 1, size):
            yield perm[i : i + size]


# Every registered counterGAN is a row of this table: name → (the class name its fit keys and
# shipped weights were made under, its defaults over ``CounterGAN``'s, its description).
# ``python -m bench list`` shows each one's parameters; bench.toml can add more rows as tables
# (``[defenses.NAME] plugin = "countergan" …``).
_PUBLISHED = "counterGAN as published"
_CONV_ITERS = 155  # the conv variants: 5 offline epochs, ≤ 2 min on 2 CPU cores
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "countergan-linear-bce": (
        "CounterGANLinearBCE",
        {"arch": "linear", "gan_loss": "bce"},
        f"{_PUBLISHED}, fully connected G/D with the BCE GAN loss (seed input, sigmoid noise).",
    ),
    "countergan-linear-mse": (
        "CounterGANLinearMSE",
        {"arch": "linear", "gan_loss": "mse"},
        f"{_PUBLISHED}, fully connected G/D with the least-squares (MSE) GAN loss.",
    ),
    "countergan-conv-bce": (
        "CounterGANConvBCE",
        {"arch": "conv", "gan_loss": "bce", "iterations": _CONV_ITERS},
        f"{_PUBLISHED}, transposed-conv G / conv D with the BCE GAN loss.",
    ),
    "countergan-conv-mse": (
        "CounterGANConvMSE",
        {"arch": "conv", "gan_loss": "mse", "iterations": _CONV_ITERS},
        f"{_PUBLISHED}, transposed-conv G / conv D with the least-squares (MSE) GAN loss.",
    ),
    "countergan-linear-wgangp": (
        "CounterGANLinearWGANGP",
        {"arch": "linear", "gan_loss": "wgangp"},
        f"{_PUBLISHED}, fully connected G and a critic without sigmoid, WGAN-GP (λ = 10).",
    ),
    "countergan": (
        "CounterGANPreset",
        {
            "arch": "conv",
            "conditioning": "image",
            "noise": "tanh",
            "gan_loss": "mse",
            "discriminator": "linear",
            "width": 16,
            "gan_weight": 0.1,
            "instance_noise": 0.0,
            "d_every": 2,
            "clean_fraction": 0.4,
            "eps_low": 0.5,
        },
        "counterGAN, our working preset: G sees the attacked image and emits a signed noise.\n\n"
        "Differences from the published form, each measured (docs/guides/defenses.md): "
        "image-conditioned conv encoder–decoder G (width 16), tanh noise (±1), a fully connected "
        "least-squares D (weight 0.1, every 2nd step, no instance noise), paired batches with a 40% "
        "clean share, training eps ~ U(0.5·eps, eps].",
    ),
    "countergan-adaptive": (
        "CounterGANAdaptive",
        {
            "arch": "conv",
            "conditioning": "image",
            "noise": "tanh",
            "gan_loss": "none",
            "width": 32,
            "clean_fraction": 0.5,
            "eps_low": 0.5,
            "train_attack": "pgd",
            "train_steps": 5,
            "train_threat": "white",
            "eps_ramp": 200,
            "iterations": 800,
            "lr_step": 400,
        },
        "counterGAN trained through itself: each batch is attacked white-box, by a 5-step PGD "
        "through classifier ∘ (x + G(x)), at an eps ramped up over the first 200 iterations — "
        "the purifier learns against the attack that breaks the gray-box-trained preset.\n\n"
        "Same generator as ``countergan`` at width 32 (image-conditioned, tanh noise), no GAN "
        "term, half of each batch clean, 800 iterations. A longer recipe: "
        "``[defenses.countergan-adaptive] iterations = 3000``.",
    ),
}
for _name, (_class, _preset, _doc) in VARIANTS.items():
    DEFENSES.variant(
        _name,
        CounterGAN,
        preset=_preset,
        class_name=_class,
        doc=f"{_doc}\n\nExample: ``python -m bench --defenses none,{_name} --attack fgsm --eps 0.3``",
    )
