"""DefenseGAN (Samangouei, Kabkab & Chellappa, ICLR 2018): project the input onto a WGAN's range.

Reconstruction: z ∈ R^{B·R×z_dim} ~ N(0, 1/z_dim); L steps of gradient descent on the
per-image loss mean((G(z) − x)²) — SGD with momentum 0.7, learning rate 10 cut ×0.1 at 0.8·L;
per image keep the restart with the lowest loss; output G(z*). All B·R problems run in one
batched tensor; the generator is frozen. The update is written out (not ``torch.optim``) so
that, when the input itself requires grad, gradients can flow through the unrolled steps.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from bench.registry import register_defense
from defenses.base import Defense
from defenses.gan_nets import DefenseGANCritic, DefenseGANGenerator

# Training recipes: "paper" is the reference (200k generator iterations, width 64, lr 1e-4).
# "cpu" fits ~10 minutes on 2 CPU cores (~2.7 iterations/s at width 16); it was chosen by the
# search in docs/defensegan-recipe.md: width 16 at lr 5e-4 trains ~2.5× more iterations than
# width 32 in the same time and defends better; starting the descent from the training prior
# instead of the reference's N(0, 1/z_dim) about doubled accuracy under FGSM.
RECIPES = {"cpu": {"iterations": 1400, "width": 16, "gan_lr": 5e-4, "z_init": "prior"},
           "paper": {"iterations": 200_000, "width": 64, "gan_lr": 1e-4, "z_init": "paper"}}
# Where the descent starts. "paper": N(0, 1/z_dim), the reference's, i.e. ‖z‖ ≈ 1, far inside the
# shell ‖z‖ ≈ √z_dim where training put all its samples. "prior": N(0, 1), the training prior.
Z_INIT = {"paper": lambda d: 1 / math.sqrt(d), "prior": lambda d: 1.0}


@register_defense("defensegan")
class DefenseGAN(Defense):
    """DefenseGAN: reconstruct the input as G(z*) by latent gradient descent with random restarts.

    Args (keyword-only):
        L: 200 descent steps.  R: 10 random restarts.  lr: 10.0.  momentum: 0.7.
        optimizer: "sgd" (momentum, as the paper) | "adam".  lr_cut: 0.8 (×0.1 at lr_cut·L).
        seed: -1 = fresh randomness each call; ≥ 0 = every call starts from the same z.
        z_init: "" = the recipe's; "paper" = z ~ N(0, 1/z_dim) (the reference's); "prior" =
        z ~ N(0, 1), the distribution the generator was trained on.
        z_dim: 128.  width: generator/critic base channels (0 = the recipe's).
        recipe: "cpu" (1,400 iterations, width 16, lr 5e-4, z_init prior: ~9 min on 2 cores) |
        "paper" (200k iterations, width 64, lr 1e-4, z_init paper: the reference's; for GPUs).
        iterations, gan_lr: 0 = the recipe's; critic_iters: 5; gp_weight: 10.0;
        batch_size: 50 (WGAN-GP training, Adam betas (0.5, 0.9) as the reference).
        unroll: 0 = differentiate through all L steps in white-box attacks; N > 0 = a truncated
        N-step reconstruction when the input requires grad (recorded in the cell's parameters).
    Contract: NCHW float in [0,1] → same shape in [0,1] (a sigmoid generator output).
    Example: ``python -m bench --defenses none,defensegan --attack fgsm --eps 0.3 --limit 500``
    """

    trainable = True
    randomized = True
    fit_params = ("z_dim", "width", "recipe", "iterations", "critic_iters", "gp_weight", "gan_lr", "batch_size")
    test_params = {"iterations": 3, "L": 5, "R": 2, "width": 8, "batch_size": 16}

    def __init__(self, *, L: int = 200, R: int = 10, lr: float = 10.0, momentum: float = 0.7,
                 optimizer: str = "sgd", lr_cut: float = 0.8, seed: int = -1, z_dim: int = 128,
                 width: int = 0, recipe: str = "cpu", iterations: int = 0, critic_iters: int = 5,
                 gp_weight: float = 10.0, gan_lr: float = 0.0, batch_size: int = 50,
                 unroll: int = 0, z_init: str = "") -> None:
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, not {optimizer!r}")
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
        if z_init not in ("", *Z_INIT):
            raise ValueError(f"z_init must be one of {', '.join(Z_INIT)} (or empty: the recipe's), not {z_init!r}")
        for key in ("L", "R", "z_dim", "critic_iters", "batch_size"):
            if locals()[key] <= 0:
                raise ValueError(f"{key} must be > 0")
        if lr <= 0 or not 0 <= momentum < 1 or not 0 < lr_cut <= 1 or iterations < 0 or unroll < 0:
            raise ValueError("need lr > 0, 0 ≤ momentum < 1, 0 < lr_cut ≤ 1, iterations ≥ 0, unroll ≥ 0")
        self.unroll = unroll
        self.L, self.R, self.lr, self.momentum, self.optimizer = L, R, lr, momentum, optimizer
        if width < 0 or gan_lr < 0:
            raise ValueError("width and gan_lr must be ≥ 0 (0 = the recipe's)")
        r = RECIPES[recipe]
        self.lr_cut, self.fixed_seed, self.z_dim = lr_cut, seed, z_dim
        self.width, self.iterations, self.gan_lr = width or r["width"], iterations or r["iterations"], gan_lr or r["gan_lr"]
        self.critic_iters, self.gp_weight, self.batch_size = critic_iters, gp_weight, batch_size
        self.z_init = z_init or r["z_init"]
        self._gen = torch.Generator()
        self._gen.seed()

    def setup(self, spec: Any) -> None:
        super().setup(spec)
        self.hparams.update(width=self.width, iterations=self.iterations, gan_lr=self.gan_lr, z_init=self.z_init)
        self.G = DefenseGANGenerator(tuple(spec.shape), self.z_dim, self.width)

    def seed(self, seed: int) -> None:
        self._gen.manual_seed(seed)

    def __getstate__(self) -> dict:
        # torch.Generator does not pickle; ship its state (executors send defenses to workers).
        state = dict(self.__dict__)
        state["_gen"] = self._gen.get_state()
        return state

    def __setstate__(self, state: dict) -> None:
        gen_state = state.pop("_gen")
        self.__dict__.update(state)
        self._gen = torch.Generator()
        self._gen.set_state(gen_state)

    # ---- reconstruction ---------------------------------------------------------------------
    def initial_z(self, batch: int) -> torch.Tensor:
        """[B·R, z_dim], image-major, so image i gets the same restarts in any batch."""
        if self.fixed_seed >= 0:
            self._gen.manual_seed(self.fixed_seed)
        return torch.randn(batch * self.R, self.z_dim, generator=self._gen) * Z_INIT[self.z_init](self.z_dim)

    def reconstruct(self, x: torch.Tensor, z: torch.Tensor | None = None, steps: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (G(z*) [B, C, H, W], best per-image loss [B])."""
        differentiable = x.requires_grad and torch.is_grad_enabled()
        B, L = x.shape[0], steps or (self.unroll if differentiable and self.unroll else self.L)
        z = (self.initial_z(B) if z is None else z).to(x.device)
        target = x.repeat_interleave(self.R, 0)
        with torch.enable_grad():
            z = z.clone().requires_grad_(True)
            v = torch.zeros_like(z)
            m2 = torch.zeros_like(z)
            for step in range(L):
                lr = self.lr * (0.1 if step >= self.lr_cut * L else 1.0)
                loss = ((self.G(z) - target) ** 2).flatten(1).mean(1)
                g, = torch.autograd.grad(loss.sum(), z, create_graph=differentiable)
                if self.optimizer == "sgd":
                    v = self.momentum * v + g
                    z = z - lr * v
                else:  # Adam, bias-corrected
                    v = 0.9 * v + 0.1 * g
                    m2 = 0.999 * m2 + 0.001 * g * g
                    z = z - lr * (v / (1 - 0.9 ** (step + 1))) / ((m2 / (1 - 0.999 ** (step + 1))).sqrt() + 1e-8)
                if not differentiable:
                    z = z.detach().requires_grad_(True)
                    v = v.detach()
                    m2 = m2.detach()
        with torch.set_grad_enabled(differentiable):
            out = self.G(z)
            loss = ((out - target) ** 2).flatten(1).mean(1).view(B, self.R)
            best = loss.argmin(1)
            picked = out.view(B, self.R, *x.shape[1:])[torch.arange(B, device=x.device), best]
        return picked, loss.gather(1, best[:, None]).squeeze(1).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)[0]

    # ---- WGAN-GP training -------------------------------------------------------------------
    def fit(self, train: Any, classifier: nn.Module, *, device: torch.device, seed: int,
            eps: float) -> dict[str, Any]:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        D = DefenseGANCritic(tuple(self.spec.shape), self.width).to(device)
        opt_g = torch.optim.Adam(self.G.parameters(), lr=self.gan_lr, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(D.parameters(), lr=self.gan_lr, betas=(0.5, 0.9))
        x_all, n, t0 = train.x, len(train.x), time.perf_counter()
        self.G.train()
        for p in self.G.parameters():
            p.requires_grad_(True)
        bar = tqdm(range(self.iterations), desc="defensegan WGAN-GP", leave=False, disable=None)
        for it in bar:
            for _ in range(self.critic_iters):
                real = x_all[torch.randint(n, (self.batch_size,), generator=g)].to(device)
                with torch.no_grad():
                    fake = self.G(torch.randn(self.batch_size, self.z_dim, device=device))
                a = torch.rand(self.batch_size, 1, 1, 1, device=device)
                mix = (a * real + (1 - a) * fake).requires_grad_(True)
                grad, = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
                gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
                loss_d = D(fake).mean() - D(real).mean() + self.gp_weight * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            loss_g = -D(self.G(torch.randn(self.batch_size, self.z_dim, device=device))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if it % 50 == 0:
                bar.set_postfix(loss_d=f"{loss_d.item():.3f}", loss_g=f"{loss_g.item():.3f}")
        self.G.eval()
        for p in self.G.parameters():
            p.requires_grad_(False)
        return {"train_seconds": time.perf_counter() - t0, "train_iterations": self.iterations,
                "last_critic_loss": loss_d.item()}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state, strict, assign)
        for p in self.G.parameters():
            p.requires_grad_(False)
        return out
