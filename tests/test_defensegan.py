import json

import pytest
import torch

from bench.builtin.data import CIFAR10, MNIST
from bench.core import identity
from bench.core.checkpoint import load_state, save_state
from bench.core.registry import DEFENSES, build
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


@pytest.mark.parametrize("z_init,scale", [("paper", 128**-0.5), ("prior", 1.0)])
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


def test_z_init_is_the_papers_unless_set():
    assert make().z_init == "paper" and make(recipe="paper").z_init == "paper"
    assert make(z_init="prior").hparams["z_init"] == "prior"
    for z_init, std in (("paper", 128**-0.5), ("prior", 1.0)):
        z = make(z_init=z_init, R=10, seed=0).initial_z(100)
        assert z.shape == (1000, 128) and abs(z.std().item() / std - 1) < 0.05


def test_default_reconstruction_is_the_papers():
    """z0 ~ N(0, 1/128), L = 200, R = 10, momentum SGD 0.7, lr 10 throughout (no ×0.1 step, as
    the reference code runs: its step counter is never incremented)."""
    d = build(DEFENSES, "defensegan")
    assert (d.L, d.R, d.lr, d.momentum, d.optimizer, d.z_init, d.z_dim) == (200, 10, 10.0, 0.7, "sgd", "paper", 128)
    assert [d.lr_at(s, d.L) for s in range(d.L)] == [10.0] * 200
    cut = build(DEFENSES, "defensegan", {"lr_cut": 0.8})  # the paper's text: ×0.1 from 0.8·L
    assert cut.lr_at(159, 200) == 10.0 and cut.lr_at(160, 200) == pytest.approx(1.0)


def test_bench_toml_variants_depart_by_name_only():
    import tomllib
    from pathlib import Path

    from bench.run.plan import make_defense

    tables = tomllib.loads((Path(__file__).parent.parent / "bench.toml").read_text())["defenses"]
    variants = {k: v for k, v in tables.items() if v.get("plugin") == "defensegan"}
    assert {"defensegan-fast", "defensegan-prior"} <= set(variants)
    for name, params in variants.items():
        make_defense(name, params)  # valid parameters
    assert variants["defensegan-prior"] == {"plugin": "defensegan", "z_init": "prior"}


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
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="optimizer must be sgd or adam"):
        build(DEFENSES, "defensegan", {"optimizer": "lbfgs"})
    with pytest.raises(BenchError, match="recipe must be one of cpu, paper"):
        build(DEFENSES, "defensegan", {"recipe": "huge"})
    with pytest.raises(BenchError, match="z_init must be one of paper, prior"):
        build(DEFENSES, "defensegan", {"z_init": "zero"})


# ---- resumable training, shipped generators --------------------------------------------------
TINY = {"width": 4, "batch_size": 8, "pretrained": ""}


def tiny_trainer(seed=0):
    torch.manual_seed(seed)
    d = build(DEFENSES, "defensegan", TINY)
    d.setup(MNIST())
    return d, d.trainer(torch.device("cpu"), seed)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    x = torch.rand(64, 1, 28, 28)
    _, straight = tiny_trainer()
    straight.train(x, 6)
    _, first = tiny_trainer()
    first.train(x, 3)
    first.save(tmp_path / "train.pt", {"note": "half way"})
    first.train(x, 4)  # what happened after the checkpoint is lost in a crash
    _, resumed = tiny_trainer(seed=0)
    assert resumed.load(tmp_path / "train.pt") == {"note": "half way"} and resumed.iteration == 3
    resumed.train(x, 6)
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resumed.iteration == 6 and resumed.seconds > 0
    assert not (tmp_path / ".train.pt.tmp").exists() and len(list(tmp_path.iterdir())) == 1


def test_resume_refuses_other_settings(tmp_path):
    _, t = tiny_trainer()
    t.save(tmp_path / "train.pt")
    d = build(DEFENSES, "defensegan", {**TINY, "batch_size": 9})
    d.setup(MNIST())
    with pytest.raises(ValueError, match="batch_size"):
        d.trainer(torch.device("cpu"), 0).load(tmp_path / "train.pt")


def test_fit_runs_the_trainer():
    from bench.builtin.data import Split

    d = build(DEFENSES, "defensegan", {**TINY, "iterations": 2})
    d.setup(MNIST())
    before = d.G.fc[0].weight.clone()
    info = d.fit(
        Split(torch.rand(32, 1, 28, 28), torch.zeros(32, dtype=torch.long), "test"),
        torch.nn.Identity(),
        device=torch.device("cpu"),
        seed=0,
        eps=0.3,
    )
    assert info["train_iterations"] == 2 and not torch.equal(before, d.G.fc[0].weight)
    assert not any(p.requires_grad for p in d.G.parameters())


def test_curve_script_resumes_where_it_stopped(tmp_path):
    from tools.defensegan_curve import main

    common = [
        "--widths",
        "4",
        "--batch-size",
        "8",
        "--probe-every",
        "2",
        "--no-probe",
        "--results-dir",
        str(tmp_path / "results"),
    ]
    main([*common, "--iterations", "3", "--out", str(tmp_path / "a")])
    main([*common, "--iterations", "5", "--out", str(tmp_path / "a")])  # a restart continues
    main([*common, "--iterations", "5", "--out", str(tmp_path / "b")])
    a, b = (torch.load(tmp_path / f / "w4" / "train.pt", weights_only=True) for f in "ab")
    assert a["iteration"] == b["iteration"] == 5 and len(a["meta"]["commands"]) == 2
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    assert sorted(p.name for p in (tmp_path / "a" / "w4").glob("gen-*.pt")) == [
        "gen-it0000000.pt",
        "gen-it0000002.pt",
        "gen-it0000003.pt",
        "gen-it0000004.pt",
        "gen-it0000005.pt",
    ]


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A tiny generator shipped by the curve script's ship command into a temporary folder."""
    from types import SimpleNamespace

    import tools.defensegan_curve as curve

    d, t = tiny_trainer()
    t.train(torch.rand(16, 1, 28, 28), 1)
    meta = {
        "dataset": "mnist",
        "data_fingerprint": "f" * 16,
        "data_source": "test",
        "device": ["cpu"],
        "commands": [["x"]],
        "git_commits": ["c0ffee"],
        "cpu_models": ["a CPU"],
        "torch_threads": [1],
    }
    monkeypatch.setattr(curve, "make_env", lambda *a: {"git_commit": "c0ffee"})  # a clean tree
    # A generator trained from a dirty tree (or one that did not say) is not shipped.
    for commits in (["c0ffee-dirty"], [], ["a", "b"]):
        t.save(tmp_path / "w4" / "train.pt", {**meta, "git_commits": commits})
        with pytest.raises(SystemExit, match="one clean commit"):
            curve.ship(tmp_path / "w4" / "train.pt", "default", tmp_path / "zoo")
        assert not (tmp_path / "zoo").exists()  # refused before anything is written
    t.save(tmp_path / "w4" / "train.pt", meta)
    curve.ship(tmp_path / "w4" / "train.pt", "default", tmp_path / "zoo")
    shipped_meta = json.loads((tmp_path / "zoo" / "generator-mnist-defensegan-default.json").read_text())
    assert (shipped_meta["git_commit"], shipped_meta["cpu_model"], shipped_meta["torch_threads"]) == (
        "c0ffee",
        ["a CPU"],
        [1],
    )
    monkeypatch.setattr(type(d), "zoo_dir", tmp_path / "zoo")
    data = SimpleNamespace(name="mnist", fingerprint="f" * 16)
    return SimpleNamespace(G=t.G, data=data, dir=tmp_path / "zoo")


def shipped_defense(**params):
    d = build(DEFENSES, "defensegan", {"batch_size": TINY["batch_size"], **params})  # the shipped one's
    d.setup(MNIST())
    return d


def test_shipped_generator_is_loaded_when_everything_matches(shipped):
    d = shipped_defense()
    assert d.width == 4  # the shipped generator's width, so that it fits
    info = d.load_pretrained(shipped.data)
    meta = json.loads((shipped.dir / "generator-mnist-defensegan-default.json").read_text())
    assert info["defense_source"] == f"shipped:{meta['sha256']}" and info["generator_iterations"] == 1
    # The zoo's layout: its identity (DefenseGAN's generator identity on this data) hashes to its key.
    assert meta["kind"] == "generator" and meta["key"] == identity.key(d.generator_identity("f" * 16))
    assert all(torch.equal(a, b) for a, b in zip(d.G.state_dict().values(), shipped.G.state_dict().values()))
    assert not any(p.requires_grad for p in d.G.parameters())


@pytest.mark.parametrize(
    "change,message",
    [
        ("fingerprint", "data: 'ffffffffffffffff' → '0000000000000000'"),
        ("hash", "has sha256"),
        ("width", "settings.width: 4 → 8"),
        ("iterations", "training settings were given explicitly"),
        ("batch", "settings.batch_size: 8 → 50"),
        ("off", None),
    ],
)
def test_shipped_generator_is_refused_on_any_mismatch(shipped, capsys, change, message):
    data, params = shipped.data, {}
    if change == "fingerprint":
        data = type(data)(name="mnist", fingerprint="0" * 16)
    elif change == "hash":
        with open(shipped.dir / "generator-mnist-defensegan-default.pt", "r+b") as f:
            f.seek(-5, 2)
            f.write(b"XXXXX")
    elif change == "width":
        params = {"width": 8}
    elif change == "iterations":  # a user's own training budget asks for that generator
        params = {"iterations": 5000}
    elif change == "batch":
        params = {"batch_size": 50}
    else:
        params = {"pretrained": ""}
    d = shipped_defense(**params)
    before = {k: v.clone() for k, v in d.G.state_dict().items()}
    assert d.load_pretrained(data) is None  # the runner then trains on demand
    out = capsys.readouterr().out
    if message:
        assert message in out and "training on demand" in out and len(out.strip().splitlines()) == 1
    assert all(torch.equal(before[k], v) for k, v in d.G.state_dict().items())
