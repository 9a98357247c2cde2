"""bench.run.passes: forward and backward passes through the attacked model, per image, on a toy
model whose counts can be worked out by hand."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from bench.core.threats import MeanOverDraws
from bench.run.passes import Counted, Passes


def _toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    return model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])


@pytest.mark.parametrize(
    "make, forward, backward",
    [
        (lambda m: torchattacks.FGSM(m, eps=0.1), 1, 1),  # one step
        (lambda m: torchattacks.PGD(m, eps=0.1, alpha=0.05, steps=3), 3, 3),  # k steps (random start: no pass)
        (lambda m: torchattacks.FGSM(MeanOverDraws(m, 3), eps=0.1), 3, 3),  # EOT: each draw a pass
        (lambda m: torchattacks.EOTPGD(m, eps=0.1, alpha=0.1, steps=2, eot_iter=3), 6, 6),  # steps × draws
    ],
)
def test_passes_per_image(make, forward, backward):
    model, x, y = _toy()
    passes = Passes()
    make(Counted(model, passes))(x, y)
    assert (passes.forward, passes.backward) == (forward * len(x), backward * len(x))


def test_a_counted_model_answers_as_the_model_and_counts_no_backward_without_a_gradient():
    model, x, _ = _toy()
    passes = Passes()
    counted = Counted(model, passes)
    with torch.no_grad():
        assert torch.equal(counted(x), model(x))
    assert (passes.forward, passes.backward) == (5, 0)
    xg = x.clone().requires_grad_()
    counted(xg).sum().backward()
    assert (passes.forward, passes.backward) == (10, 5)
    plain = x.clone().requires_grad_()
    model(plain).sum().backward()
    assert torch.equal(xg.grad, plain.grad)  # the counting function is the identity for gradients too
