"""Your own images: ``--dataset folder:PATH``, ``--dataset npz:PATH``, and in-memory tensors
(``bench.evaluate(data=(x, y))``), as datasets like the registered ones.

* ``folder:PATH`` — one sub-folder per class, as torchvision's ``ImageFolder``: either
  ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``, or ``PATH/<class>/*`` (a test split only).
  Classes are the sub-folder names, sorted; the train and test folders must hold the same ones.
  Images (PNG, JPEG, BMP … anything Pillow reads) are read as grayscale when every image is,
  else as RGB; all must have one size, or give ``--image-size N`` (resized to N×N, bilinear).
* ``npz:PATH`` — arrays ``x_test``, ``y_test`` and optionally ``x_train``, ``y_train`` (and
  ``classes``, the class names); images N×C×H×W, N×H×W×C or N×H×W, ``uint8`` (0…255) or float in
  [0,1]; labels integers in 0…K−1. Loaded with ``allow_pickle=False``.
* tensors — ``(x, y)`` or a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, images in
  [0,1], held in memory (``bench.api``).

Every dataset is named by its kind and its folder's (file's) name, and identified by the
fingerprint of its content, as the registered ones: the same images give the same cells on any
machine, other images other cells. Without a train split, nothing can be trained on it: a
classifier must come with its weights and trainable defenses are refused, each with one line.
Normalisation statistics (for the registered architectures) are the train split's per-channel
mean and std (the test split's when there is no train split). The default eps is stated when
it is used: 0.3 for one channel, 8/255 for three, of a [0,1] range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.builtin.data import Data, DatasetPlugin, Split, fingerprint
from bench.core.errors import BenchError

SCHEMES = ("folder", "npz")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class UserDataset(DatasetPlugin):
    """A dataset given as data, not registered: its shape, classes and statistics come from it."""

    def __init__(self, name: str, train: Split | None, test: Split, classes: list[str] | None = None) -> None:
        if len(test) == 0:
            raise BenchError(f"dataset {name}: the test split is empty")
        self.name, self.train_split, self.test_split = name, train, test
        labels = torch.cat([test.y] + ([train.y] if train is not None else []))
        # Class names (a folder's sub-folders, an .npz's ``classes``) fix the count; bare labels only
        # bound it from below (the classifier's output count settles it: ``check_fits``).
        self.classes_known = bool(classes)
        self.num_classes = len(classes) if classes else int(labels.max()) + 1
        self.classes = classes or [str(i) for i in range(self.num_classes)]
        c, h, w = test.x.shape[1:]  # NCHW (the readers above make it so)
        self.shape = (int(c), int(h), int(w))
        if train is not None and tuple(train.x.shape[1:]) != self.shape:
            raise BenchError(f"dataset {name}: train images are {_shape(train.x)}, test images {_shape(test.x)}")
        ref = (train if train is not None and len(train) else test).x
        self.mean = tuple(float(v) for v in ref.mean(dim=(0, 2, 3)))
        self.std = tuple(max(float(v), 1e-3) for v in ref.std(dim=(0, 2, 3)))
        channels = self.shape[0]
        self.default_eps = 0.3 if channels == 1 else 8 / 255
        self.default_classifier = "mnist-cnn" if channels == 1 else "cifar-small"

    def load(self, data_root: Path, offline: bool) -> Data:
        train = (
            self.train_split
            if self.train_split is not None
            else Split(self.test_split.x[:0], self.test_split.y[:0], "none (no train split given)")
        )
        splits = (train, self.test_split) if len(train) else (self.test_split,)
        return Data(self.name, train, self.test_split, fingerprint(*splits))

    def describe_eps(self) -> str:
        return (
            f"{self.default_eps:.4g} (the default for {self.shape[0]}-channel images; pixel values of "
            f"{self.name} span [{float(self.test_split.x.min()):.3g}, {float(self.test_split.x.max()):.3g}] "
            "of [0,1]); give --eps to choose"
        )


def _shape(x: torch.Tensor) -> str:
    return "×".join(str(d) for d in x.shape[1:])


def checked(name: str, x: Any, y: Any, what: str, num_classes: int | None = None) -> Split:
    """Images as NCHW float32 in [0,1] and labels as int64 in 0…K−1, or one clear error."""
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not torch.is_floating_point(x):
        raise BenchError(f"dataset {name}: {what} images must be uint8 or float in [0,1], not {x.dtype}")
    x = x.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # N×H×W×C
    if x.ndim != 4:
        raise BenchError(f"dataset {name}: {what} images must be N×C×H×W, N×H×W×C or N×H×W, not {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise BenchError(
            f"dataset {name}: {what} images have values outside [0,1] (min {float(x.min()):.4g}, "
            f"max {float(x.max()):.4g}); scale them to [0,1] (normalisation belongs inside the model)"
        )
    if torch.is_floating_point(y) or y.dtype == torch.bool:
        if torch.is_floating_point(y) and torch.equal(y, y.round()):
            y = y.long()
        else:
            raise BenchError(f"dataset {name}: {what} labels must be integers, not {y.dtype}")
    y = y.long().flatten()
    if len(y) != len(x):
        raise BenchError(f"dataset {name}: {len(x)} {what} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        hi = f"0…{num_classes - 1}" if num_classes is not None else "≥ 0"
        raise BenchError(f"dataset {name}: {what} label {bad} is out of range ({hi})")
    return Split(x.contiguous(), y, what)


def from_npz(spec: str) -> UserDataset:
    path = Path(spec)
    name = f"npz:{path.name}"
    if not path.is_file():
        raise BenchError(f"dataset npz:{spec}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise BenchError(f"dataset npz:{spec}: not a readable .npz without pickles ({exc})") from None
    missing = [k for k in ("x_test", "y_test") if k not in arrays]
    if missing:
        raise BenchError(
            f"dataset npz:{spec}: missing array(s) {', '.join(missing)} "
            f"(has {', '.join(sorted(arrays)) or 'none'}; needs x_test, y_test, optional x_train, y_train)"
        )
    if ("x_train" in arrays) != ("y_train" in arrays):
        raise BenchError(f"dataset npz:{spec}: x_train and y_train come together")
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    k = len(classes) if classes else None
    test = checked(name, arrays["x_test"], arrays["y_test"], "test", k)
    test.source = f"npz:{path.resolve()}#test"
    train = None
    if "x_train" in arrays:
        train = checked(name, arrays["x_train"], arrays["y_train"], "train", k)
        train.source = f"npz:{path.resolve()}#train"
    return UserDataset(name, train, test, classes)


def _read_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            im = opened.convert(mode)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BenchError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _class_files(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BenchError(f"{folder} has no class sub-folders (one per class, as torchvision's ImageFolder)")
    out = {}
    for c in classes:
        files = sorted(f for f in c.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise BenchError(f"class folder {c} is empty")
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise BenchError(f"not an image file: {f} (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
        out[c.name] = files
    return out


def _modes(files: list[Path]) -> str:
    """'L' when every image is grayscale, else 'RGB' (read once, headers only)."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in ("L", "1", "I;16", "I", "F"):
                    return "RGB"
        except (UnidentifiedImageError, OSError) as exc:
            raise BenchError(f"cannot read image {f}: {type(exc).__name__}: {exc}") from None
    return "L"


def from_folder(spec: str, image_size: int | None = None) -> UserDataset:
    root = Path(spec)
    name = f"folder:{root.resolve().name}"
    if not root.is_dir():
        raise BenchError(f"dataset folder:{spec}: no such folder")
    split_dirs = {s: root / s for s in ("train", "test") if (root / s).is_dir()}
    if "train" in split_dirs and "test" not in split_dirs:
        raise BenchError(f"dataset folder:{spec}: has train/ but no test/")
    layout = (
        {"test": split_dirs["test"], **({"train": split_dirs["train"]} if "train" in split_dirs else {})}
        if "test" in split_dirs
        else {"test": root}
    )
    files = {s: _class_files(d) for s, d in layout.items()}
    classes = list(files["test"])
    if "train" in files and list(files["train"]) != classes:
        only = sorted(set(files["train"]) ^ set(classes))
        raise BenchError(
            f"dataset folder:{spec}: train and test hold different classes ({', '.join(only)} in one only)"
        )
    mode = _modes([f for s in files.values() for fs in s.values() for f in fs])
    splits = {}
    for s, by_class in files.items():
        xs, ys = [], []
        for label, c in enumerate(classes):
            for f in by_class[c]:
                xs.append(_read_image(f, mode, image_size))
                ys.append(label)
        sizes = sorted({a.shape[1:] for a in xs})
        if len(sizes) > 1:
            raise BenchError(
                f"dataset folder:{spec}: images of {len(sizes)} sizes ({sizes[0]}, {sizes[-1]} …); "
                "give --image-size N to resize every image to N×N"
            )
        split = checked(name, np.stack(xs), np.asarray(ys), s, len(classes))
        split.source = f"folder:{layout[s].resolve()}"
        splits[s] = split
    if "train" in splits and splits["train"].x.shape[1:] != splits["test"].x.shape[1:]:
        raise BenchError(
            f"dataset folder:{spec}: train images are {_shape(splits['train'].x)}, test images "
            f"{_shape(splits['test'].x)}; give --image-size N"
        )
    return UserDataset(name, splits.get("train"), splits["test"], classes)


def from_tensors(data: Any) -> UserDataset:
    """``(x, y)``, ``(x_train, y_train, x_test, y_test)`` or a torch Dataset of (image, label)."""
    if isinstance(data, torch.utils.data.Dataset):
        pairs = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not pairs:
            raise BenchError("dataset: the given Dataset is empty")
        data = (torch.stack([torch.as_tensor(p[0]) for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs]))
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        raise BenchError("data must be a dataset name, (x, y), (x_train, y_train, x_test, y_test) or a torch Dataset")
    probe = "tensors"
    if len(data) == 2:
        train, test = None, checked(probe, data[0], data[1], "test")
    else:
        train, test = checked(probe, data[0], data[1], "train"), checked(probe, data[2], data[3], "test")
    name = f"tensors:{fingerprint(*(s for s in (train, test) if s is not None))[:12]}"
    for s, what in ((train, "train"), (test, "test")):
        if s is not None:
            s.source = f"{name}#{what}"
    return UserDataset(name, train, test)


def resolve(spec: str, image_size: int | None = None) -> UserDataset | None:
    """The dataset ``scheme:PATH`` names, or None when ``spec`` has no data scheme."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in SCHEMES:
        return None
    if not rest:
        raise BenchError(f"dataset {spec!r}: give a path after '{scheme}:'")
    return from_folder(rest, image_size) if scheme == "folder" else from_npz(rest)
