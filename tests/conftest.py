"""Shared fixtures: tiny configs, one session-wide cache so a classifier trains once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.record import Record
from bench.store.runs import iter_records

os.environ.setdefault("WANDB_MODE", "disabled")
# Two xdist workers share CI's two cores (make test runs `pytest -n 2`): one thread each.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

TINY_TOML = """
[run]
offline = true
batch_size = 32
[classifier]
epochs = 1
batch_size = 128
"""


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_toml(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture
def run_args(tmp_path, tiny_toml, cache_dir):
    """CLI arguments for a fast offline MNIST run into a fresh results dir."""
    results = tmp_path / "results"

    def make(*extra: str) -> list[str]:
        return [
            "--config",
            str(tiny_toml),
            "--cache-dir",
            str(cache_dir),
            "--results-dir",
            str(results),
            "--limit",
            "48",
            *extra,
        ]

    make.results = results
    return make


def read_records(results: Path) -> list[Record]:
    """A results folder's records, through the one reader."""
    return list(iter_records(results))


@pytest.fixture(scope="session")
def mnist_setup(cache_dir):
    """(spec, data, classifier) on the offline MNIST digits with a one-epoch classifier."""
    from bench.builtin.classifiers import Recipe, get_classifier
    from bench.builtin.data import MNIST

    spec = MNIST()
    data = spec.load(Path("/nonexistent-data-root"), offline=True)
    clf, _ = get_classifier(
        "mnist-cnn", spec, data, Recipe(epochs=1, batch_size=128), 0, torch.device("cpu"), cache_dir
    )
    return spec, data, clf


@pytest.fixture(autouse=True)
def _test_plugins_importable(monkeypatch):
    """tests/ on sys.path, so records may name test plugins such as trust_plugins:InPlace."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))


def cells(results: Path) -> list[dict]:
    return [r for r in read_records(results) if r.kind == "cell"]


def grid(run_args, **flags) -> list[str]:
    """run_args with these flags (underscores for dashes) set or replaced."""
    args = run_args()
    base = {"defenses": "none", "attack": "fgsm", "eps": "0.2", "limit": "16", **flags}
    for name, value in base.items():
        flag = "--" + name.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


# pandas' string columns, the ways users have them: object (pandas 2), python-backed ``str`` and
# pyarrow-backed ``str`` (pandas 3, the default where pyarrow is installed). Options a pandas
# version lacks (pandas 2.0 has no future.infer_string) skip that mode.
STRING_MODES = {"object": (False, "python"), "python-str": (True, "python"), "pyarrow-str": (True, "pyarrow")}


@pytest.fixture(params=list(STRING_MODES))
def string_mode(request):
    import warnings

    import pandas as pd

    infer, storage = STRING_MODES[request.param]
    if storage == "pyarrow":
        pytest.importorskip("pyarrow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 deprecates turning infer_string off
        try:
            before = pd.get_option("future.infer_string"), pd.get_option("mode.string_storage")
            pd.set_option("future.infer_string", infer)
            pd.set_option("mode.string_storage", storage)
        except (KeyError, pd.errors.OptionError, ValueError) as e:
            pytest.skip(f"this pandas has no {request.param} string mode: {e}")
    probe = pd.Series(["a"]).dtype
    assert (probe == np.dtype(object)) == (not infer), (request.param, probe)
    yield request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd.set_option("future.infer_string", before[0])
        pd.set_option("mode.string_storage", before[1])
