"""Writers of tiny on-disk datasets in the layouts the loaders read."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def write_idx_split(raw: Path, prefix: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = np.arange(n, dtype=np.uint8) % 10
    write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
    write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return x, y


def write_cifar(root: Path, n: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "test_batch"]:
        d = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(n)],
            b"batch_label": name.encode(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    return folder


def write_dataset(name: str, root: Path) -> None:
    if name == "mnist":
        for prefix, n in (("train", 40), ("t10k", 30)):
            write_idx_split(root / "MNIST" / "raw", prefix, n)
    elif name == "fashion-mnist":
        for prefix, n in (("train", 40), ("t10k", 30)):
            write_idx_split(root / "FashionMNIST" / "raw", prefix, n)
    elif name == "cifar10":
        write_cifar(root)
    else:
        raise KeyError(f"no fixture for dataset {name!r}: add one to tests/fixtures.py")
