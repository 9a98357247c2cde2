import pytest
import torch

from bench.builtin.data import CIFAR10, MNIST, Split
from bench.core.checkpoint import load_state, save_state
from bench.core.registry import DEFENSES, build
from defenses.countergan import CounterGAN, image_seed
from defenses.gan_nets import (
    ConvDiscriminator,
    ConvImageGenerator,
    ConvSeedGenerator,
    LinearDiscriminator,
    LinearGenerator,
)

NAMES = [n for n in DEFENSES.names() if n.startswith("countergan")]
EXPECTED = {  # name -> (generator, discriminator, critic has sigmoid)
    "countergan-linear-bce": (LinearGenerator, LinearDiscriminator, True),
    "countergan-linear-mse": (LinearGenerator, LinearDiscriminator, True),
    "countergan-conv-bce": (ConvSeedGenerator, ConvDiscriminator, True),
    "countergan-conv-mse": (ConvSeedGenerator, ConvDiscriminator, True),
    "countergan-linear-wgangp": (LinearGenerator, LinearDiscriminator, False),
}


def make(name, spec, **params):
    d = build(DEFENSES, name, params)
    d.setup(spec)
    return d


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_published_name_builds_its_architecture(name):
    d = make(name, MNIST())
    gen, disc, sigmoid = EXPECTED[name]
    assert isinstance(d.G, gen) and isinstance(d.D, disc)
    assert isinstance(list(d.D.modules())[-1], torch.nn.Sigmoid) == sigmoid
    assert d.conditioning == "seed" and d.noise_kind == "sigmoid"  # the published form


def test_preset_is_image_conditioned_with_signed_noise():
    d = make("countergan", MNIST())
    assert isinstance(d.G, ConvImageGenerator) and d.noise_kind == "tanh"
    x = torch.rand(3, 1, 28, 28)
    assert (d.noise(x) < 0).any()  # the published sigmoid noise could never be negative


def test_published_generator_sizes():
    g = make("countergan-linear-bce", MNIST()).G
    dims = [m.out_features for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert dims == [256, 512, 1024, 784]
    conv = make("countergan-conv-bce", CIFAR10()).G
    kernels = [m.kernel_size for m in conv.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert kernels == [(16, 16), (17, 17)]


def test_image_seed_is_thresholded_and_resized():
    x = torch.zeros(2, 1, 28, 28)
    x[0, :, :14] = 0.9
    s = image_seed(x, 100)
    assert s.shape == (2, 100) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert s[0].sum() > 0 and s[1].sum() == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spec", [MNIST(), CIFAR10()], ids=["1x28x28", "3x32x32"])
def test_shapes_for_mnist_and_cifar(name, spec):
    d = make(name, spec).eval()
    x = torch.rand(4, *spec.shape)
    out = d(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    d.train()
    d._d_loss(x, out.detach()).backward() if hasattr(d, "D") else None


@pytest.mark.parametrize("name", ["countergan", "countergan-linear-bce"])
def test_fit_lowers_generator_loss(name, mnist_setup):
    import torchattacks

    spec, data, clf = mnist_setup
    d = make(name, spec, iterations=40, batch_size=64, gan_loss="none")
    x, y = data.test.x[:200], data.test.y[:200]
    adv = torchattacks.FGSM(clf, eps=0.3)(x, y)

    def loss():
        with torch.no_grad():
            return d.eval().generator_loss(d(adv), x, y, clf).item()

    before = loss()
    info = d.fit(
        Split(data.train.x[:640], data.train.y[:640], "subset"), clf, device=torch.device("cpu"), seed=0, eps=0.3
    )
    assert info["train_iterations"] == 40
    assert loss() < 0.8 * before


def test_checkpoint_round_trip_and_runner_cache_hit(run_args, tmp_path):
    from conftest import read_records

    from bench.cli import main

    (tmp_path / "cg.toml").write_text(
        "[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n"
        "[defenses.countergan]\niterations = 15\nbatch_size = 256\n"
    )
    args = run_args("--defenses", "countergan", "--attack", "fgsm", "--eps", "0.3")
    args[args.index("--config") + 1] = str(tmp_path / "cg.toml")
    assert main(args) == 0
    assert main([*args, "--rerun"]) == 0
    first, second = read_records(run_args.results)
    assert first["fit"]["defense_source"].startswith("trained:") and second["fit"]["defense_source"].startswith(
        "cache:"
    )
    assert first["defended_adv_acc"] == second["defended_adv_acc"]
    assert (
        first["fit"]["defense_weights_hash"] == second["fit"]["defense_weights_hash"]
    )  # the cache names its weights too
    path = first["fit"]["defense_source"].split(":", 1)[1]
    a, b = make("countergan", MNIST()), make("countergan", MNIST())
    load_state(a, path)
    save_state(a, tmp_path / "again.pt")
    load_state(b, tmp_path / "again.pt")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_invalid_choices_are_clear():
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="noise must be one of sigmoid, tanh"):
        build(DEFENSES, "countergan", {"noise": "relu"})
    assert issubclass(DEFENSES.get("countergan"), CounterGAN)


def test_adaptive_training_attacks_through_the_generator(mnist_setup, monkeypatch):
    """countergan-adaptive crafts its training attack end to end: the model the attack sees
    contains the generator being trained, and its gradient reaches the generator."""
    from bench.core.threats import WhiteBox

    spec, data, clf = mnist_setup
    d = make("countergan-adaptive", spec, iterations=2, batch_size=16, width=8, train_steps=2)
    seen = []
    original = type(d.train_attack).perturb

    def spy(self, model, x, y, eps, spec_):
        seen.append(model)
        return original(self, model, x, y, eps, spec_)

    monkeypatch.setattr(type(d.train_attack), "perturb", spy)
    d.fit(Split(data.train.x[:64], data.train.y[:64], "subset"), clf, device=torch.device("cpu"), seed=0, eps=0.3)
    assert len(seen) == 2 and all(isinstance(m, WhiteBox) and m.defense is d for m in seen)
    x = data.test.x[:4].clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(seen[0](x), data.test.y[:4])
    grads = torch.autograd.grad(loss, [x, *d.G.parameters()], allow_unused=True)
    assert grads[0].abs().sum() > 0 and any(g is not None and g.abs().sum() > 0 for g in grads[1:])
    assert d.hparams["train_threat"] == "white" and d.hparams["train_steps"] == 2
    assert d.hparams["train_attack"] == "pgd" and d.hparams["eps_ramp"] == 200


def test_cache_key_covers_the_training_attack_and_schedule(mnist_setup):
    from bench.run.plan import fit_key

    spec, _, _ = mnist_setup
    keys = {
        fit_key(make("countergan-adaptive", spec, **kw), "clf", "data", 0)
        for kw in (
            {},
            {"train_steps": 7},
            {"eps_ramp": 50},
            {"train_attack": "fgsm", "train_steps": 0},
            {"train_threat": "gray"},
            {"train_eps": 0.2},
        )
    }
    assert len(keys) == 6
