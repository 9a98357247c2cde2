"""DefenseGAN (Samangouei, Kabkab & Chellappa, ICLR 2018): project the input onto a WGAN's range.

Reconstruction (the default is the reference code's, kabkabm/defensegan): z ∈ R^{B·R×z_dim} ~
N(0, 1/z_dim); L = 200 steps of gradient descent on the per-image loss mean((G(z) − x)²) — SGD
with momentum 0.7, learning rate 10; per image keep the restart (R = 10) with the lowest loss;
output G(z*). The learning rate stays 10 throughout: the reference ties its ×0.1 step to a
counter (``rec_iter_const``) that nothing increments, so the step never fires there; ``lr_cut =
0.8`` restores the step the paper's text describes (a named variant in ``bench.toml``).
All B·R problems run in one batched tensor; the generator is frozen. The update is written out
(not ``torch.optim``) so that, when the input itself requires grad, gradients can flow through
the unrolled steps.

The generator comes from the weights zoo (``bench/zoo/generator-<dataset>-defensegan-<tag>``, the
zoo's manifest and checks: identity key and sha256, see ``load_pretrained``) when a shipped one
fits the data, architecture and training settings, else it is trained on demand by
``WGANGPTrainer`` (resumable; ``python -m tools.defensegan_curve`` trains long runs and ships one).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.core import identity, shipped
from bench.core.progress import progress
from bench.core.registry import register_defense
from defenses.base import Defense
from defenses.gan_nets import DefenseGANCritic, DefenseGANGenerator

# Training recipes for a generator trained on demand (no shipped one fits). "paper" is the
# reference (200k generator iterations, width 64, lr 1e-4). "cpu" fits ~10 minutes on 2 CPU
# cores (~2.7 iterations/s at width 16), chosen by the search in docs/defensegan-recipe.md.
RECIPES = {
    "cpu": {"iterations": 1400, "width": 16, "gan_lr": 5e-4},
    "paper": {"iterations": 200_000, "width": 64, "gan_lr": 1e-4},
}
# Where the descent starts. "paper": N(0, 1/z_dim), the reference's, i.e. ‖z‖ ≈ 1, far inside the
# shell ‖z‖ ≈ √z_dim where training put all its samples. "prior": N(0, 1), the training prior.
Z_INIT = {"paper": lambda d: 1 / math.sqrt(d), "prior": lambda d: 1.0}


@register_defense("defensegan")
class DefenseGAN(Defense):
    """DefenseGAN: reconstruct the input as G(z*) by latent gradient descent with random restarts.

    Args (keyword-only):
        L: 200 descent steps.  R: 10 random restarts.  lr: 10.0.  momentum: 0.7.
        optimizer: "sgd" (momentum, as the paper) | "adam".
        lr_cut: 1.0 = no step (the reference code's effective behaviour); 0.8 = ×0.1 at 0.8·L.
        seed: -1 = fresh randomness each call; ≥ 0 = every call starts from the same z.
        z_init: "paper" = z ~ N(0, 1/z_dim) (the reference's); "prior" = z ~ N(0, 1), the
        distribution the generator was trained on (a departure: the `defensegan-prior` variant).
        pretrained: "default" = the shipped generator ``bench/zoo/generator-<dataset>-defensegan-
        default.json`` when it fits the data (else train on demand); another name picks another
        shipped generator; "" = always train on demand.
        z_dim: 128.  width: generator/critic base channels (0 = the shipped generator's, else the
        recipe's).  recipe (training on demand): "cpu" (1,400 iterations, width 16, lr 5e-4:
        ~9 min on 2 cores) | "paper" (200k iterations, width 64, lr 1e-4: for GPUs).
        iterations, gan_lr: 0 = the recipe's; critic_iters: 5; gp_weight: 10.0;
        batch_size: 50 (WGAN-GP training, Adam betas (0.5, 0.9) as the reference).
        unroll: 0 = differentiate through all L steps in white-box attacks; N > 0 = a truncated
        N-step reconstruction when the input requires grad (recorded in the cell's parameters).
    Contract: NCHW float in [0,1] → same shape in [0,1] (a sigmoid generator output).
    Example: ``python -m bench --defenses none,defensegan --attack fgsm --eps 0.3 --limit 500``
    """

    trainable = True
    randomized = True
    fit_params = (
        "z_dim",
        "width",
        "recipe",
        "iterations",
        "critic_iters",
        "gp_weight",
        "gan_lr",
        "batch_size",
        "pretrained",
        "pretrained_sha256",
    )
    test_params: ClassVar[dict[str, Any]] = {
        "iterations": 3,
        "L": 5,
        "R": 2,
        "width": 8,
        "batch_size": 16,
        "pretrained": "",
    }
    # The zoo shipped generators are looked up in (None: bench/zoo; a class attribute so tests
    # can point it elsewhere).
    zoo_dir: Path | None = None

    def __init__(
        self,
        *,
        L: int = 200,
        R: int = 10,
        lr: float = 10.0,
        momentum: float = 0.7,
        optimizer: str = "sgd",
        lr_cut: float = 1.0,
        seed: int = -1,
        z_dim: int = 128,
        width: int = 0,
        recipe: str = "cpu",
        iterations: int = 0,
        critic_iters: int = 5,
        gp_weight: float = 10.0,
        gan_lr: float = 0.0,
        batch_size: int = 50,
        unroll: int = 0,
        z_init: str = "paper",
        pretrained: str = "default",
    ) -> None:
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, not {optimizer!r}")
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
        if z_init not in Z_INIT:
            raise ValueError(f"z_init must be one of {', '.join(Z_INIT)}, not {z_init!r}")
        if pretrained and not pretrained.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"pretrained must be a plain name (letters, digits, - _), not {pretrained!r}")
        for key in ("L", "R", "z_dim", "critic_iters", "batch_size"):
            if locals()[key] <= 0:
                raise ValueError(f"{key} must be > 0")
        if lr <= 0 or not 0 <= momentum < 1 or not 0 < lr_cut <= 1 or iterations < 0 or unroll < 0:
            raise ValueError("need lr > 0, 0 ≤ momentum < 1, 0 < lr_cut ≤ 1, iterations ≥ 0, unroll ≥ 0")
        if width < 0 or gan_lr < 0:
            raise ValueError("width and gan_lr must be ≥ 0 (0 = the recipe's)")
        self.unroll = unroll
        self.L, self.R, self.lr, self.momentum, self.optimizer = L, R, lr, momentum, optimizer
        r = RECIPES[recipe]
        self.lr_cut, self.fixed_seed, self.z_dim, self.z_init = lr_cut, seed, z_dim, z_init
        self.width, self.iterations, self.gan_lr = width, iterations or r["iterations"], gan_lr or r["gan_lr"]
        self.recipe_width = r["width"]
        self.critic_iters, self.gp_weight, self.batch_size = critic_iters, gp_weight, batch_size
        self.pretrained = pretrained
        # A training setting given explicitly asks for *that* generator: never the shipped one.
        self.explicit_training = recipe != "cpu" or iterations != 0 or gan_lr != 0
        # With a fixed seed every call starts from the same z: the defense is deterministic.
        self.randomized = seed < 0

    def setup(self, spec: Any) -> None:
        super().setup(spec)
        if not self.width:  # the shipped generator's width, so that it can be loaded; else the recipe's
            m = self.manifest(getattr(spec, "registered_name", ""))
            self.width = int(m["width"]) if m and m.get("z_dim") == self.z_dim else self.recipe_width
        self.G = DefenseGANGenerator(tuple(spec.shape), self.z_dim, self.width)
        # The shipped weights are part of what this defense is (re-shipping changes its cells), and
        # its recorded training settings are the shipped generator's, not the recipe's.
        self.shipped = self.usable_manifest(getattr(spec, "registered_name", ""))
        if self.shipped:
            self.iterations, self.gan_lr = self.shipped.get("iterations"), self.shipped["training"].get("lr")
        self.hparams.update(
            width=self.width,
            iterations=self.iterations,
            gan_lr=self.gan_lr,
            z_init=self.z_init,
            pretrained_sha256=self.shipped["sha256"] if self.shipped else None,
        )

    def usable_manifest(self, dataset: str) -> dict[str, Any] | None:
        """The shipped generator's provenance when it fits this defense's architecture and training
        settings and its file's sha256 checks (the data is checked when loading); None otherwise."""
        m = self.manifest(dataset)
        if m is None or self.explicit_training:
            return None
        ident = self.generator_identity(str(m.get("data_fingerprint")))
        found = shipped.find("generator", dataset, self.generator_name(), ident, self.zoo_dir, announce=False)
        return None if found is None else found.provenance

    def generator_name(self) -> str:
        return f"defensegan-{self.pretrained}"

    def generator_identity(self, data_fingerprint: str) -> dict[str, Any]:
        """What a shipped generator must have been trained under to be this defense's: the
        architecture, image shape, width, z_dim and WGAN-GP settings (not the budget: iterations and
        learning rate are the shipped generator's, recorded in hparams), on this data."""
        settings = {
            "architecture": type(self.G).__name__,
            "shape": list(self.spec.shape),
            "width": self.width,
            "z_dim": self.z_dim,
            "critic_iters": self.critic_iters,
            "gp_weight": self.gp_weight,
            "batch_size": self.batch_size,
        }
        return identity.component_identity("defensegan", "generator", settings, data_fingerprint)

    # ---- reconstruction ---------------------------------------------------------------------
    def initial_z(self, batch: int) -> torch.Tensor:
        """[B·R, z_dim], image-major, so image i gets the same restarts in any batch."""
        if self.fixed_seed >= 0:
            self.rng.manual_seed(self.fixed_seed)
        return torch.randn(batch * self.R, self.z_dim, generator=self.rng) * Z_INIT[self.z_init](self.z_dim)

    def lr_at(self, step: int, L: int) -> float:
        """The descent's rate at ``step`` of ``L``: ``lr``, ×0.1 from ``lr_cut``·L (never at lr_cut = 1)."""
        return self.lr * (0.1 if step >= self.lr_cut * L else 1.0)

    def reconstruct(
        self, x: torch.Tensor, z: torch.Tensor | None = None, steps: int | None = None
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
                lr = self.lr_at(step, L)
                loss = ((self.G(z) - target) ** 2).flatten(1).mean(1)
                (g,) = torch.autograd.grad(loss.sum(), z, create_graph=differentiable)
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

    # ---- a shipped generator ----------------------------------------------------------------
    def manifest(self, dataset: str) -> dict[str, Any] | None:
        """The provenance of the shipped generator ``self.pretrained`` for ``dataset``, if any."""
        if not self.pretrained or not dataset:
            return None
        return shipped.entry("generator", dataset, self.generator_name(), self.zoo_dir)

    def load_pretrained(self, data: Any) -> dict[str, Any] | None:
        """Load the shipped generator when it was trained under this defense's generator identity
        on this data and its sha256 checks (the zoo's one check, ``bench.core.shipped.find``).

        Any mismatch prints one line and returns None: the runner then trains on demand.
        """
        if self.manifest(data.name) is None:
            return None
        if self.explicit_training:
            print(
                f"[defense] not using the shipped DefenseGAN generator {self.pretrained!r}: training settings "
                "were given explicitly (recipe, iterations or gan_lr ask for that generator); training on demand"
            )
            return None
        ident = self.generator_identity(data.fingerprint)
        found = shipped.find("generator", data.name, self.generator_name(), ident, self.zoo_dir)
        if found is None:  # find said why, in one line
            return None
        state = torch.load(found.path, map_location="cpu", weights_only=True)
        self.G.load_state_dict(state, strict=True)
        for p in self.G.parameters():
            p.requires_grad_(False)
        m = found.provenance
        return {
            "defense_source": found.source(),
            "generator_sha256": m["sha256"],
            "generator_iterations": m.get("iterations"),
            "generator_seconds": m.get("seconds"),
            "generator_device": m.get("device"),
        }

    # ---- WGAN-GP training -------------------------------------------------------------------
    def trainer(self, device: torch.device, seed: int) -> WGANGPTrainer:
        """A resumable WGAN-GP trainer for this defense's generator (fit and the curve script share it)."""
        return WGANGPTrainer(
            self.G,
            tuple(self.spec.shape),
            width=self.width,
            z_dim=self.z_dim,
            lr=self.gan_lr,
            critic_iters=self.critic_iters,
            gp_weight=self.gp_weight,
            batch_size=self.batch_size,
            seed=seed,
            device=device,
        )

    def train_plan(self, n_train: int) -> str:
        return (
            f"WGAN-GP, {self.iterations} generator iterations of {self.batch_size} images "
            f"(≈ {self.iterations * self.critic_iters * self.batch_size / n_train:.1f} epochs of critic steps), "
            f"width {self.width}"
        )

    def fit(self, train: Any, classifier: nn.Module, *, device: torch.device, seed: int, eps: float) -> dict[str, Any]:
        t = self.trainer(device, seed)
        steps = iter(progress(range(self.iterations), "defensegan WGAN-GP", total=self.iterations))
        t.train(train.x, self.iterations, on_step=lambda _: next(steps, None))
        next(steps, None)  # let the progress display close
        self.G.eval()
        for p in self.G.parameters():
            p.requires_grad_(False)
        return {"train_seconds": t.seconds, "train_iterations": t.iteration, "last_critic_loss": t.losses()[0]}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state, strict, assign)
        for p in self.G.parameters():
            p.requires_grad_(False)
        return out


class WGANGPTrainer:
    """WGAN-GP training (Gulrajani et al. 2017) of a DefenseGAN generator, resumable bit for bit.

    Per generator iteration: ``critic_iters`` critic steps on real batches vs G(z), gradient
    penalty ``gp_weight`` on random interpolates, then one generator step; Adam β (0.5, 0.9) for
    both nets, as the reference. Every random draw (batches, latents, interpolation weights)
    comes from one private CPU generator, never the global RNG, so a checkpoint — both nets, both
    Adam states, that RNG state, the iteration count — restores the run exactly: continuing from
    it gives the same weights as never having stopped.
    """

    def __init__(
        self,
        G: nn.Module,
        shape: tuple[int, int, int],
        *,
        width: int,
        z_dim: int,
        lr: float,
        critic_iters: int,
        gp_weight: float,
        batch_size: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self.device = torch.device(device)
        self.G = G.to(self.device)
        with torch.random.fork_rng(devices=[]):  # the critic's init depends on the seed only
            torch.manual_seed(seed)
            self.D = DefenseGANCritic(shape, width).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.9))
        self.rng = torch.Generator().manual_seed(seed)
        self.config = {
            "shape": list(shape),
            "width": width,
            "z_dim": z_dim,
            "lr": lr,
            "critic_iters": critic_iters,
            "gp_weight": gp_weight,
            "batch_size": batch_size,
            "seed": seed,
        }
        self.iteration, self.seconds = 0, 0.0
        self._losses: tuple[torch.Tensor, torch.Tensor] | None = None

    def _draw(self, *shape: int, kind: Callable = torch.randn) -> torch.Tensor:
        # Drawn on the CPU generator, then moved: the same numbers on any device.
        return kind(*shape, generator=self.rng).to(self.device)

    def step(self, x_all: torch.Tensor) -> None:
        """One generator iteration (``critic_iters`` critic steps, then one generator step)."""
        B, zd, n = self.config["batch_size"], self.config["z_dim"], len(x_all)
        for _ in range(self.config["critic_iters"]):
            real = x_all[torch.randint(n, (B,), generator=self.rng).to(x_all.device)]
            z, a = self._draw(B, zd), self._draw(B, 1, 1, 1, kind=torch.rand)
            with torch.no_grad():
                fake = self.G(z)
            mix = (a * real + (1 - a) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(mix).sum(), mix, create_graph=True)
            gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            loss_d = self.D(fake).mean() - self.D(real).mean() + self.config["gp_weight"] * gp
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        loss_g = -self.D(self.G(self._draw(B, zd))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self._losses = (loss_d.detach(), loss_g.detach())  # no .item(): it would sync a GPU every step
        self.iteration += 1

    def train(
        self,
        x: torch.Tensor,
        until: int,
        *,
        deadline: float | None = None,
        on_step: Callable[[WGANGPTrainer], None] | None = None,
    ) -> None:
        """Train until ``self.iteration == until`` or ``time.perf_counter() ≥ deadline``."""
        x_all = x.to(self.device)
        self.G.train()
        for p in self.G.parameters():
            p.requires_grad_(True)
        t0 = time.perf_counter()
        try:
            while self.iteration < until and (deadline is None or time.perf_counter() < deadline):
                self.step(x_all)
                if on_step:
                    on_step(self)
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - t0

    def losses(self) -> tuple[float, float]:
        """(critic loss, generator loss) of the last iteration."""
        return tuple(v.item() for v in self._losses) if self._losses else (float("nan"), float("nan"))

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}
        return {
            "G": cpu(self.G.state_dict()),
            "D": cpu(self.D.state_dict()),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
            "iteration": self.iteration,
            "seconds": self.seconds,
            "config": self.config,
        }

    def save(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        """Write a checkpoint atomically: a crash leaves the previous one intact, never half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save({**self.state_dict(), "meta": meta or {}}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: Path) -> dict[str, Any]:
        """Restore a checkpoint written by ``save`` (weights only); returns its ``meta``."""
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck["config"] != self.config:
            diff = {k: (ck["config"].get(k), v) for k, v in self.config.items() if ck["config"].get(k) != v}
            raise ValueError(f"checkpoint {path} was trained with other settings (theirs, ours): {diff}")
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.rng.set_state(ck["rng"])
        self.iteration, self.seconds = int(ck["iteration"]), float(ck["seconds"])
        return ck.get("meta", {})
