"""The registered baselines (bitdepth, median, jpeg, gaussian) and adversarial training.

The generic contract (shape, range, docstring) of every registered defense is in
test_plugins.py; here: what each baseline must compute, and that PGD adversarial training
really buys robustness.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import defenses  # noqa: F401
from bench.builtin.architectures import ModelA
from bench.builtin.classifiers import get_classifier
from bench.builtin.data import MNIST, Data, Split
from bench.builtin.recipe import Recipe, check_recipe, recipe_identity, resolve_recipe
from bench.builtin.training import TRAINING_VERSION, pgd, train_classifier
from bench.core import identity
from bench.core.errors import BenchError
from bench.core.registry import DEFENSES, build

BASELINES = ("bitdepth", "median", "jpeg", "gaussian")


@pytest.fixture(scope="module")
def digits():
    return MNIST().load(Path("/nonexistent-data-root"), offline=True)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_keeps_contract_and_never_writes_its_input(name, digits):
    x = digits.test.x[:8].clone()
    before = x.clone()
    out = build(DEFENSES, name)(x)
    assert torch.equal(x, before) and out.data_ptr() != x.data_ptr()
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1


def test_non_differentiable_baselines_are_declared_so():
    # White-box through round() or a JPEG codec would be gradient masking: these go through BPDA.
    flags = {n: DEFENSES.get(n).differentiable for n in BASELINES}
    assert flags == {"bitdepth": False, "median": True, "jpeg": False, "gaussian": True}
    assert [n for n in BASELINES if DEFENSES.get(n).randomized] == ["gaussian"]


def test_bitdepth_one_bit_is_binarisation_and_8_bits_keep_8_bit_images():
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(build(DEFENSES, "bitdepth")(x), (x > 0.5).float())
    q = torch.randint(0, 256, (4, 3, 8, 8)) / 255
    assert torch.allclose(build(DEFENSES, "bitdepth", {"bits": 8})(q), q)
    levels = build(DEFENSES, "bitdepth", {"bits": 2})(x).unique() * 3  # 0, 1/3, 2/3, 1 only
    assert len(levels) == 4 and torch.allclose(levels, levels.round())


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_median_matches_scipy(k):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 9, 11)
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="nearest")
    assert np.array_equal(build(DEFENSES, "median", {"k": k})(x).numpy(), ref)


def test_median_removes_isolated_spikes_and_has_gradients():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 4] = 1.0  # one salt pixel: the median of any window around it is 0
    assert build(DEFENSES, "median", {"k": 3})(x).max() == 0
    z = torch.rand(1, 1, 8, 8, requires_grad=True)
    build(DEFENSES, "median")(z).sum().backward()
    assert z.grad.abs().sum() > 0


def _torchvision_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    with warnings.catch_warnings():  # deprecated in torchvision 0.29, still a second libjpeg build to compare with
        warnings.simplefilter("ignore", DeprecationWarning)
        pixels = list((x * 255).round().to(torch.uint8))
        return torch.stack(decode_jpeg(encode_jpeg(pixels, quality=quality), mode=ImageReadMode.UNCHANGED)) / 255


@pytest.mark.parametrize("quality", [20, 75])
def test_jpeg_is_a_real_jpeg_round_trip(digits, quality):
    gray, rgb = digits.test.x[:8], torch.rand(3, 3, 32, 32)
    for x in (gray, rgb):
        out = build(DEFENSES, "jpeg", {"quality": quality})(x)
        assert (out - x).abs().max() > 0.05  # it really compresses: not an 8-bit quantisation
        # An independent encoder gives the same file: identical here; off-by-2 allowed for other builds.
        assert (out - _torchvision_round_trip(x, quality)).abs().max() <= 2 / 255 + 1e-6
    low = (build(DEFENSES, "jpeg", {"quality": 20})(gray) - gray).abs().mean()
    high = (build(DEFENSES, "jpeg", {"quality": 95})(gray) - gray).abs().mean()
    assert low > high


def test_jpeg_refuses_other_channel_counts():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        build(DEFENSES, "jpeg")(torch.rand(1, 2, 8, 8))


def test_gaussian_is_reproducible_after_seed_and_differs_between_seeds():
    g = build(DEFENSES, "gaussian", {"sigma": 0.2})
    x = torch.full((2, 1, 28, 28), 0.5)
    g.seed(1)
    a, a_next = g(x), g(x)
    g.seed(1)
    assert torch.equal(g(x), a)
    assert not torch.equal(a, a_next)  # the stream moves on between calls
    g.seed(2)
    assert not torch.equal(g(x), a)
    assert (a - x).std().item() == pytest.approx(0.2, rel=0.1)  # sigma is sigma (0.5 ± 0.2 rarely clips)
    assert torch.equal(build(DEFENSES, "gaussian", {"sigma": 0.0})(x), x)


def test_gaussian_survives_pickling_with_its_random_stream():
    g = build(DEFENSES, "gaussian")
    g.seed(5)
    g(torch.rand(1, 1, 4, 4))  # advance the stream: the copy must continue from here
    copy = pickle.loads(pickle.dumps(g))
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(copy(x), g(x))


# ---- classifiers: recipes and adversarial training ------------------------------------------


def test_resolve_recipe_precedence_and_errors():
    # defaults < [classifier] < recipe_preset < [classifiers.<name>]
    plain = resolve_recipe("mnist-cnn", {"epochs": 2}, {})
    assert (plain.epochs, plain.adv_eps) == (2, 0.0)
    at = resolve_recipe("mnist-cnn-pgdat", {"epochs": 2, "weight_decay": 1e-4}, {})
    assert at.adv_eps == 0.3 and at.adv_steps > 0 and at.epochs != 2 and at.weight_decay == 1e-4
    longer = resolve_recipe("mnist-cnn-pgdat", {"epochs": 2}, {"epochs": 100, "lr": 1})
    assert (longer.epochs, longer.lr, longer.adv_eps) == (100, 1.0, 0.3) and isinstance(longer.lr, float)
    with pytest.raises(BenchError, match=r"unknown key\(s\) stepz in \[classifiers.mnist-cnn-pgdat\]"):
        resolve_recipe("mnist-cnn-pgdat", {}, {"stepz": 3})
    with pytest.raises(BenchError, match=r"\[classifier\] epochs must be an integer"):
        resolve_recipe("mnist-cnn", {"epochs": "3"}, {})
    with pytest.raises(BenchError, match="adv_steps must be an integer"):
        resolve_recipe("mnist-cnn-pgdat", {}, {"adv_steps": 2.5})
    with pytest.raises(BenchError, match="lr must be a number"):
        resolve_recipe("mnist-cnn", {"lr": True}, {})
    with pytest.raises(BenchError, match="needs adv_steps"):
        resolve_recipe("mnist-cnn", {}, {"adv_eps": 0.1})
    with pytest.raises(BenchError, match="adv_eps must be in"):
        resolve_recipe("mnist-cnn-pgdat", {}, {"adv_eps": 3})
    assert check_recipe({"epochs": 1, "batch_size": 128}) == Recipe(epochs=1, batch_size=128)


def _tiny(n_train: int = 1000, n_test: int = 300) -> Data:
    """Real digits, 2×2 average-pooled to 14×14 so that model A trains in about a second."""
    d = MNIST().load(Path("/nonexistent-data-root"), offline=True)
    small = lambda s, n: Split(F.avg_pool2d(s.x[:n], 2), s.y[:n], "tiny")
    return Data("tiny", small(d.train, n_train), small(d.test, n_test), "tiny")


def test_get_classifier_is_seeded_before_the_model_and_keyed_by_identity(tmp_path):
    data = _tiny(256, 16)
    spec = MNIST()
    spec.shape = (1, 14, 14)
    recipe = Recipe(epochs=1, batch_size=128)
    infos = []
    for junk in (1, 50):
        torch.rand(junk)  # move the hidden global RNG: the weights must not care
        infos.append(get_classifier("mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), tmp_path / str(junk))[1])
    assert infos[0]["classifier_hash"] == infos[1]["classifier_hash"]
    recipe_fields = recipe_identity(infos[0]["classifier_recipe"])
    assert "rec_L" not in recipe_fields and "rec_L" in infos[0]["classifier_recipe"]  # records show it all
    want = identity.key(identity.classifier_identity("tiny", "mnist-cnn", recipe_fields, "tiny", 0, TRAINING_VERSION))
    assert infos[0]["classifier_key"] == want and infos[0]["classifier_recipe"]["adv_eps"] == 0.0
    cached = get_classifier("mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), tmp_path / "1")[1]
    assert cached["classifier_source"].startswith("cache:") and cached["classifier_key"] == want


def test_pgd_adversarial_training_raises_pgd_accuracy_over_standard_training():
    data, eps = _tiny(), 0.2
    x, y = data.test.x, data.test.y

    def accuracies(recipe: Recipe) -> tuple[float, float]:
        torch.manual_seed(0)
        model = ModelA((1, 14, 14), 10, (0.13,), (0.31,))
        train_classifier(model, data, recipe, 0, torch.device("cpu"))
        adv = pgd(model, x, y, eps, 10, 2.5, torch.Generator().manual_seed(1))
        with torch.no_grad():
            return ((model(x).argmax(1) == y).float().mean().item(), (model(adv).argmax(1) == y).float().mean().item())

    # One thread: a model this small gains nothing from two, and on a busy 2-core machine two
    # threads wait on each other (measured: 5 s on one thread, 100 s on two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clean_std, robust_std = accuracies(Recipe(epochs=4))
        clean_at, robust_at = accuracies(Recipe(epochs=4, adv_eps=eps, adv_steps=5, adv_ramp_epochs=1.0))
    finally:
        torch.set_num_threads(threads)
    assert clean_std > 0.8 and clean_at > 0.6  # both learnt the digits
    assert robust_std < 0.25  # an undefended model falls under PGD …
    assert robust_at > robust_std + 0.15  # … adversarial training keeps a good share


# ---- the paper's Rec setting: a classifier trained on DefenseGAN reconstructions --------------


def test_rec_classifier_trains_on_reconstructions_and_names_its_generator(run_args, tmp_path, monkeypatch):
    import bench.builtin.classifiers as clf
    from bench.cli import main
    from tests.conftest import read_records

    seen = []
    real = clf.train_classifier
    monkeypatch.setattr(
        clf, "train_classifier", lambda model, data, *a, **k: (seen.append(data.train), real(model, data, *a, **k))[1]
    )
    keys = []
    for L in (2, 3):
        toml = tmp_path / f"rec{L}.toml"
        toml.write_text(
            "[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n"
            f"[classifiers.mnist-cnn-rec]\nrec_L = {L}\nrec_R = 1\n"
        )
        args = run_args("--classifier", "mnist-cnn-rec", "--defenses", "none", "--attack", "fgsm", "--limit", "8")
        args[args.index("--config") + 1] = str(toml)
        args[args.index("--results-dir") + 1] = str(tmp_path / f"r{L}")
        assert main(args) == 0
        (rec,) = read_records(tmp_path / f"r{L}")
        assert rec["classifier"] == "mnist-cnn-rec" and rec["fit"]["classifier_recipe"]["rec_L"] == L
        keys.append(rec["fit"]["classifier_key"])
    assert keys[0] != keys[1]  # the reconstruction budget is part of the classifier's identity
    assert len(seen) == 2 and all("(reconstructed)" in s.source for s in seen)
    # L = 2 and L = 3 reconstructions differ, and neither is the raw training data
    digits = MNIST().load(Path("/nonexistent-data-root"), offline=True).train.x
    assert not torch.equal(seen[0].x, seen[1].x) and not torch.equal(seen[0].x, digits)
    assert seen[0].x.shape == digits.shape and 0 <= seen[0].x.min() and seen[0].x.max() <= 1
    # records name the generator the training images went through (the shipped one here)
    assert rec["fit"]["classifier_reconstruction"]["L"] == 3 and rec["fit"]["classifier_reconstruction"]["generator"]
    assert (
        rec["fit"]["classifier_reconstruction"]["pretrained_sha256"]
        == DEFENSES.get("defensegan")().manifest("mnist")["sha256"]
    )


def test_rec_recipe_is_checked():
    with pytest.raises(BenchError, match="rec_R must be a positive"):
        resolve_recipe("mnist-cnn-rec", {}, {"rec_R": 0})
    assert resolve_recipe("mnist-cnn-rec", {}, {}).rec_L > 0 and resolve_recipe("mnist-cnn", {}, {}).rec_L == 0
