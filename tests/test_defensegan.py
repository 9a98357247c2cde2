import pytest
import torch

from bench.checkpoint import load_state, save_state
from bench.data import CIFAR10, MNIST
from bench.registry import DEFENSES, build
from defenses.gan_nets import DefenseGANGenerator


def make(spec=None, **params):
    d = build(DEFENSES, "defensegan", {"width": 16, **params})
    d.setup(spec or MNIST())
    for p in d.G.parameters():
        p.requires_grad_(False)
    return d.eval()


def test_reference_generator_shapes():
    g = DefenseGANGenerator((1, 28, 28))
    assert g(torch.randn(3, 128)).shape == (3, 1, 28, 28)
    assert DefenseGANGenerator((3, 32, 32), width=8)(torch.randn(2, 128)).shape == (2, 3, 32, 32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


@pytest.mark.parametrize("z_init,scale", [("paper", 128 ** -0.5), ("prior", 1.0)])
def test_reconstructs_an_image_in_the_generator_range(z_init, scale):
    torch.manual_seed(0)
    d = make(L=300, R=4, seed=1, z_init=z_init)
    with torch.no_grad():  # an untrained G is almost constant; widen its range
        for m in d.G.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.ConvTranspose2d)):
                m.weight.mul_(3)
    target = d.G(torch.randn(2, 128) * scale)
    start = ((d.G(d.initial_z(2)[::4]) - target) ** 2).mean().item()
    out, loss = d.reconstruct(target)
    assert loss.max().item() < 0.1 * start
    assert ((out - target) ** 2).flatten(1).mean(1).allclose(loss, atol=1e-6)


def test_z_init_follows_the_recipe_unless_set():
    assert make().z_init == "prior" and make(recipe="paper").z_init == "paper"
    assert make(recipe="paper", z_init="prior").hparams["z_init"] == "prior"
    for z_init, std in (("paper", 128 ** -0.5), ("prior", 1.0)):
        z = make(z_init=z_init, R=10, seed=0).initial_z(100)
        assert z.shape == (1000, 128) and abs(z.std().item() / std - 1) < 0.05


def test_shape_range_and_determinism_under_seed():
    d = make(L=5, R=3, seed=7)
    x = torch.rand(4, 1, 28, 28)
    a, b = d(x), d(x)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    r = make(L=5, R=3)  # no fixed seed: restarts differ between calls
    assert not torch.equal(r(x), r(x))


def test_batched_equals_per_image():
    d = make(L=8, R=3, seed=3)
    x = torch.rand(5, 1, 28, 28)
    batched = d(x)
    single = d(x[:1])
    assert torch.allclose(batched[:1], single, atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    a, b = make(seed=0, L=3, R=2), make(seed=0, L=3, R=2)
    save_state(a, tmp_path / "g.pt")
    load_state(b, tmp_path / "g.pt")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(a(x), b(x))


def test_gradients_flow_through_the_unrolled_loop():
    d = make(L=3, R=2, seed=0)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    d(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cifar_shaped_input():
    d = make(CIFAR10(), L=2, R=2, seed=0)
    assert d(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_bad_parameters():
    from bench.errors import BenchError
    with pytest.raises(BenchError, match="optimizer must be sgd or adam"):
        build(DEFENSES, "defensegan", {"optimizer": "lbfgs"})
    with pytest.raises(BenchError, match="recipe must be one of cpu, paper"):
        build(DEFENSES, "defensegan", {"recipe": "huge"})
    with pytest.raises(BenchError, match="z_init must be one of paper, prior"):
        build(DEFENSES, "defensegan", {"z_init": "zero"})
