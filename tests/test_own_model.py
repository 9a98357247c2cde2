"""Your own model and data: a classifier class of yours, a folder of images, an .npz, tensors, from
the command line and from Python (bench.builtin.userdata, bench.api, the driver's classifier checks)."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_records
from PIL import Image

import bench
from bench.cli import main
from bench.core.errors import BenchError

ROOT = Path(__file__).resolve().parents[1]

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        """A user's 3×32×32 classifier with its normalisation inside."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(8 * 15 * 15, 3))

        def forward(self, x):
            return self.body(x - self.mean)
''')


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    """tmpmod:Net with saved weights, importable for this test."""
    (tmp_path / "tmpmod.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tmpmod", None)
    import tmpmod

    torch.manual_seed(0)
    net = tmpmod.Net()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    yield tmpmod, tmp_path / "net.pt"
    sys.modules.pop("tmpmod", None)


def _pngs(root: Path, per_class: int = 6, classes=("cat", "dog", "eel"), size=32, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = (rng.random((size, size, 3)) * 80 + 60 * c).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def _numbers(recs):
    keys = ("clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc", "correct", "identity")
    return {r["cell_key"]: {k: r[k] for k in keys} for r in recs}


def test_own_class_and_image_folder_cli_and_api_give_identical_records(user_model, tmp_path, tiny_toml, cache_dir):
    _, weights = user_model
    folder = _pngs(tmp_path / "imgs")
    out = tmp_path / "cli"
    args = [
        "--config",
        str(tiny_toml),
        "--cache-dir",
        str(cache_dir),
        "--results-dir",
        str(out),
        "--classifier",
        "tmpmod:Net",
        "--classifier-weights",
        str(weights),
        "--dataset",
        f"folder:{folder}",
        "--defenses",
        "none,bitdepth",
        "--attack",
        "fgsm",
        "--eps",
        "8/255",
    ]
    assert main(args) == 0
    cli = read_records(out)
    api = bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        classifier="tmpmod:Net",
        classifier_weights=str(weights),
        dataset=[f"folder:{folder}"],
        defenses=["none", "bitdepth"],
        attack=["fgsm"],
        eps=["8/255"],
    )
    assert len(cli) == 2 and _numbers(api) == _numbers(cli)
    rec = cli[0]
    assert rec["dataset"] == "folder:imgs" and rec["n"] == 18 and rec["classifier"] == "tmpmod:Net"
    assert rec["identity"]["data"]["test_source"].startswith("folder:") and rec["fit"]["classifier_source"] == "user"
    assert rec["identity"]["classifier_hash"] == rec["classifier_hash"]


def test_a_model_object_on_tensors_returns_records_and_a_report(user_model, tmp_path, tiny_toml, cache_dir):
    tmpmod, weights = user_model
    net = tmpmod.Net()
    net.load_state_dict(torch.load(weights, weights_only=True))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(20, 3, 32, 32, generator=g), torch.randint(0, 3, (20,), generator=g)
    out = tmp_path / "results"
    recs = bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        classifier=net,
        data=(x, y),
        defenses=["none", "bitdepth"],
        attack=["fgsm"],
        eps=[0.05],
        results_dir=out,
        report=True,
    )
    assert len(recs) == 2
    for r in recs:
        assert 0 <= r["clean_acc_ci_low"] <= r["clean_acc"] <= r["clean_acc_ci_high"] <= 1
        assert r["dataset"].startswith("tensors:") and r["classifier"] == "tmpmod:Net"
    assert (out / "results.md").is_file() and main(["report", "--results-dir", str(out), "--no-plots"]) == 0
    # The same tensors and weights give the same cells (identity = content + weights, not the object).
    again = bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        classifier=net,
        data=(x.clone(), y.clone()),
        defenses=["none"],
        attack=["fgsm"],
        eps=[0.05],
        results_dir=out,
    )
    assert again[0]["cell_key"] in {r["cell_key"] for r in recs}
    net.body[0].weight.data += 0.01
    other = bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        classifier=net,
        data=(x, y),
        defenses=["none"],
        attack=["fgsm"],
        eps=[0.05],
    )
    assert other[0]["cell_key"] not in {r["cell_key"] for r in recs}


def test_npz_data_uint8_nhwc_with_a_trainable_defense_at_32x32(tmp_path, cache_dir, capsys):
    """counterGAN and DefenseGAN train on a user's 3×32×32 train split and defend its test split."""
    g = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=g.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        y_train=g.integers(0, 4, 64),
        x_test=g.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
        y_test=g.integers(0, 4, 16),
    )
    (tmp_path / "cg.toml").write_text(
        "[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\n"
        "batch_size = 32\n[defenses.countergan]\niterations = 3\nbatch_size = 16\n"
        '[defenses.dg]\nplugin = "defensegan"\npretrained = ""\niterations = 3\n'
        "L = 3\nR = 2\nwidth = 8\nbatch_size = 16\n"
    )
    recs = bench.evaluate(
        config=tmp_path / "cg.toml",
        cache_dir=str(cache_dir),
        dataset=[f"npz:{path}"],
        defenses=["none", "countergan", "dg"],
        attack=["fgsm"],
    )
    assert {r["defense"] for r in recs} == {"none", "countergan", "dg"}
    assert next(r for r in recs if r["defense"] == "dg")["fit"]["defense_source"].startswith("trained:")
    cg = next(r for r in recs if r["defense"] == "countergan")
    assert cg["eps"] == pytest.approx(8 / 255) and cg["fit"]["defense_source"].startswith("trained:")
    assert cg["classifier"] == "cifar-small" and cg["n"] == 16
    assert "no eps given; using 0.03137 (the default for 3-channel images" in capsys.readouterr().out


def _bad_folder(tmp_path: Path, kind: str) -> Path:
    root = _pngs(tmp_path / kind, per_class=2)
    if kind == "missing-class":
        for f in (root / "test" / "eel").iterdir():
            f.unlink()
        (root / "test" / "eel").rmdir()
    elif kind == "empty-class":
        (root / "train" / "fox").mkdir()
        (root / "test" / "fox").mkdir()
    elif kind == "non-image":
        (root / "test" / "cat" / "notes.txt").write_text("not a picture")
    elif kind == "broken-image":
        (root / "test" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    elif kind == "sizes":
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "test" / "cat" / "small.png")
    return root


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing-class", "different classes.*eel"),
        ("empty-class", "class folder .*fox is empty"),
        ("non-image", "not an image file: .*notes.txt"),
        ("broken-image", "cannot read image .*broken.png"),
        ("sizes", "2 sizes.*--image-size"),
    ],
)
def test_a_bad_image_folder_is_one_line_and_exit_2(kind, match, tmp_path, run_args, capsys):
    root = _bad_folder(tmp_path, kind)
    assert main(run_args("--dataset", f"folder:{root}")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err
    assert not (run_args.results / "runs").exists()  # nothing was stored, nothing lost


def test_image_size_resizes_mixed_sizes(tmp_path, tiny_toml, cache_dir):
    root = _bad_folder(tmp_path, "sizes")
    recs = bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        dataset=[f"folder:{root}"],
        image_size=24,
        defenses=["none"],
        attack=["fgsm"],
        eps=[0.05],
    )
    assert recs[0]["n"] == 7 and recs[0]["dataset"] == "folder:sizes"


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x_test": np.full((4, 1, 8, 8), 2.0, np.float32), "y_test": np.zeros(4, int)}, "outside \\[0,1\\]"),
        (
            {
                "x_test": np.zeros((4, 1, 8, 8), np.float32),
                "y_test": np.array([0, 1, 5, 1]),
                "classes": np.array(["a", "b"]),
            },
            "label 5 is out of range \\(0…1\\)",
        ),
        ({"x_test": np.zeros((4, 1, 8, 8), np.float32), "y_test": np.array([0, -1, 0, 1])}, "label -1 is out of range"),
        ({"x_test": np.zeros((4, 1, 8, 8), np.float32)}, "missing array.*y_test"),
        ({"x_test": np.zeros((4, 1, 8, 8), np.float32), "y_test": np.zeros(3, int)}, "4 test images but 3 labels"),
        (
            {
                "x_test": np.zeros((4, 1, 8, 8), np.float32),
                "y_test": np.zeros(4, int),
                "x_train": np.zeros((2, 1, 8, 8)),
            },
            "x_train and y_train come together",
        ),
    ],
)
def test_a_bad_npz_is_one_line_and_exit_2(arrays, match, tmp_path, run_args, capsys):
    np.savez(tmp_path / "bad.npz", **arrays)
    assert main(run_args("--dataset", f"npz:{tmp_path / 'bad.npz'}")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err


def test_a_model_that_does_not_fit_the_data_is_a_clear_error(
    user_model, tmp_path, run_args, capsys, tiny_toml, cache_dir
):
    tmpmod, weights = user_model
    # The user's 3-channel model on 1×28×28 MNIST: shape mismatch, named.
    assert main(run_args("--classifier", "tmpmod:Net", "--classifier-weights", str(weights))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tmpmod:Net" in err and "1×28×28" in err, err
    # Five classes in the data, three outputs: the class count, named.
    g = np.random.default_rng(0)
    np.savez(tmp_path / "five.npz", x_test=g.random((10, 3, 32, 32)).astype(np.float32), y_test=np.arange(10) % 5)
    with pytest.raises(BenchError, match=r"3 outputs.*5 classes"):
        bench.evaluate(
            config=tiny_toml,
            cache_dir=str(cache_dir),
            classifier=tmpmod.Net(),
            dataset=[f"npz:{tmp_path / 'five.npz'}"],
            defenses=["none"],
        )
    # No weights for an external class: refused (the harness trains its registered architectures only).
    assert main(run_args("--classifier", "tmpmod:Net", "--dataset", f"npz:{tmp_path / 'five.npz'}")) == 2
    assert "--classifier-weights" in capsys.readouterr().err


def test_no_train_split_refuses_training_with_one_line(tmp_path, run_args, capsys):
    np.savez(tmp_path / "test-only.npz", x_test=np.zeros((6, 1, 28, 28), np.float32), y_test=np.arange(6) % 2)
    assert main(run_args("--dataset", f"npz:{tmp_path / 'test-only.npz'}")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no train split" in err and "--classifier-weights" in err, err


def test_readme_own_model_example_runs(tmp_path, monkeypatch):
    """The 'Evaluate your own model' block of README.md, run as written (in a scratch folder)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- own-model:start -->\s*```python\n(.*?)```\s*<!-- own-model:end -->", text, re.S)
    assert block, "README has no own-model example block"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md:own-model", "exec"), scope)
    recs = scope["records"]
    assert {r["defense"] for r in recs} >= {"none"} and all(0 <= r["defended_adv_acc"] <= 1 for r in recs)
    assert json.loads(json.dumps(recs[0]["identity"]))  # a plain record


def test_defense_objects_run_under_their_class_path_with_their_arguments(tiny_toml, cache_dir):
    from examples.gaussian_blur import GaussianBlur

    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(12, 1, 28, 28, generator=g), torch.randint(0, 10, (12,), generator=g)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    run = lambda d: bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        classifier=net,
        data=(x, y),
        defenses=["none", d],
        attack=["fgsm"],
        eps=[0.1],
    )
    soft, hard = run(GaussianBlur(sigma=0.5)), run(GaussianBlur(sigma=2.0))
    pick = lambda recs: next(r for r in recs if r["defense"] != "none")
    assert pick(soft)["defense"] == "examples.gaussian_blur:GaussianBlur"
    assert pick(soft)["defense_params"]["sigma"] == 0.5 and pick(hard)["defense_params"]["sigma"] == 2.0
    assert pick(soft)["cell_key"] != pick(hard)["cell_key"]
    with pytest.raises(BenchError, match=r"must be defenses.base.Defense"):
        bench.evaluate(
            config=tiny_toml, cache_dir=str(cache_dir), classifier=net, data=(x, y), defenses=[torch.nn.Identity()]
        )


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 20, 24), (1, 27, 27), (3, 64, 48)])
@pytest.mark.parametrize("name", ["countergan", "countergan-conv-bce", "countergan-linear-bce", "defensegan"])
def test_generators_build_for_any_image_size(name, shape):
    """Every trainable defense maps a batch of the data's size to the same size, in [0,1]."""
    from bench.builtin.data import Split
    from bench.builtin.userdata import UserDataset
    from bench.core.registry import DEFENSES, build

    x = torch.rand(4, *shape)
    spec = UserDataset("tensors:t", None, Split(x, torch.arange(4) % 2, "t"))
    d = build(DEFENSES, name, {**DEFENSES.get(name).test_params, **({"L": 2, "R": 1} if name == "defensegan" else {})})
    torch.manual_seed(0)
    d.setup(spec)
    d.eval()
    with torch.no_grad():
        out = d(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
