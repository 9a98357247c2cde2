"""Classifiers: normalisation inside the model, trained on demand and cached by content.

Every classifier takes NCHW images in [0,1] and returns logits. The cache key covers the
dataset, architecture, training recipe, data fingerprint and seed, so a changed recipe or
changed data can never silently reuse old weights.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from bench.checkpoint import load_state, save_state, stable_hash, state_hash
from bench.data import Data, DatasetPlugin
from bench.errors import BenchError
from bench.registry import CLASSIFIERS, register_classifier


class Normalized(nn.Module):
    """Base: subtract mean / divide std, then ``self.net``; subclasses build ``net``."""

    example_shape: tuple[int, int, int] = (1, 28, 28)  # an input shape the tests use

    def __init__(self, shape: Sequence[int], num_classes: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.net = self.build(tuple(shape), num_classes)

    def build(self, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@register_classifier("mnist-cnn")
class ModelA(Normalized):
    """DefenseGAN's model A: Conv64 5×5, Conv64 5×5/2, Dropout .25, FC128, Dropout .5, FC10.

    Input N×1×28×28 in [0,1] (any C×H×W works). Example: ``--classifier mnist-cnn``.
    """

    example_shape = (1, 28, 28)

    def build(self, shape, num_classes):
        c, h, w = shape
        oh, ow = (h - 4 - 5) // 2 + 1, (w - 4 - 5) // 2 + 1
        return nn.Sequential(
            nn.Conv2d(c, 64, 5), nn.ReLU(), nn.Conv2d(64, 64, 5, stride=2), nn.ReLU(),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * oh * ow, 128), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(128, num_classes))


@register_classifier("cifar-small")
class SmallCNN(Normalized):
    """A CPU-friendly CNN for 3×32×32: 3 conv blocks (32/64/128, BN, max-pool), FC 256.

    Example: ``--dataset cifar10 --classifier cifar-small``.
    """

    example_shape = (3, 32, 32)

    def build(self, shape, num_classes):
        c, h, w = shape
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(*block(c, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                             nn.Linear(128 * (h // 8) * (w // 8), 256), nn.ReLU(), nn.Dropout(0.3),
                             nn.Linear(256, num_classes))


@register_classifier("cifar-vgg16bn")
class VGG16BN(Normalized):
    """VGG16 with batch norm for 32×32 inputs, as in counterGAN (torchvision's layers, FC 512→10).

    Example: ``--dataset cifar10 --classifier cifar-vgg16bn`` (train on a GPU).
    """

    example_shape = (3, 32, 32)

    def build(self, shape, num_classes):
        from torchvision.models import vgg16_bn
        features = vgg16_bn(weights=None).features
        if shape[0] != 3:
            features[0] = nn.Conv2d(shape[0], 64, 3, padding=1)
        return nn.Sequential(features, nn.Flatten(), nn.Dropout(0.5),
                             nn.Linear(512 * (shape[1] // 32) * (shape[2] // 32), num_classes))


@dataclass
class Recipe:
    """How a classifier is trained when no weights are given (``[classifier]`` in bench.toml)."""

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0


def make_classifier(name: str, spec: DatasetPlugin) -> Normalized:
    cls = CLASSIFIERS.get(name)
    return cls(spec.shape, spec.num_classes, spec.mean, spec.std)


def train_classifier(model: nn.Module, data: Data, recipe: Recipe, seed: int,
                     device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    x, y = data.train.x, data.train.y
    n = len(y)
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n, generator=g)
        bar = tqdm(range(0, n, recipe.batch_size), desc=f"classifier epoch {epoch + 1}/{recipe.epochs}",
                   leave=False, disable=None)
        for i in bar:
            idx = perm[i:i + recipe.batch_size]
            loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def get_classifier(name: str, spec: DatasetPlugin, data: Data, recipe: Recipe, seed: int,
                   device: torch.device, cache_dir: Path, weights: Path | None = None
                   ) -> tuple[nn.Module, dict]:
    """Return (model in eval mode on ``device``, identity info for records)."""
    torch.manual_seed(seed)  # before the model exists: its initial weights must not depend on hidden RNG state
    model = make_classifier(name, spec)
    if weights is not None:
        load_state(model, weights, what="classifier weights")
        info = {"classifier_weights": str(weights), "classifier_source": "user"}
    else:
        key = stable_hash({"dataset": data.name, "arch": name, "recipe": vars(recipe),
                           "data": data.fingerprint, "seed": seed})
        path = Path(cache_dir) / "classifiers" / f"{data.name}-{name}-{key}.pt"
        if path.is_file():
            load_state(model, path, what="cached classifier")
            info = {"classifier_source": f"cache:{path}"}
        else:
            t0 = time.perf_counter()
            print(f"[classifier] training {name} on {len(data.train)} {data.name} images "
                  f"({recipe.epochs} epochs) …")
            train_classifier(model, data, recipe, seed, device)
            save_state(model, path, {"dataset": data.name, "arch": name, "recipe": vars(recipe),
                                     "data": data.fingerprint, "seed": seed,
                                     "train_seconds": time.perf_counter() - t0})
            info = {"classifier_source": f"trained:{path}"}
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info["classifier_hash"] = state_hash(model)
    return model, info


def check_recipe(values: dict) -> Recipe:
    allowed = Recipe.__dataclass_fields__
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise BenchError(f"unknown key(s) {', '.join(unknown)} in [classifier]; valid: {', '.join(allowed)}")
    recipe = Recipe(**values)
    for k in ("epochs", "batch_size"):
        v = getattr(recipe, k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise BenchError(f"[classifier] {k} must be a positive integer, got {v!r}")
    if not isinstance(recipe.lr, (int, float)) or recipe.lr <= 0:
        raise BenchError(f"[classifier] lr must be a positive number, got {recipe.lr!r}")
    return recipe


def resolve_recipe(name: str, general: dict, specific: dict) -> Recipe:
    """Placeholder until the per-classifier recipes land: the general table, then the specific one."""
    return check_recipe({**general, **specific})
