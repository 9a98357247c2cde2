"""attacks.aa_faster: AutoAttack's Square and FAB-T without the work whose answer is known or never
used give the very examples torchattacks' originals give, bit for bit, with fewer passes."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from attacks import aa_faster
from attacks.aa_component import AutoAttackComponent


class Net(nn.Module):
    """A small 'defense + classifier' whose weights all require gradients, as a trained defense's do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.defense = nn.Conv2d(1, 1, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.sigmoid(self.defense(x) * 4 - 2))


class Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.model(x)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    x = torch.rand(12, 1, 16, 16) * (torch.rand(12, 1, 16, 16) > 0.6)  # sparse, as digits are
    net = Net().eval()
    with torch.no_grad():
        y = net(x).argmax(1)  # every image classified right: every image attacked
    return net, x, y


@pytest.mark.parametrize("rescale", [False, True])
def test_square_gives_the_same_examples_with_fewer_queries(batch, rescale):
    net, x, y = batch
    got = {}
    for name, cls in (("stock", torchattacks.Square), ("faster", aa_faster.Square)):
        model = Counting(net)
        atk = cls(model, norm="Linf", eps=0.05, n_queries=400, n_restarts=1, seed=0, resc_schedule=rescale)
        got[name] = (atk(x, y), model.images)
    assert torch.equal(got["stock"][0], got["faster"][0])
    assert got["faster"][1] < got["stock"][1]  # proposals equal to the best were not queried


def test_fab_t_gives_the_same_examples_without_weight_gradients(batch):
    net, x, y = batch
    got = {}
    for name, cls in (("stock", torchattacks.FAB), ("faster", aa_faster.FAB)):
        net.zero_grad(set_to_none=True)
        atk = cls(net, norm="Linf", eps=0.05, steps=15, n_restarts=1, seed=0, multi_targeted=True, n_classes=10)
        got[name] = (atk(x, y), [p.grad for p in net.parameters()])
    assert torch.equal(got["stock"][0], got["faster"][0])
    assert any(g is not None for g in got["stock"][1])  # backward() filled the weights' gradients
    assert all(g is None for g in got["faster"][1])  # the input's gradient only


def test_aa_square_keeps_the_standard_versions_schedule():
    """AutoAttack's standard version runs Square with the paper's schedule of square sizes
    (``resc_schedule=False``), not torchattacks' default stretched over ``n_queries``."""
    spec = type("Spec", (), {"num_classes": 10})()
    component = AutoAttackComponent(component="square")
    built = component.build(Net(), 0.3, spec)
    assert isinstance(built, aa_faster.Square) and built.rescale_schedule is False
    assert component.effective_params(0.3, spec)["rescale_schedule"] is False


def test_stretched_schedule_keeps_the_identity_square_cells_had_before():
    """Cells stored before the standard schedule was the default ran torchattacks' stretched one and
    named no schedule: that configuration keeps their identity, so they stay what they are."""
    spec = type("Spec", (), {"num_classes": 10})()
    old = AutoAttackComponent(component="square", rescale_schedule=True).effective_params(0.3, spec)
    assert old == {"component": "square", "n_queries": 5000, "restarts": 1, "seed": 0}
