"""Counting the passes an attack makes through the model it attacks (RobustBench's
``number_forward_passes``, A3's query counts): every forward call of that model adds its batch
size to ``forward``, every backward pass through it adds its batch size to ``backward``.

The attack is handed ``Counted(model)`` in place of ``model``: its forward counts, and it routes
its input through an identity autograd function whose backward counts. An EOT draw is a pass of
its own (``MeanOverDraws`` and APGD's ``eot_iter`` call the wrapped model once per draw), and a
backward pass that reaches the input through several draws counts once per draw. FAB's Jacobian
(one backward per class through one forward) counts one backward per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Passes:
    forward: int = 0
    backward: int = 0

    def add(self, other: Passes) -> None:
        self.forward += other.forward
        self.backward += other.backward


class _CountBackward(torch.autograd.Function):
    """The identity; its backward adds the batch size to ``passes.backward``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, passes: Passes) -> torch.Tensor:
        ctx.passes = passes
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.passes.backward += grad.shape[0]
        return grad, None


class Counted(nn.Module):
    """``model`` with its forward and backward passes counted in ``passes`` (per image)."""

    def __init__(self, model: nn.Module, passes: Passes | None = None) -> None:
        super().__init__()
        self.model = model
        self.passes = passes if passes is not None else Passes()
        self.train(model.training)  # the mode it wraps (torchattacks restores the mode it found)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.forward += x.shape[0]
        if x.requires_grad and torch.is_grad_enabled():
            x = _CountBackward.apply(x, self.passes)
        return self.model(x)
