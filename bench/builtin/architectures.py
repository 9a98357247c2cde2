"""The registered classifier architectures: NCHW images in [0,1] in, logits out, the data's
normalisation inside the model (``Normalized``). How they are trained: ``bench.builtin.training``;
with which recipe: ``bench.builtin.recipe``; loaded, cached or trained: ``bench.builtin.classifiers``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.core.registry import register_classifier


class Normalized(nn.Module):
    """Base: subtract mean / divide std, then ``self.net``; subclasses build ``net``."""

    example_shape: tuple[int, int, int] = (1, 28, 28)  # an input shape the tests use

    def __init__(self, shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        c, h, w = shape
        self.net = self.build((c, h, w), num_classes)

    def build(self, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    mean: torch.Tensor  # buffers, registered above
    std: torch.Tensor

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
            nn.Conv2d(c, 64, 5),
            nn.ReLU(),
            nn.Conv2d(64, 64, 5, stride=2),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(64 * oh * ow, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )


@register_classifier("cifar-small")
class SmallCNN(Normalized):
    """A CPU-friendly CNN for 3×32×32: 3 conv blocks (32/64/128, BN, max-pool), FC 256.

    Example: ``--dataset cifar10 --classifier cifar-small``.
    """

    example_shape = (3, 32, 32)

    def build(self, shape, num_classes):
        c, h, w = shape
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(
            *block(c, 32),
            *block(32, 64),
            *block(64, 128),
            nn.Flatten(),
            nn.Linear(128 * (h // 8) * (w // 8), 256),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )


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
        return nn.Sequential(
            features, nn.Flatten(), nn.Dropout(0.5), nn.Linear(512 * (shape[1] // 32) * (shape[2] // 32), num_classes)
        )
