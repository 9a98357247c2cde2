"""Classifier training: Adam on cross-entropy, optionally on PGD examples (Madry et al.) or on
DefenseGAN reconstructions of the training images. ``TRAINING_VERSION`` names this code in every
classifier's cache key."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from bench.builtin.data import Data
from bench.builtin.recipe import Recipe
from bench.core.progress import progress

# The version of the classifier training code (train_classifier, pgd, reconstructed, the
# architectures, the batch order): part of every classifier's cache key. Bump it whenever the
# same recipe would train different weights; tests/test_training_code.py fails until you do.
TRAINING_VERSION = 1


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, alpha: float, gen: torch.Generator
) -> torch.Tensor:
    """L∞ PGD from a uniform random start in the eps-ball (Madry et al. 2018), for training.

    ``alpha`` is the step size in units of eps/steps. The start is drawn on the CPU generator
    ``gen`` and then moved, so a seed gives the same numbers on any device.
    """
    start = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
    adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        # Gradient w.r.t. the input only: no weight gradients are computed or accumulated.
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + alpha * eps / steps * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def train_classifier(
    model: nn.Module, data: Data, recipe: Recipe, seed: int, device: torch.device, desc: str = "classifier"
) -> nn.Module:
    """Adam on cross-entropy; with ``recipe.adv_eps > 0`` on PGD examples of each batch."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)  # batch order (as for standard training)
    g_adv = torch.Generator().manual_seed(seed)  # PGD random starts
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    x, y = data.train.x, data.train.y
    n, bs = len(y), recipe.batch_size
    per_epoch = math.ceil(n / bs)
    ramp = recipe.adv_ramp_epochs * per_epoch
    bar = progress(range(recipe.epochs * per_epoch), desc=desc, total=recipe.epochs * per_epoch)
    for it in bar:
        epoch, j = divmod(it, per_epoch)
        if j == 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[j * bs : (j + 1) * bs]
        xb, yb = x[idx].to(device), y[idx].to(device)
        if recipe.adv_eps > 0:
            # eps ramps up from ~0: at the full eps from the first step, model A on MNIST can
            # stall at chance (every input looks adversarial before any feature is learnt).
            eps = recipe.adv_eps * min(1.0, (it + 1) / ramp) if ramp else recipe.adv_eps
            k = round(recipe.adv_clean_fraction * len(idx))  # the first k stay clean
            model.eval()  # craft against the deterministic model (no dropout), as at test time
            xb = torch.cat([xb[:k], pgd(model, xb[k:], yb[k:], eps, recipe.adv_steps, recipe.adv_alpha, g_adv)])
            model.train()
            if j == 0:
                bar.set_postfix(epoch=epoch + 1, eps=f"{eps:.3f}")
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if hasattr(bar, "close"):
        bar.close()
    return model.eval()


def reconstructed(data: Data, fn: Callable, device: torch.device, batch: int = 250) -> Data:
    """``data`` with every training image replaced by ``fn``'s reconstruction (labels kept)."""
    x = data.train.x
    bar = progress(range(0, len(x), batch), desc="reconstructing training images", total=math.ceil(len(x) / batch))
    with torch.no_grad():
        out = torch.cat([fn(x[i : i + batch].to(device)).cpu() for i in bar])
    return replace(data, train=replace(data.train, x=out, source=f"{data.train.source} (reconstructed)"))
